"""VirtualBox through VBoxManage: the documented CernVM machine, reached over a 127.0.0.1 port forward.

The machine is the one CernVM's "How to run on VirtualBox" guide builds by hand
(Linux 64-bit, 2048 MB, a dynamically allocated VDI, bidirectional clipboard and
drag and drop, VBoxSVGA, the ISO in the CD drive, shared folders without
auto-mount) in the storage layout CernVM Launch uses (boot ISO on IDE 0:0,
scratch disk on SATA port 0, context ISO on SATA port 1), with NIC 1 NAT and SSH
forwarded from 127.0.0.1 only, as CernVM Launch does, and the serial port
written to a file for the console (CernVM Launch configures none; the harness
reads host keys and boot messages there).

VBoxManage is the interface CernVM Launch, Vagrant and Packer drive (there is no
maintained Python binding). Every step is a function returning its argv, so the
spellings of VirtualBox 6.1 and 7.x (``--natpf1`` / ``--nat-pf1``, ...) are
unit-tested; the version is read once per VBoxManage command.

A target can also be given as a CernVM Launch configuration file
(``launch_config``), so the suite runs on the machine definition people already
launch CernVM with.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .. import images
from ..context import Context
from ..context.nocloud import write_seed
from ..errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from ..ledger import Resource
from ..screen import write_png
from ..transport.base import Login
from ..transport.ssh import SSHTransport, ssh_login
from .base import Machine, Provider, ProviderOptions, console_file_text
from .kit import (
    FIELD_PREFIX,
    ClientCache,
    SdkErrors,
    decode_fields,
    encode_fields,
    owned_directory,
    remove_machine_directory,
    wait_until,
)
from .kvm import free_port

log = logging.getLogger(__name__)

DEBIAN_VBOXMANAGE = "/usr/lib/virtualbox/VBoxManage"
"""Debian's /usr/bin/VBoxManage is a wrapper that prints its kernel-driver warning on stdout: call the binary."""
EXTRA = FIELD_PREFIX
"""Prefix of the extradata keys carrying a machine's ledger entry (so sweep finds it without the ledger): the keys
are the kit's fields (:func:`~.kit.encode_fields`) as they are."""
RULE = "guestssh"
SATA = "SATA"
ISO = images.Accepts(
    ".iso",
    "ISO images (ucernvm-prod.<V>-<R>.cernvm.x86_64.iso) or 'appliance[:variant]'",
    appliance=lambda built: built.iso,
)
IDE = "IDE"

SERVER_RETRIES = 4
"""VBoxManage retries (0.5 s, 1 s, 2 s, 4 s apart) when it could not reach VBoxSVC: the per-user server exits
when idle, and a client that connects while it is shutting down gets "Failed to create the VirtualBox object"
without the command having done anything (seen once in a CI run), so running it again is safe."""
CREATION_ORDER = ("directory", "disk", "vm")
"""The scratch disk exists before the VM it is attached to; teardown goes the other way."""


class VBoxError(ProviderError):
    """VBoxManage failed: ``syntax`` (rc 2: our argv is wrong for this version) or a runtime error (rc 1)."""

    def __init__(self, argv: Sequence[str], rc: int, stderr: str) -> None:
        self.rc = rc
        self.stderr = stderr
        kind = "syntax error (this VirtualBox version spells it differently?)" if rc == 2 else "failed"
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        said = [line for line in lines if "error:" in line] or lines[-3:] or ["(no message)"]
        super().__init__(f"VBoxManage {' '.join(argv[:2])} {kind} (rc {rc}): {' '.join(said[:3])}")

    @property
    def not_found(self) -> bool:
        """The object the command named does not exist (any more)."""
        text = self.stderr
        return (
            "VBOX_E_OBJECT_NOT_FOUND" in text
            or "Could not find a registered machine" in text
            or ("Could not find file" in text)
        )

    @property
    def server_unavailable(self) -> bool:
        """VBoxManage could not reach VBoxSVC, so the command did nothing and may be run again."""
        return "Failed to create the VirtualBox object" in self.stderr


VBOX = SdkErrors(lambda: (VBoxError,), not_found=lambda error: isinstance(error, VBoxError) and error.not_found)
"""VBoxManage's failures read once: ``VBOX.call(what, vbox, *argv, missing_ok=True)`` takes "no such object" as
done (teardown is idempotent)."""
UNLOCKED = ("poweroff", "aborted", "saved", "aborted-saved", None)
"""VM states in which a VM whose session is unlocked may be unregistered."""

# --- version families ------------------------------------------------------------------------------

