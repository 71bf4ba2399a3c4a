"""The appliance on the q35 machine type (the RHEL 9 family's QEMU default, which has no IDE): CD drives on SATA,
the user-mode NIC on pcie.0, 9p shares as on pc."""

from __future__ import annotations

import subprocess
import time
from xml.etree import ElementTree

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.instance import launch
from cernvm_fixtures.run import Run

from ..helpers import domains_under, ledger_entries


def test_appliance_boots_on_q35_with_the_config_drive_on_sata(tmp_path):
    state = tmp_path / "state"
    target = config.parse(
        {
            "targets": {
                "kvm-q35": {
                    "provider": "kvm",
                    "image": "appliance",
                    "machine": "q35",
                    "domain_type": "qemu",
                    "shared_folders": {"data": ""},
                },
            }
        },
        "test",
    ).targets["kvm-q35"]
    run = Run(state=state)
    started = time.monotonic()
    instance = launch(target, run)
    try:
        steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in instance.timings.items())
        print(f"q35 boot to ready: {time.monotonic() - started:.1f} s ({steps})")  # shown with -rP
        assert instance.ready_after is not None and instance.transport.verified is True

        domain = ElementTree.fromstring(
            subprocess.run(
                ["virsh", "-c", "qemu:///system", "dumpxml", instance.name], capture_output=True, text=True, check=True
            ).stdout
        )
        assert domain.find("os/type").get("machine").startswith("pc-q35-")
        assert [c.get("type") for c in domain.iter("controller") if c.get("type") in ("ide", "sata")] == ["sata"]
        cdroms = [d.find("target").attrib for d in domain.iter("disk") if d.get("device") == "cdrom"]
        assert cdroms == [{"dev": "sda", "bus": "sata"}, {"dev": "sdb", "bus": "sata"}]

        # the context came from the config drive, found on a CD drive behind q35's AHCI controller (ICH9, 0x1f.2)
        assert instance.run("cat /mnt/.rw/context/source").stdout.strip() == "ConfigDrive"
        found = instance.run(
            "sed -n 's/.*ConfigDrive on \\([^:]*\\):.*/\\1/p' /mnt/.rw/ulogs/context.log"
        ).stdout.split()
        assert found and found[-1].startswith("/dev/sr"), found
        ahci = instance.run("ls /sys/bus/pci/drivers/ahci").stdout.split()
        assert "0000:00:1f.2" in ahci, ahci
        for drive in ("sr0", "sr1"):
            path = instance.run(f"readlink -f /sys/block/{drive}").stdout.strip()
            assert "/0000:00:1f.2/ata" in path, f"{drive} is not on the AHCI controller: {path}"
        # a 9p share still works (libvirt puts it behind a pcie-root-port on q35)
        (instance.shared_folders["data"] / "from-host").write_text("host\n")
        assert instance.run("cat /mnt/shared/data/from-host").stdout == "host\n"
        instance.run("echo guest > /mnt/shared/data/from-guest")
        assert (instance.shared_folders["data"] / "from-guest").read_text() == "guest\n"
        piix = instance.run("ls /sys/bus/pci/drivers/ata_piix 2>/dev/null | grep -c '^0000:'").stdout.strip()
        assert piix == "0", "no device on q35 is driven by the IDE driver"
    finally:
        instance.destroy()
    assert domains_under(state) == []
    assert ledger_entries(state) == []


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_many_shared_folders_leave_the_nic_its_slot(tmp_path, machine):
    """libvirt gives the video device and every 9p share a PCI slot of its own, upwards from slot 2: the NIC the
    QEMU command line places must not be where the sixth share lands (it was, at 0x9 on pc)."""
    from cernvm_fixtures import appliance
    from cernvm_fixtures.providers.kvm import KvmOptions, connect, default_uri, domain_xml, free_port

    shares = {f"s{i}": tmp_path / f"s{i}" for i in range(10)}
    for path in shares.values():
        path.mkdir()
    for name in ("scratch.img", "seed.iso", "console.log"):
        (tmp_path / name).write_bytes(b"")
    xml = domain_xml(
        name=f"cvmfx-slots-{machine}-{tmp_path.name[-8:]}",
        domain_type="qemu",
        options=KvmOptions(machine=machine),
        uri=default_uri(),
        iso=appliance.build().iso,
        kernel=None,
        disk=tmp_path / "scratch.img",
        seed=tmp_path / "seed.iso",
        console=tmp_path / "console.log",
        shared=shares,
        ssh_port=free_port(),
        metadata={},
    )
    import libvirt

    dom = connect(default_uri()).createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    try:
        assert dom.isActive()
    finally:
        dom.destroy()
