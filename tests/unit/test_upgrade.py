"""The upgrade in the provider contract: KVM changes the medium of the CD drive the domain boots from (live, its
disks kept); other providers, and KVM booting its kernel directly, say why they cannot."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import libvirt
import pytest

from cernvm_fixtures import providers
from cernvm_fixtures.errors import ProviderError, Unsupported
from cernvm_fixtures.providers.kvm import KvmMachine, KvmOptions, KvmProvider, domain_xml

OLD, NEW = Path("/img/ucernvm-previous.iso"), Path("/img/ucernvm-ok.iso")


class Domain:
    def __init__(self, machine: str) -> None:
        self.xml = domain_xml(
            name="cvmfx-test",
            domain_type="qemu",
            options=KvmOptions(machine=machine),
            uri="qemu:///session",
            iso=OLD,
            kernel=None,
            disk=Path("/run/vm/scratch.img"),
            seed=Path("/run/vm/seed.iso"),
            console=Path("/run/vm/console.log"),
            shared={},
            ssh_port=40022,
            metadata={"cvmfx-name": "cvmfx-test"},
        )
        self.updates: list[tuple[str, int]] = []

    def XMLDesc(self, flags: int) -> str:  # noqa: N802 - libvirt's name
        return self.xml

    def updateDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.updates.append((xml, flags))


def machine(domain: Domain | None, **options: str) -> KvmMachine:
    found = KvmMachine.__new__(KvmMachine)
    found.name, found.domain, found.options = "cvmfx-test", domain, KvmOptions(**options)
    found.provider = SimpleNamespace(run=None)  # type: ignore[assignment]
    return found


@pytest.mark.parametrize("machine_type", ["pc", "q35"])
def test_kvm_changes_the_boot_cd_and_keeps_the_disks(monkeypatch, machine_type):
    monkeypatch.setattr(KvmProvider, "__init__", lambda self, target, run: None)
    monkeypatch.setattr(KvmProvider, "_boot_source", lambda self: (NEW, None, None))
    domain = Domain(machine_type)
    machine(domain, machine=machine_type).change_image(SimpleNamespace(name="kvm", image="appliance"))
    [(xml, flags)] = domain.updates
    assert flags == libvirt.VIR_DOMAIN_AFFECT_LIVE
    disk = ElementTree.fromstring(xml)
    assert (disk.get("device"), disk.find("source").get("file")) == ("cdrom", str(NEW))
    boot_cd = [d for d in ElementTree.fromstring(domain.xml).findall("devices/disk") if d.get("device") == "cdrom"][0]
    assert disk.find("target").get("dev") == boot_cd.find("target").get("dev"), "the drive booted from, not the seed"


def test_kvm_without_a_boot_cd_or_domain_says_why(monkeypatch):
    with pytest.raises(Unsupported, match="boots its kernel directly"):
        machine(Domain("pc"), boot="kernel").change_image(SimpleNamespace(name="kvm", image="appliance"))
    with pytest.raises(ProviderError, match="not started"):
        machine(None).change_image(SimpleNamespace(name="kvm", image="appliance"))


def test_every_other_provider_says_why_it_cannot_upgrade():
    assert providers.get("kvm").no_upgrade is None
    for name in ("docker", "ec2", "gce", "azure", "openstack", "virtualbox"):
        assert providers.get(name).no_upgrade, name


def test_a_machine_that_cannot_upgrade_refuses_with_the_reason():
    from cernvm_fixtures.testing.local import LocalMachine

    m = LocalMachine.__new__(LocalMachine)
    m.name = "local-1"
    m.provider = type("P", (), {})()  # only its type's attributes are read
    type(m.provider).name = "local"
    type(m.provider).no_upgrade = "a process tree has no boot drive"
    with pytest.raises(Unsupported, match="local: a process tree has no boot drive"):
        m.change_image(SimpleNamespace(name="t", image="x"))
