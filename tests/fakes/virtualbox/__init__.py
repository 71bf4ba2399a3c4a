"""The VirtualBox of the tests: the real VBoxManage 7.2 in a Debian-unstable chroot (``./dev setup`` builds it),
which registers machines and media, and the stand-in VBoxManage (``vboxmanage.py``) that passes every command to it
but boots the machine under QEMU (this host has no VirtualBox kernel driver); and what they hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cernvm_fixtures import config
from cernvm_fixtures.providers import virtualbox as vb

HERE = Path(__file__).resolve().parent
CHROOT = Path(os.environ.get("CERNVM_FIXTURES_VBOX_ROOT", "/var/cache/cernvm-fixtures/vbox-sid"))
REAL = ["chroot", str(CHROOT), vb.DEBIAN_VBOXMANAGE]
STANDIN = [sys.executable, str(HERE / "vboxmanage.py")]
PROFILE = HERE.parent.parent / "integration" / "virtualbox_standin.toml"


def target(name: str = "vbox", **options) -> config.Target:
    """A virtualbox target driving the stand-in VBoxManage, with a shared folder ``data``, and ``options``."""
    raw = {
        "provider": "virtualbox",
        "vboxmanage": STANDIN,
        "profile": str(PROFILE),
        "slowdown": 4,
        "shared_folders": {"data": ""},
        **options,
    }
    return config.parse({"targets": {name: raw}}, "test").targets[name]


def vms() -> list[str]:
    """The names of the VMs the real VirtualBox has registered."""
    return [
        line.split('"')[1]
        for line in subprocess.run(
            [*REAL, "list", "vms"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if '"' in line
    ]


def vm_files() -> list[str]:
    """The settings file of every registered VM, inaccessible ones included (their folder is gone)."""
    listed = subprocess.run([*REAL, "list", "--long", "vms"], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[1].strip() for line in listed.splitlines() if line.startswith("Config file:")]


def media() -> str:
    """What the real VirtualBox lists of its registered hard disks and DVDs."""
    return "".join(
        subprocess.run([*REAL, "list", kind], capture_output=True, text=True).stdout for kind in ("hdds", "dvds")
    )


def qemus_under(directory: Path) -> list[str]:
    """The stand-in's QEMU processes of machines under ``directory``."""
    found = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if str(directory) in line]
