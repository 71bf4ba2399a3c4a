"""VBoxManage, the interface CernVM Launch, Vagrant and Packer drive (there is no maintained Python binding): one
runner that knows the version family and retries while VBoxSVC is unreachable, and one function per step returning
its argv, so the spellings of VirtualBox 6.1 and 7.x (``--natpf1`` / ``--nat-pf1``, ...) are unit-tested.

A leaf module (it imports only the options), so the provider and the tests use it alike.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...errors import ConfigError, ProviderError
from ...interrupts import checkpoint
from ..kit import ClientCache, SdkErrors
from .options import VirtualBoxOptions

log = logging.getLogger(__name__)

DEBIAN_VBOXMANAGE = "/usr/lib/virtualbox/VBoxManage"
"""Debian's /usr/bin/VBoxManage is a wrapper that prints its kernel-driver warning on stdout: call the binary."""
RULE = "guestssh"
SATA = "SATA"
IDE = "IDE"

SERVER_RETRIES = 4
"""VBoxManage retries (0.5 s, 1 s, 2 s, 4 s apart) when it could not reach VBoxSVC: the per-user server exits
when idle, and a client that connects while it is shutting down gets "Failed to create the VirtualBox object"
without the command having done anything (seen once in a CI run), so running it again is safe."""


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
            checkpoint()  # Ctrl-C and a called-off launch are seen between the attempts
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


def acpipowerbutton(vm: str) -> list[str]:
    """The ACPI power button of the running VM (``controlvm ... acpipowerbutton``, the same in 6.1 and 7.x): the
    guest decides what happens."""
    return ["controlvm", vm, "acpipowerbutton"]


def setlinkstate(vm: str, adapter: int, up: bool) -> list[str]:
    """Plug (``on``) or pull (``off``) the cable of network adapter ``adapter`` (1-based) of the running VM."""
    return ["controlvm", vm, f"setlinkstate{adapter}", "on" if up else "off"]


def screenshotpng(vm: str, path: Path) -> list[str]:
    """The running VM's screen 0 as a PNG file (``controlvm ... screenshotpng``, the same in 6.1 and 7.x)."""
    return ["controlvm", vm, "screenshotpng", str(path)]
