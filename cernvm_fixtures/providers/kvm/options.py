"""The ``kvm`` target keys, validated at load (nothing here talks to libvirt)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from ..base import ProviderOptions


class KvmOptions(ProviderOptions):
    """Target keys of the ``kvm`` provider."""

    uri: str | None = None
    """libvirt URI; default qemu:///system for root, qemu:///session for other users."""
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    """``kvm`` (hardware), ``qemu`` (TCG emulation), or ``auto``: kvm only if a probe guest boots under it."""
    memory: int = Field(2048, ge=256, description="MiB")
    vcpus: int = Field(1, ge=1)
    disk_size: int = Field(20, ge=1, description="GiB, sparse scratch disk")
    network: Literal["user", "nat"] = "user"
    restrict: bool | None = None
    """User-mode networking only: ``true`` isolates the guest (it reaches nothing but the forwards the harness
    makes), ``false`` lets it reach out through the host; default: isolated, unless the profile says the image
    loads its OS over the network at boot (``boot.network``) and it is not the test appliance (whose CernVM-FS
    server is forwarded from this host)."""
    nat_network: str = "default"
    nic_model: Literal["virtio", "e1000", "rtl8139"] = "virtio"
    machine: Literal["pc", "q35"] = "pc"
    """``pc``: i440fx, the layout of CernVM's KVM guide (ISO on IDE hdc); ``q35``: for hosts whose QEMU has no IDE
    (the RHEL 9 family): CD drives on SATA (sda, sdb), the user-mode NIC on pcie.0."""
    boot: Literal["cdrom", "kernel"] = "cdrom"
    """``kernel``: direct kernel boot (appliance only), faster than the documented CD boot."""
    kernel_args: str = ""
    """Direct kernel boot only: words appended to the appliance's kernel line, e.g. ``console=ttyS0`` (what
    CernVM's hvm, tar.gz and vhd images have, and its ISO has not)."""
    graphics: bool = False
    """A VNC display on 127.0.0.1 (it has no password; the harness uses the serial console), off unless asked."""
    context_medium: Literal["config-drive", "azure"] = "config-drive"
    """The disc the context reaches the guest on: ``config-drive`` (config-drive layout plus the NoCloud files, what
    µCernVM and cloud-init read on KVM), or ``azure``: Azure's provisioning disc (UDF: ovf-env.xml, CustomData.bin and
    the tag file µCernVM looks for), for a guest standing in for an Azure VM."""
    guest_forwards: dict[str, int] = {}
    """User-mode networking only: guest ``address:port`` -> port on 127.0.0.1 that a guest's TCP connection to it
    reaches (QEMU's ``guestfwd``, one connection at a time), e.g. a cloud's host service for a stand-in. QEMU forwards
    only addresses inside its user network, 10.0.2.0/24, and not its own (.2 gateway, .3 DNS), and names each
    forward's device by its guest port (``guestfwd.tcp.PORT``): one forward per port, and not the test appliance's
    port 80 (its CernVM-FS server)."""
    slowdown: float = Field(4.0, ge=1.0)
    """Readiness deadlines are multiplied by this under software emulation (domain type qemu)."""
    user: str = "root"

    @field_validator("guest_forwards")
    @classmethod
    def _forwards(cls, value: dict[str, int]) -> dict[str, int]:
        for where, port in value.items():
            address, _, guest_port = where.rpartition(":")
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError:
                ip = None
            if ip is None or not guest_port.isdigit() or not 0 < int(guest_port) < 65536:
                raise ValueError(f"{where!r} is not a guest IPv4 address:port (e.g. '10.0.2.16:80')")
            if ip not in USER_NETWORK or ip in QEMU_OWN:
                raise ValueError(
                    f"{where!r}: QEMU forwards only addresses of its user network {USER_NETWORK} other than "
                    f"{', '.join(map(str, QEMU_OWN))} (its gateway and DNS)"
                )
            if not 0 < port < 65536:
                raise ValueError(f"{where!r}: port {port} on 127.0.0.1 is not a TCP port (1-65535)")
        ports = [where.rpartition(":")[2] for where in value]
        if len(set(ports)) < len(ports):
            raise ValueError(f"{sorted(value)}: QEMU names a forward's device by its guest port; give each its own")
        return value


USER_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")
"""QEMU's default user network (libslirp refuses a guestfwd outside it: "Conflicting/invalid host:port")."""
QEMU_OWN = (ipaddress.IPv4Address("10.0.2.2"), ipaddress.IPv4Address("10.0.2.3"))
