"""This host's KVM prerequisites as CernVM documents them (CPU virtualization, the KVM module, /dev/kvm), for
``cernvm-fixtures doctor``; read from /proc, /sys and /dev alone (libvirt's part is the provider's)."""

from __future__ import annotations

from pathlib import Path

from ...doctor import Check, device_access


def cpu_checks(tcg: str) -> list[Check]:
    """The CPU offers virtualization (vmx/svm) and its vendor's KVM module is loaded."""
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpu = ""
    flags = {f for line in cpu.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    offered = sorted(flags & {"vmx", "svm"})
    modules = sorted(p.name for p in Path("/sys/module").glob("kvm_*"))
    vendor = [m for m in modules if m in ("kvm_intel", "kvm_amd")]
    return [
        Check.ok("CPU virtualization", f"flag {offered[0]}")
        if offered
        else Check.warning(
            "CPU virtualization",
            f"no vmx/svm CPU flag: {tcg}",
            "enable VT-x/AMD-V in the firmware, or nested virtualization on the hypervisor",
        ),
        Check.ok("KVM module", vendor[0])
        if vendor
        else Check.warning(
            "KVM module",
            f"neither kvm_intel nor kvm_amd is loaded (have: {', '.join(modules) or '-'})",
            "modprobe kvm_intel (Intel CPU) or modprobe kvm_amd (AMD CPU)",
        ),
    ]


def device_check(tcg: str) -> Check:
    """/dev/kvm as CernVM documents it: root:kvm 0660 or more open (else libvirt re-probes QEMU endlessly)."""
    device = Path("/dev/kvm")
    if not device.exists():
        return Check.warning("/dev/kvm", f"missing: {tcg}", "modprobe kvm_intel or kvm_amd")
    access, usable = device_access(device, "kvm")
    if usable:
        return Check.ok("/dev/kvm", f"{access} (documented: root:kvm 0660 or more open)")
    return Check.warning(
        "/dev/kvm",
        f"{access}, documented root:kvm 0660: libvirt then re-probes QEMU on every lookup and each domain start "
        "takes about a minute",
        'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm, and KERNEL=="kvm", GROUP="kvm", MODE="0660" in '
        "/etc/udev/rules.d/65-kvm.rules (./dev setup does both)",
    )
