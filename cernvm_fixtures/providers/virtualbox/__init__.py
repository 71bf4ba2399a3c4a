"""VirtualBox through VBoxManage: the documented CernVM machine, reached over a 127.0.0.1 port forward.

The machine is the one CernVM's "How to run on VirtualBox" guide builds by hand
(Linux 64-bit, 2048 MB, a dynamically allocated VDI, bidirectional clipboard and
drag and drop, VBoxSVGA, the ISO in the CD drive, shared folders without
auto-mount) in the storage layout CernVM Launch uses (boot ISO on IDE 0:0,
scratch disk on SATA port 0, context ISO on SATA port 1), with NIC 1 NAT and SSH
forwarded from 127.0.0.1 only, as CernVM Launch does, and the serial port
written to a file for the console (CernVM Launch configures none; the harness
reads host keys and boot messages there).

Modules, leaf first: :mod:`.options` (the target keys, CernVM Launch files),
:mod:`.vboxmanage` (running VBoxManage, one argv per step, for VirtualBox 6.1 and
7.x); this package holds the provider and the machine.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ... import images
from ...context import Context
from ...context.nocloud import write_seed
from ...doctor import Check
from ...errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from ...ledger import Resource
from ...screen import write_png
from ...transport.base import Login
from ...transport.ssh import SSHTransport, ssh_login
from ..base import Machine, Provider, console_file_text
from ..kit import FIELD_PREFIX, decode_fields, encode_fields, owned_directory, remove_machine_directory, wait_until
from ..kvm import free_port
from .options import LaunchConfig, VirtualBoxOptions
from .vboxmanage import (
    DEBIAN_VBOXMANAGE,
    IDE,
    SATA,
    SPELLING,
    VBOX,
    VBoxError,
    VBoxManage,
    acpipowerbutton,
    createmedium,
    createvm,
    family,
    modifyvm,
    parse_machinereadable,
    screenshotpng,
    setextradata,
    setlinkstate,
    sharedfolder,
    startvm,
    storageattach,
    storagectl,
    vboxmanage,
    version,
)

__all__ = [
    "DEBIAN_VBOXMANAGE",
    "EXTRA",
    "IDE",
    "SATA",
    "SPELLING",
    "LaunchConfig",
    "VBoxError",
    "VBoxManage",
    "VirtualBoxMachine",
    "VirtualBoxOptions",
    "VirtualBoxProvider",
    "createmedium",
    "createvm",
    "family",
    "modifyvm",
    "parse_machinereadable",
    "host_checks",
    "setextradata",
    "sharedfolder",
    "startvm",
    "storageattach",
    "storagectl",
    "vboxmanage",
    "version",
]

log = logging.getLogger(__name__)

EXTRA = FIELD_PREFIX
"""Prefix of the extradata keys carrying a machine's ledger entry (so sweep finds it without the ledger): the keys
are the kit's fields (:func:`~.kit.encode_fields`) as they are."""
ISO = images.Accepts(
    ".iso",
    "ISO images (ucernvm-prod.<V>-<R>.cernvm.x86_64.iso) or 'appliance[:variant]'",
    appliance=lambda built: built.iso,
)
CREATION_ORDER = ("directory", "disk", "vm")
"""The scratch disk exists before the VM it is attached to; teardown goes the other way."""
UNLOCKED = ("poweroff", "aborted", "saved", "aborted-saved", None)
"""VM states in which a VM whose session is unlocked may be unregistered."""


# --- the provider ---------------------------------------------------------------------------------