SPELLING: dict[int, dict[str, str]] = {
    6: {
        "ostype": "--ostype",
        "clipboard": "--clipboard",
        "draganddrop": "--draganddrop",
        "hostonlyadapter2": "--hostonlyadapter2",
        "natpf1": "--natpf1",
        "uartmode1": "--uartmode1",
        "nictype": "--nictype",
        "cpuexecutioncap": "--cpuexecutioncap",
        "audio": "--audio",
        "audio_off": "none",
    },
    7: {
        "ostype": "--os-type",
        "clipboard": "--clipboard-mode",
        "draganddrop": "--drag-and-drop",
        "hostonlyadapter2": "--host-only-adapter2",
        "natpf1": "--nat-pf1",
        "uartmode1": "--uart-mode1",
        "nictype": "--nic-type",
        "cpuexecutioncap": "--cpu-execution-cap",
        "audio": "--audio-enabled",
        "audio_off": "off",
    },
}
"""Option spellings that changed in VirtualBox 7.0 (6.1 does not know the new ones)."""


def family(version: str) -> int:
    """6 for VirtualBox 6.x, 7 for 7.x and later; a clear error for anything older."""
    match = re.match(r"^(\d+)\.(\d+)", version.strip())
    if not match:
        raise ProviderError(f"cannot read the VirtualBox version from {version!r}")
    major, minor = int(match[1]), int(match[2])
    if major < 6 or (major == 6 and minor < 1):
        raise ProviderError(f"VirtualBox {version.strip()} is too old; 6.1 or 7.x is supported")
    return 6 if major == 6 else 7


# --- options ----------------------------------------------------------------------------------------


