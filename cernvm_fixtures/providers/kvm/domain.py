"""The libvirt domain XML of a machine and of the acceleration probe, and the VGA text a domain's memory holds:
pure functions of their arguments (unit-tested without libvirt); every value is escaped by ElementTree.

Layout (from the CernVM "How to run on KVM" guide): hvm x86_64 on the ``pc`` (i440fx) machine booting from the CD
drive (ISO on IDE hdc, read-only), a sparse scratch disk on virtio vda, acpi/apic/pae; the NoCloud seed on a
second CD drive, the serial console in a file, 9p shares for shared folders. ``machine = "q35"`` puts the CD drives
on q35's SATA (AHCI) controller, for hosts whose QEMU has no IDE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

from .options import KvmOptions

NS = "https://cernvm-fixtures.invalid/ns/libvirt/1"
"""XML namespace of the metadata element that lets sweep recognise our domains."""
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
USER_NETDEV = "n0"
"""The id of the user-mode network's QEMU netdev (QEMU's ``set_link`` names it to pull the cable)."""
ElementTree.register_namespace("qemu", QEMU_NS)
ElementTree.register_namespace("cvmfx", NS)


def _element(parent: ElementTree.Element, tag: str, text: str | None = None, **attributes: str) -> ElementTree.Element:
    """A child element; ElementTree escapes every text and attribute value."""
    child = ElementTree.SubElement(parent, tag, attributes)
    if text is not None:
        child.text = text
    return child


def _seclabel(parent: ElementTree.Element, uri: str) -> None:
    """As root on the system URI, run QEMU as root so it can use the run's files where they are.

    QEMU stays root there because the run's files live in root's state directory (~/.local/state under
    /root, mode 0700), which libvirt's unprivileged ``libvirt-qemu`` user cannot reach without relabelling
    (``dynamic_ownership``) the user's own files; 9p shares use ``mapped`` so the guest cannot create
    setuid files on the host whoever QEMU runs as.
    """
    if os.geteuid() == 0 and uri.startswith("qemu:///system"):
        label = _element(parent, "seclabel", type="static", model="dac", relabel="no")
        _element(label, "label", "+0:+0")


def _serialize(domain: ElementTree.Element) -> str:
    ElementTree.indent(domain)
    return ElementTree.tostring(domain, encoding="unicode") + "\n"


def probe_xml(*, name: str, kernel: Path, console: Path, uri: str) -> str:
    """The acceleration probe: a 256 MiB KVM guest booting ``kernel`` with its console in a file."""
    domain = ElementTree.Element("domain", type="kvm")
    _element(domain, "name", name)
    _element(domain, "memory", "256", unit="MiB")
    _element(domain, "vcpu", "1")
    os_ = _element(domain, "os")
    _element(os_, "type", "hvm", arch="x86_64")
    _element(os_, "kernel", str(kernel))
    _element(os_, "cmdline", "console=ttyS0 panic=-1")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _element(domain, event, "destroy")
    devices = _element(domain, "devices")
    serial = _element(devices, "serial", type="file")
    _element(serial, "source", path=str(console))
    _seclabel(domain, uri)
    return _serialize(domain)


class MachineLayout(NamedTuple):
    """Where a machine type puts the CD drives and the user-mode NIC."""

    cdrom_bus: str
    iso_target: str
    seed_target: str
    nic_bus: str
    """QEMU's name of the root bus (libvirt's PCI controller 0; on q35 ``pci.1`` and up are pcie-root-ports)."""
    nic_addr: str
    """A root-bus slot libvirt does not hand out (it knows nothing of a device on the QEMU command line). pc: one
    slot per device from 0x1 up; q35 (virsh dumpxml, libvirt 9.0): video 0x1, pcie-root-ports eight to a slot from
    0x1/0x2 up (one per 9p share or virtio disk), SATA 0x1f.2."""


MACHINE_LAYOUTS = {
    # slot 0x1e: libvirt hands out slots upwards from 2 (video, 9p shares, ...); 0x9 collided with the sixth share
    "pc": MachineLayout("ide", "hdc", "hdd", "pci.0", "0x1e"),
    "q35": MachineLayout("sata", "sda", "sdb", "pcie.0", "0x9"),
}


def domain_xml(
    *,
    name: str,
    domain_type: str,
    options: KvmOptions,
    uri: str,
    iso: Path | None,
    kernel: tuple[Path, Path, str] | None,
    disk: Path,
    seed: Path,
    console: Path,
    shared: dict[str, Path],
    ssh_port: int | None,
    metadata: dict[str, str],
    restrict: bool = True,
    stratum1: int | None = None,
) -> str:
    """The libvirt domain XML for one machine (pure function, unit-tested); every value is escaped."""
    domain = ElementTree.Element("domain", type=domain_type)
    _element(domain, "name", name)
    _element(_element(domain, "metadata"), f"{{{NS}}}resource", **metadata)
    _element(domain, "memory", str(options.memory), unit="MiB")
    _element(domain, "vcpu", str(options.vcpus))
    layout = MACHINE_LAYOUTS[options.machine]
    os_ = _element(domain, "os")
    _element(os_, "type", "hvm", arch="x86_64", machine=options.machine)
    if kernel is not None:
        vmlinuz, initrd, cmdline = kernel
        _element(os_, "kernel", str(vmlinuz))
        _element(os_, "initrd", str(initrd))
        _element(os_, "cmdline", cmdline)
    else:
        _element(os_, "boot", dev="cdrom")
    features = _element(domain, "features")
    for feature in ("acpi", "apic", "pae"):
        _element(features, feature)
    _element(domain, "on_poweroff", "destroy")
    _element(domain, "on_reboot", "restart")
    _element(domain, "on_crash", "destroy")
    devices = _element(domain, "devices")

    def disk_device(device: str, path: Path, target: str, bus: str, readonly: bool) -> None:
        element = _element(devices, "disk", type="file", device=device)
        _element(element, "driver", name="qemu", type="raw")
        _element(element, "source", file=str(path))
        _element(element, "target", dev=target, bus=bus)
        if readonly:
            _element(element, "readonly")

    if iso is not None:
        disk_device("cdrom", iso, layout.iso_target, layout.cdrom_bus, True)
    disk_device("disk", disk, "vda", "virtio", False)
    disk_device("cdrom", seed, layout.seed_target, layout.cdrom_bus, True)
    for tag, path in shared.items():
        # mapped (QEMU's security_model=mapped-xattr): guest owners and modes live in xattrs, so root in
        # the guest cannot create setuid-root files on the host (passthrough would let it).
        filesystem = _element(devices, "filesystem", type="mount", accessmode="mapped")
        _element(filesystem, "source", dir=str(path))
        _element(filesystem, "target", dir=tag)
    if options.network == "nat":
        interface = _element(devices, "interface", type="network")
        _element(interface, "source", network=options.nat_network)
        _element(interface, "model", type=options.nic_model)
    serial = _element(devices, "serial", type="file")
    _element(serial, "source", path=str(console))
    _element(serial, "target", port="0")
    # A display the harness reads without a person (virDomainScreenshot): released CernVM images show boot
    # messages and errors only on tty0. No VNC/SPICE listener comes with it (that stays ``graphics``).
    _element(_element(devices, "video"), "model", type="vga")
    if options.graphics:
        _element(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    _element(devices, "memballoon", model="none")
    _seclabel(domain, uri)
    if options.network == "user":
        device = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}[options.nic_model]
        netdev = f"user,id={USER_NETDEV},restrict={'on' if restrict else 'off'},hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
        if stratum1 is not None:
            netdev += "," + stratum1_forward(stratum1)
        for where, port in options.guest_forwards.items():
            netdev += f",guestfwd=tcp:{where}-tcp:127.0.0.1:{port},,reconnect=1"  # as stratum1_forward
        args = [
            "-netdev",
            netdev,
            "-device",
            f"{device},netdev={USER_NETDEV},bus={layout.nic_bus},addr={layout.nic_addr}",
        ]
        commandline = _element(domain, f"{{{QEMU_NS}}}commandline")
        for arg in args:
            _element(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    return _serialize(domain)


def stratum1_forward(port: int) -> str:
    """The ``guestfwd`` that connects the appliance's CernVM-FS server address (its ``cvmfs_server=``) to the
    server on 127.0.0.1:``port``: a character device reconnecting after each request (libvirt's QEMU sandbox
    forbids the per-connection ``cmd:`` form); works with ``restrict=on``, nothing else is reachable."""
    from ...appliance import STRATUM1

    return f"guestfwd=tcp:{STRATUM1}:80-tcp:127.0.0.1:{port},,reconnect=1"  # QEMU's option syntax doubles commas


VGA_TEXT_MEMORY = 0xB8000
"""Physical address of the VGA text buffer (character and attribute byte per cell, 80 columns)."""
VGA_TEXT_SIZE = 0x8000


def vga_text(memory: bytes, columns: int = 80) -> str | None:
    """The non-empty rows of a VGA text buffer (every other byte is a character, code page 437); None when it
    does not look like text (a guest in graphics mode leaves pixels or zeros there)."""
    characters = memory[::2]
    rows = [characters[i : i + columns] for i in range(0, len(characters), columns)]
    kept = [row.decode("cp437").rstrip(" \x00") for row in rows if row.strip(b" \x00")]
    text = "".join(kept)
    if not text or sum(c.isprintable() for c in text) < 0.9 * len(text):
        return None
    return "\n".join(kept)
