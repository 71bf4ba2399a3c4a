"""The ``kvm`` target keys, validated at load (nothing here talks to libvirt)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    slowdown: float = Field(4.0, ge=1.0)
    """Readiness deadlines are multiplied by this under software emulation (domain type qemu)."""
    user: str = "root"