class VirtualBoxProvider(Provider[VirtualBoxOptions, "VirtualBoxMachine"]):
    """Boots images in VirtualBox VMs on this host through VBoxManage."""

    name = "virtualbox"
    no_power_button = None
    no_cable = None
    Options = VirtualBoxOptions
    shares_folders = True
    parallel_boots = max(1, os.cpu_count() or 1)
    creation_order = CREATION_ORDER

    @property
    def vbox(self) -> VBoxManage:
        return vboxmanage(self.options.vboxmanage)

    def machine(self, name: str) -> VirtualBoxMachine:
        return VirtualBoxMachine(self, name)

    def launch(self, machine: VirtualBoxMachine, context: Context) -> None:
        iso = images.resolve(self.target, ISO).file
        assert iso is not None, "ISO names no platform image"
        vbox = self.vbox
        name, directory = machine.name, machine.directory
        command = vbox.command
        self.record_directory(machine, directory)
        seed = write_seed(context, directory / "context.iso")
        machine.make_shared_folders(directory)
        disk = directory / "scratch.vdi"
        self.record(machine, "disk", name, path=str(disk), vboxmanage=command)
        vbox(*createmedium(disk, self.options.disk_size), timeout=300)
        resource = self.record(machine, "vm", name, directory=str(directory), vboxmanage=command)
        if registered(vbox, name):
            raise ProviderError(f"{name}: a VM of that name is already registered in VirtualBox; left alone")
        vbox(*createvm(name, self.options.os_type, directory))
        for key, value in encode_fields(resource).items():
            vbox(*setextradata(name, key, value))
        machine.ssh_port = free_port()
        vbox(*modifyvm(name, self.options, ssh_port=machine.ssh_port, console=machine.console_file, spell=vbox.spell))
        vbox(*storagectl(name, IDE))
        vbox(*storagectl(name, SATA))
        vbox(*storageattach(name, IDE, 0, 0, "dvddrive", iso))
        vbox(*storageattach(name, SATA, 0, 0, "hdd", disk))
        vbox(*storageattach(name, SATA, 1, 0, "dvddrive", seed))
        for folder, path in machine.shared_folders.items():
            vbox(*sharedfolder(name, folder, path))
        vbox(*startvm(name, self.options.headless), timeout=300)

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        if resource.kind == "directory":
            remove_machine_directory(resource)
            return
        vbox = vboxmanage(resource.data.get("vboxmanage"))
        if resource.kind == "disk":
            VBOX.call(resource.name, vbox, "closemedium", "disk", resource.data["path"], "--delete", missing_ok=True)
            Path(resource.data["path"]).unlink(missing_ok=True)
            return
        if resource.kind != "vm":
            raise ProviderError(f"virtualbox cannot destroy unknown resource kind {resource.kind!r}")
        found = own_vm(vbox, resource)
        if found is None:
            return
        uuid, info = found
        if info.get("VMState") in ("running", "paused", "starting", "stuck"):
            try:
                vbox("controlvm", uuid, "poweroff")
            except VBoxError as e:
                if not e.not_found:
                    log.debug("%s: poweroff: %s", resource.name, e)
        wait_unlocked(vbox, uuid, time.monotonic() + 60)
        media = [v for k, v in info.items() if re.match(r"^(IDE|SATA)-\d+-\d+$", k) and v.endswith(".iso")]
        VBOX.call(resource.name, vbox, "unregistervm", uuid, "--delete", missing_ok=True)
        for medium in media:
            try:
                vbox("closemedium", "dvd", medium)
            except VBoxError:
                pass

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """The screen of the recorded VM (only the one whose settings live in the machine's directory)."""
        if resource.kind != "vm":
            raise ScreenUnavailable(f"{resource.name}: a virtualbox {resource.kind} has no screen (its VM has)")
        vbox = vboxmanage(resource.data.get("vboxmanage"))
        found = own_vm(vbox, resource)
        if found is None:
            raise ScreenUnavailable(f"{resource.name}: no VM of this run by that name is registered in VirtualBox")
        return screenshot(vbox, found[0], path, resource.name)

    @classmethod
    def checks(cls, target: Any) -> list[Check]:
        """VBoxManage, the kernel driver, VT-x/AMD-V (:func:`host_checks`)."""
        return host_checks(target.options.vboxmanage or None)

    @classmethod
    def leftovers(cls, target: Any, recorded: set[str]) -> list[Resource]:
        """VMs named ``cvmfx-*`` whose extradata holds our ledger entry but no ledger entry covers, with the machine
        directory their settings file lies in (only a run's own ``runs/<run>/machines/<name>``)."""
        options: VirtualBoxOptions = target.options
        try:
            vbox = vboxmanage(options.vboxmanage)
        except ConfigError:
            return []
        found = []
        for line in vbox("list", "vms").splitlines():
            match = re.match(r'^"(cvmfx-[^"]+)" \{', line)
            if not match or match[1] in recorded:
                continue
            name = match[1]
            resource = decode_fields(vbox.extradata(name))
            if resource is None or (resource.provider, resource.kind, resource.name) != ("virtualbox", "vm", name):
                continue
            info = VBOX.call(name, vbox.info, name, missing_ok=True) or {}
            directory = Path(info.get("CfgFile", "/")).parent.parent
            if not owned_directory(directory, resource.run, name):
                continue  # createvm --basefolder <machine directory> puts it at <directory>/<name>/<name>.vbox
            found.append(replace(resource, data={"directory": str(directory), "vboxmanage": vbox.command}))
            found.append(replace(resource, kind="directory", data={"path": str(directory)}))
        return found