class VirtualBoxOptions(ProviderOptions):
    """Target keys of the ``virtualbox`` provider (defaults: the documented manual set-up)."""

    vboxmanage: list[str] = []
    """The VBoxManage command (argv); default /usr/lib/virtualbox/VBoxManage, else ``VBoxManage`` on PATH."""
    os_type: str = "Linux26_64"
    """VirtualBox's "Linux 2.6 / 3.x / 4.x (64-bit)", as documented."""
    memory: int = Field(2048, ge=1024, description="MiB (the guide: at least 1 GB, 2 GB suggested)")
    cpus: int = Field(1, ge=1)
    execution_cap: int = Field(100, ge=1, le=100)
    disk_size: int = Field(20, ge=1, description="GiB, dynamically allocated VDI (the guide: at least 20 GB)")
    nic_type: Literal["virtio", "82540EM"] = "virtio"
    """``virtio`` as CernVM Launch sets it (guest driver virtio_net); ``82540EM`` is VirtualBox's default e1000."""
    host_only_adapter: str | None = None
    """An EXISTING host-only interface for adapter 2 (the guide's second adapter); none is ever created."""
    graphical: bool = True
    """Bidirectional clipboard and drag and drop, VBoxSVGA (the guide's set-up; CernVM Launch flag 32)."""
    headless: bool = True
    slowdown: float = Field(1.0, ge=1.0)
    user: str = "root"
    launch_config: str | None = None
    """A CernVM Launch configuration file (``key=value``): its cpus, memory, disk, flags, ... win over the keys here."""

    @field_validator("vboxmanage")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if value and not (shutil.which(value[0]) or Path(value[0]).is_file()):
            raise ValueError(f"{value[0]!r} is not an executable (give the VBoxManage command as a list of words)")
        return value

    @field_validator("launch_config")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Declared last, so the file is checked against every other key (e.g. flag 64 needs host_only_adapter)."""
        if value is not None:
            try:
                LaunchConfig.read(value, "launch_config").apply(cls.model_construct(**info.data))
            except ConfigError as e:
                raise ValueError(str(e).removeprefix("launch_config: ")) from None
        return value

    @model_validator(mode="after")
    def _launch_config(self) -> VirtualBoxOptions:
        """A CernVM Launch file is read when the config loads, so its errors come before anything is created."""
        if self.launch_config is None:
            return self
        try:
            applied = LaunchConfig.read(self.launch_config, "launch_config").apply(self)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        for key in ("cpus", "memory", "execution_cap", "disk_size", "headless", "graphical"):
            object.__setattr__(self, key, getattr(applied, key))
        return self


LAUNCH_KEYS = {
    "name",
    "apiPort",
    "cernvmVersion",
    "cpus",
    "memory",
    "disk",
    "diskPath",
    "diskURL",
    "diskChecksum",
    "sharedFolder",
    "executionCap",
    "flags",
}
"""Keys of a CernVM Launch configuration file (cernvm-launch's defaults and README)."""
FLAG_HEADFUL, FLAG_GRAPHICAL, FLAG_DUAL_NIC = 16, 32, 64
"""libcernvm's HVF_HEADFUL, HVF_GRAPHICAL and HVF_DUAL_NIC session flags."""


@dataclass(frozen=True)
class LaunchConfig:
    """A CernVM Launch machine definition, as the options it maps to."""

    values: Mapping[str, str]
    origin: str

    @classmethod
    def read(cls, path: str, where: str) -> LaunchConfig:
        """Parse ``key=value`` lines (``#`` comments); unknown keys are errors naming what is valid."""
        file = Path(path).expanduser()
        try:
            text = file.read_text()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read CernVM Launch config {path!r}: {e.strerror}") from None
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or key not in LAUNCH_KEYS:
                raise ConfigError(
                    f"{file}:{number}: {line!r} is not a CernVM Launch setting; "
                    f"valid keys: {', '.join(sorted(LAUNCH_KEYS))}"
                )
            values[key] = value.strip()
        return cls(values, str(file))

    def integer(self, key: str, default: int) -> int:
        raw = self.values.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{self.origin}: {key}={raw!r} is not a whole number") from None

    def apply(self, options: VirtualBoxOptions) -> VirtualBoxOptions:
        """The options with this machine definition's values (Launch's disk is in MB, ours in GiB)."""
        flags = self.integer("flags", 49)
        disk_mb = self.integer("disk", options.disk_size * 1024)
        update = {
            "cpus": self.integer("cpus", options.cpus),
            "memory": self.integer("memory", options.memory),
            "execution_cap": self.integer("executionCap", options.execution_cap),
            "disk_size": max(1, -(-disk_mb // 1024)),
            "headless": not flags & FLAG_HEADFUL,
            "graphical": bool(flags & FLAG_GRAPHICAL),
        }
        if flags & FLAG_DUAL_NIC and not options.host_only_adapter:
            raise ConfigError(
                f"{self.origin}: flags={flags} asks for a host-only second adapter (64); "
                "name an existing host-only interface in the target's host_only_adapter"
            )
        try:
            return VirtualBoxOptions.model_validate({**options.model_dump(), **update, "launch_config": None})
        except ValueError as e:
            raise ConfigError(f"{self.origin}: {e}") from None


# --- VBoxManage -------------------------------------------------------------------------------------


def default_command() -> list[str]:
    if Path(DEBIAN_VBOXMANAGE).is_file():
        return [DEBIAN_VBOXMANAGE]
    found = shutil.which("VBoxManage")
    if found:
        return [found]
    raise ConfigError(
        "the virtualbox provider needs VBoxManage: install VirtualBox 6.1 or 7.x "
        "(or set the target's vboxmanage to the command that runs it)"
    )


class VBoxManage:
    """Runs VBoxManage; knows its version family; every error names the step."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.family = family(version(tuple(self.command)))
        self.spell = SPELLING[self.family]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        argv = [*self.command, *args]
        for attempt in range(SERVER_RETRIES + 1):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise ProviderError(f"VBoxManage {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
            if done.returncode == 0:
                return done.stdout
            error = VBoxError(list(args), done.returncode, done.stderr)
            if not error.server_unavailable or attempt == SERVER_RETRIES:
                raise error
            log.debug("VBoxManage %s: VBoxSVC not reachable, retrying (%d)", args[0], attempt + 1)
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def info(self, vm: str) -> dict[str, str]:
        """``showvminfo --machinereadable`` as a dict (quotes removed)."""
        return parse_machinereadable(self("showvminfo", vm, "--machinereadable"))

    def extradata(self, vm: str) -> dict[str, str]:
        """Every extradata key and value of ``vm`` (``getextradata <vm> enumerate``)."""
        found = {}
        for line in self("getextradata", vm, "enumerate").splitlines():
            match = re.match(r"^Key: (.*?), Value: (.*)$", line)
            if match:
                found[match[1]] = match[2]
        return found


_commands: ClientCache[tuple[str, ...], VBoxManage] = ClientCache(VBoxManage)


def vboxmanage(command: Sequence[str] | None = None) -> VBoxManage:
    """The VBoxManage of ``command`` (default :func:`default_command`), its version read once per process."""
    return _commands.get(tuple(command or default_command()))


def version(command: tuple[str, ...]) -> str:
    """``VBoxManage --version``."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise ConfigError(f"cannot run {command[0]!r}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"{' '.join(command)} --version did not answer within 60 s") from None
    lines = [line for line in done.stdout.splitlines() if re.match(r"^\d+\.\d+", line.strip())]
    if done.returncode != 0 or not lines:
        raise ProviderError(f"{' '.join(command)} --version failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return lines[-1].strip()


def parse_machinereadable(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip('"')] = value.strip().strip('"')
    return found


# --- one function per step: the argv after "VBoxManage" ------------------------------------------


def createvm(name: str, os_type: str, basefolder: Path) -> list[str]:
    """``--ostype`` in every version (only modifyvm renamed it to ``--os-type`` in 7.0)."""
    return ["createvm", "--name", name, "--ostype", os_type, "--basefolder", str(basefolder), "--register"]


def modifyvm(
    name: str, options: VirtualBoxOptions, *, ssh_port: int, console: Path, spell: Mapping[str, str]
) -> list[str]:
    argv = [
        "modifyvm",
        name,
        "--memory",
        str(options.memory),
        "--cpus",
        str(options.cpus),
        spell["cpuexecutioncap"],
        str(options.execution_cap),
        "--ioapic",
        "on",
        "--pae",
        "on",
        "--boot1",
        "dvd",
        "--boot2",
        "disk",
        "--boot3",
        "none",
        "--boot4",
        "none",
        "--graphicscontroller",
        "vboxsvga",
        "--vram",
        "16",
        spell["audio"],
        spell["audio_off"],
        "--nic1",
        "nat",
        f"{spell['nictype']}1",
        options.nic_type,
        spell["natpf1"],
        f"{RULE},tcp,127.0.0.1,{ssh_port},,22",
        "--uart1",
        "0x3f8",
        "4",
        spell["uartmode1"],
        "file",
        str(console),
    ]
    if options.graphical:
        argv += [spell["clipboard"], "bidirectional", spell["draganddrop"], "bidirectional"]
    if options.host_only_adapter:
        argv += [
            "--nic2",
            "hostonly",
            f"{spell['nictype']}2",
            options.nic_type,
            spell["hostonlyadapter2"],
            options.host_only_adapter,
        ]
    return argv


def createmedium(path: Path, size_gib: int) -> list[str]:
    """A dynamically allocated VDI (``--variant Standard``), as the guide asks."""
    return [
        "createmedium",
        "disk",
        "--filename",
        str(path),
        "--size",
        str(size_gib * 1024),
        "--format",
        "VDI",
        "--variant",
        "Standard",
    ]


def storagectl(name: str, controller: str) -> list[str]:
    if controller == IDE:
        return ["storagectl", name, "--name", IDE, "--add", "ide", "--controller", "PIIX4"]
    return ["storagectl", name, "--name", SATA, "--add", "sata", "--controller", "IntelAhci", "--portcount", "2"]


def storageattach(name: str, controller: str, port: int, device: int, kind: str, medium: Path) -> list[str]:
    return [
        "storageattach",
        name,
        "--storagectl",
        controller,
        "--port",
        str(port),
        "--device",
        str(device),
        "--type",
        kind,
        "--medium",
        str(medium),
    ]


def sharedfolder(name: str, folder: str, path: Path) -> list[str]:
    """Without ``--automount``: CernVM mounts shared folders under /mnt/shared itself (the guide)."""
    return ["sharedfolder", "add", name, "--name", folder, "--hostpath", str(path)]


def setextradata(name: str, key: str, value: str) -> list[str]:
    return ["setextradata", name, key, value]


def startvm(name: str, headless: bool) -> list[str]:
    return ["startvm", name, "--type", "headless" if headless else "gui"]


# --- the provider ---------------------------------------------------------------------------------


class VirtualBoxProvider(Provider[VirtualBoxOptions, "VirtualBoxMachine"]):
    """Boots images in VirtualBox VMs on this host through VBoxManage."""

    name = "virtualbox"
    no_power_button = "not implemented for VirtualBox yet (VBoxManage controlvm <vm> acpipowerbutton would press it)"
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


def screenshotpng(vm: str, path: Path) -> list[str]:
    """The running VM's screen 0 as a PNG file (``controlvm ... screenshotpng``, the same in 6.1 and 7.x)."""
    return ["controlvm", vm, "screenshotpng", str(path)]


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

    def __init__(self, provider: VirtualBoxProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: VirtualBoxProvider = provider
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


def preflight(command: Sequence[str] | None = None) -> list[str]:
    """What keeps VirtualBox from starting a VM here, each as one sentence with what to do (empty: nothing)."""
    problems = []
    try:
        vboxmanage(command)
    except (ConfigError, ProviderError) as e:
        problems.append(str(e))
    if not Path("/dev/vboxdrv").exists():
        problems.append(
            "the VirtualBox kernel driver is not loaded (/dev/vboxdrv missing): install the virtualbox-dkms "
            "package for your kernel and run `modprobe vboxdrv` (VBoxManage works without it, startvm does not)"
        )
    try:
        users = [line.split()[0] for line in Path("/proc/modules").read_text().splitlines()]
    except OSError:
        users = []
    if "kvm_intel" in users or "kvm_amd" in users:
        in_use = any(Path(f"/proc/{p}/fd").exists() and _uses_kvm(p) for p in os.listdir("/proc") if p.isdigit())
        if in_use:
            problems.append(
                "VT-x/AMD-V is in use by KVM (a process holds /dev/kvm): stop the KVM guests, or "
                "`modprobe -r kvm_intel kvm_amd` before starting VirtualBox VMs"
            )
    return problems


def _uses_kvm(pid: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/kvm" for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False