def registered(vbox: VBoxManage, name: str) -> list[str]:
    """The UUIDs of the registered VMs named ``name`` (VirtualBox allows several, in different folders)."""
    return [m[2] for m in re.finditer(r'^"(.*)" \{([0-9a-f-]+)\}$', vbox("list", "vms"), re.M) if m[1] == name]


def own_vm(vbox: VBoxManage, resource: Resource) -> tuple[str, dict[str, str]] | None:
    """(UUID, showvminfo) of the VM this ledger entry made: the one of its name whose settings file lies in the
    machine's directory; None if there is none (another VM of that name is someone else's and left alone)."""
    directory = resource.data.get("directory", "").rstrip("/")
    for uuid in registered(vbox, resource.name):
        info = VBOX.call(resource.name, vbox.info, uuid, missing_ok=True)
        if info is None:
            continue
        if directory and info.get("CfgFile", "").startswith(directory + "/"):
            return uuid, info
        log.warning(
            "%s: the VM %s of that name keeps its settings in %s, not under this machine's directory %s: "
            "another one's; left alone",
            resource.name,
            uuid,
            info.get("CfgFile") or "(unknown)",
            directory or "(not recorded)",
        )
    return None


def screenshot(vbox: VBoxManage, vm: str, path: Path, what: str) -> Path:
    """``controlvm screenshotpng`` into a file beside ``path``, then moved there; VBoxManage's error as the reason."""
    partial = path.with_name(f".{path.name}.vbox.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        vbox(*screenshotpng(vm, partial), timeout=60)
        return write_png(partial.read_bytes(), path, what)
    except (ProviderError, OSError) as e:
        raise ScreenUnavailable(f"{what}: VirtualBox took no screenshot: {e}") from None
    finally:
        partial.unlink(missing_ok=True)


def wait_unlocked(vbox: VBoxManage, name: str, deadline: float) -> None:
    """After a poweroff the VM's session stays locked for a moment; unregistering before that fails."""
    seen: dict[str, str] = {}

    def unlocked() -> bool | None:
        nonlocal seen
        info = VBOX.call(name, vbox.info, name, missing_ok=True)
        if info is None:
            return True
        seen = info
        session = info.get("SessionState", info.get("SessionName", ""))
        return True if session in ("Unlocked", "") and info.get("VMState") in UNLOCKED else None

    wait_until(
        f"{name}: session unlocked",
        unlocked,
        deadline,
        0.5,
        status=lambda: f"session still locked ({seen.get('SessionState')}, {seen.get('VMState')})",
    )


class VirtualBoxMachine(Machine):
    """A VirtualBox VM plus its files (scratch VDI, context ISO, serial console log, shared folders)."""

    provider: VirtualBoxProvider

    def __init__(self, provider: VirtualBoxProvider, name: str) -> None:
        super().__init__(provider, name)
        self.options: VirtualBoxOptions = provider.options
        self.ssh_port: int | None = None
        self.directory = provider.run.machine_dir(name)
        self.console_file = self.directory / "console.log"
        self.traits.update(kind="vm", nic_model="virtio" if self.options.nic_type == "virtio" else "e1000")
        self.slowdown = self.options.slowdown

    def wait_running(self, deadline: float) -> None:
        """Poll the VM's state until VirtualBox says ``running``; a VM that stopped ends the wait (PermanentError)."""
        seen = "unknown"

        def running() -> bool | None:
            nonlocal seen
            seen = self.provider.vbox.info(self.name).get("VMState") or "unknown"
            if seen in ("aborted", "poweroff", "gurumeditation"):
                log_file = self.directory / self.name / "Logs" / "VBox.log"
                raise PermanentError(f"VM state {seen!r}; see {log_file}")
            return True if seen == "running" else None

        wait_until("VM running", running, deadline, 0.5, status=lambda: f"VM still in state {seen!r}")

    def transport(self) -> SSHTransport:
        host, port = self.provider.run.endpoint(self, "127.0.0.1", self.ssh_port or 0)
        return SSHTransport(host, port, self.options.user, self.key_file, self.host_keys)

    def console_log(self) -> str:
        return console_file_text(self.console_file)

    def screenshot(self, path: Path) -> Path:
        return screenshot(self.provider.vbox, self.name, path, self.name)

    def press_power_button(self) -> None:
        """VirtualBox's ACPI power button (``controlvm <vm> acpipowerbutton``): the guest decides what happens."""
        self.provider.vbox(*acpipowerbutton(self.name))

    def set_link(self, up: bool) -> None:
        """The cable of the NAT adapter (adapter 1) plugged or pulled (``controlvm <vm> setlinkstate1 on|off``)."""
        self.provider.vbox(*setlinkstate(self.name, 1, up))

    def is_running(self) -> bool:
        """Whether VirtualBox still runs the VM (a guest that powered off leaves it ``poweroff``)."""
        return self.provider.vbox.info(self.name).get("VMState") in ("running", "paused", "starting", "stuck")

    def screen_text(self) -> str | None:
        """The VGA text screen through VirtualBox's debugger (``debugvm ... info vgatext``), read from outside:
        where a boot stopped in text mode, its reason is there. None where VirtualBox cannot tell."""
        try:
            text = self.provider.vbox("debugvm", self.name, "info", "vgatext", timeout=60)
        except (ProviderError, OSError) as e:
            log.debug("%s: no VGA text: %s", self.name, e)
            return None
        lines = [line.rstrip() for line in text.splitlines()]
        return "\n".join(lines).strip("\n") or None

    def login_command(self) -> Login:
        """``ssh`` to the NAT forward, trusting only the host keys the guest printed on its serial console."""
        key_file = self.key_file
        port = self.ssh_port or 22
        return ssh_login(self.options.user, "127.0.0.1", port, key_file, self.host_keys() or [], self.directory)


DRIVER = Path("/dev/vboxdrv")
"""VirtualBox's kernel driver: VBoxManage works without it, starting a VM does not."""


def host_checks(command: Sequence[str] | None = None) -> list[Check]:
    """What this host needs for VirtualBox to start a VM: VBoxManage, its kernel driver, VT-x/AMD-V not held by
    KVM. With a VBoxManage command of the target's own (a wrapper, a stand-in) the last two are only warnings: that
    command may start machines some other way."""

    own = bool(command)
    try:
        found = [Check.ok("VBoxManage", f"{' '.join(vboxmanage(command).command)} ({vboxmanage(command).family})")]
    except (ConfigError, ProviderError) as e:
        fix = "install VirtualBox (7.x), or set vboxmanage = [...] in the target"
        return [Check.problem("VBoxManage", str(e), fix)]
    flag = Check.warning if own else Check.problem
    if DRIVER.exists():
        found.append(Check.ok("kernel driver", str(DRIVER)))
    else:
        found.append(
            flag(
                "kernel driver",
                "/dev/vboxdrv missing: VBoxManage works, startvm does not"
                + (" (unless the target's own vboxmanage command starts machines otherwise)" if own else ""),
                "install the virtualbox-dkms package for your kernel and run `modprobe vboxdrv`",
            )
        )
    try:
        modules = [line.split()[0] for line in Path("/proc/modules").read_text().splitlines()]
    except OSError:
        modules = []
    if "kvm_intel" in modules or "kvm_amd" in modules:
        holders = [p for p in os.listdir("/proc") if p.isdigit() and _uses_kvm(p)]
        if holders:
            found.append(
                flag(
                    "VT-x/AMD-V",
                    f"in use by KVM (process {', '.join(holders[:3])} holds /dev/kvm)",
                    "stop the KVM guests, or `modprobe -r kvm_intel kvm_amd` before starting VirtualBox VMs",
                )
            )
    return found


def _uses_kvm(pid: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/kvm" for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
