"""A VBoxManage for hosts without VirtualBox's kernel driver: the real VBoxManage for everything but running.

Every command goes to the real VBoxManage (VirtualBox 7.2 from Debian unstable, in
the chroot ``./dev setup`` builds), except those that need the hypervisor:
``startvm`` reads the ``.vbox`` file the real VBoxManage wrote and boots the same
media under QEMU (TCG) instead: the boot ISO, the scratch VDI (QEMU reads and
writes VDI), the context ISO, the NAT rule's 127.0.0.1 forward, the serial port's
file and the shared folders (as 9p, standing in for vboxsf), with a standard VGA
card for VBoxSVGA; ``controlvm NAME poweroff`` stops that QEMU, ``acpipowerbutton`` and ``setlinkstate<N>`` are
QEMU's ``system_powerdown`` and ``set_link``; ``controlvm NAME
screenshotpng FILE`` writes that QEMU's real screen (QMP ``screendump``, PNG); ``debugvm NAME info vgatext``
prints the text in its VGA memory (QMP ``pmemsave``);
``showvminfo`` reports ``VMState="running"`` while it runs. So everything up to
VirtualBox's own hypervisor is the real thing.

    vboxmanage = ["python3", "tests/fakes/virtualbox/vboxmanage.py"]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

CHROOT = os.environ.get("CERNVM_FIXTURES_VBOX_ROOT", "/var/cache/cernvm-fixtures/vbox-sid")
REAL = ["chroot", CHROOT, "/usr/lib/virtualbox/VBoxManage"]
NS = {"vb": "http://www.virtualbox.org/"}
NIC = {"virtio": "virtio-net-pci", "82540EM": "e1000", "82543GC": "e1000", "82545EM": "e1000"}


def real(args: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*REAL, *args], capture_output=capture, text=True)


def info(name: str) -> dict[str, str]:
    done = real(["showvminfo", name, "--machinereadable"], capture=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(done.returncode)
    found = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip('"')] = value.strip().strip('"')
    return found


def pidfile(config: str) -> Path:
    return Path(config).parent / "standin-qemu.pid"


def qmp_socket(config: str) -> Path:
    """The stand-in QEMU's QMP socket: short, in /tmp (a socket path must fit in 108 bytes; the run's do not)."""
    digest = hashlib.sha256(config.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cvmfx-vbox-standin-{digest}.qmp"


def qmp(config: str, command: str, **arguments: object) -> dict:
    """One QMP command to the stand-in QEMU; its answer (``return`` or ``error``), events skipped."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(qmp_socket(config)))
        stream = sock.makefile("rwb")

        def answer() -> dict:
            while True:
                line = stream.readline()
                if not line:
                    raise ConnectionError("QEMU closed its QMP socket")
                message = json.loads(line)
                if "return" in message or "error" in message:
                    return message

        json.loads(stream.readline())  # the greeting
        for request in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            reply = answer()
        return reply


def running(config: str) -> int | None:
    try:
        pid = int(pidfile(config).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stratum1_forward(media: object) -> list[str]:
    """The test appliance loads its OS from its CernVM-FS server (10.0.2.100): where the boot ISO is an appliance
    build (its ``stratum1`` directory beside it), the stand-in answers that address with busybox's httpd, one
    process per connection (plain QEMU has no sandbox forbidding it). Real VirtualBox has no such forward."""
    for path in media:
        stratum1 = Path(str(path)).parent / "stratum1"
        if str(path).endswith(".iso") and stratum1.is_dir():
            busybox = shutil.which("busybox") or "/bin/busybox"
            return [f"guestfwd=tcp:10.0.2.100:80-cmd:{busybox} httpd -i -h {stratum1}".replace(",", ",,")]
    return []


def location(images: dict[str, str], uuid: str) -> str:
    """Where medium ``uuid`` lives: this machine's media registry, else VirtualBox's (a medium is recorded in the
    registry of the first machine it was attached to, so a boot ISO shared by several machines is often in another
    machine's file, or in the global one)."""
    if uuid in images:
        return images[uuid]
    for kind in ("dvd", "disk"):
        done = real(["showmediuminfo", kind, uuid.strip("{}")], capture=True)
        for line in done.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "Location":
                return value.strip()
    raise SystemExit(f"VBoxManage: error: stand-in: medium {uuid} is in no media registry: {done.stderr.strip()}")


def qemu_argv(config: str) -> list[str]:
    """QEMU booting what the .vbox file describes."""
    machine = ElementTree.parse(config).getroot().find("vb:Machine", NS)
    hardware = machine.find("vb:Hardware", NS)
    images = {i.get("uuid"): i.get("location") for i in machine.iterfind("vb:MediaRegistry//vb:Image", NS)}
    images |= {d.get("uuid"): d.get("location") for d in machine.iterfind("vb:MediaRegistry//vb:HardDisk", NS)}
    argv = [
        "qemu-system-x86_64",
        "-machine",
        "pc,accel=tcg",
        "-nodefaults",
        "-display",
        "none",
        "-no-user-config",
        "-m",
        hardware.find("vb:Memory", NS).get("RAMSize"),
        "-smp",
        (hardware.find("vb:CPU", NS).get("count") or "1") if hardware.find("vb:CPU", NS) is not None else "1",
        "-device",
        "VGA",
        "-qmp",
        f"unix:{qmp_socket(config)},server=on,wait=off",
        "-daemonize",
        "-pidfile",
        str(pidfile(config)),
        "-boot",
        "order=dc",
    ]
    attached: list[str] = []  # where the attached media live, wherever they are registered
    for controller in hardware.iterfind("vb:StorageControllers/vb:StorageController", NS):
        bus = "ahci" if controller.get("type") == "AHCI" else None
        if bus:
            argv += ["-device", "ahci,id=ahci"]
        for dev in controller.iterfind("vb:AttachedDevice", NS):
            path = location(images, dev.find("vb:Image", NS).get("uuid"))
            attached.append(path)
            port, unit = int(dev.get("port")), int(dev.get("device"))
            ident = f"{controller.get('name')}{port}{unit}".lower()
            if dev.get("type") == "HardDisk":
                argv += ["-drive", f"id={ident},file={path},format=vdi,if=none"]
                device = "ide-hd"
            else:
                argv += ["-drive", f"id={ident},file={path},format=raw,if=none,media=cdrom,readonly=on"]
                device = "ide-cd"
            where = f"bus=ahci.{port}" if bus else f"bus=ide.{port},unit={unit}"
            argv += ["-device", f"{device},drive={ident},{where}"]
    for adapter in hardware.iterfind("vb:Network/vb:Adapter", NS):
        if adapter.get("enabled") != "true" or adapter.find("vb:NAT", NS) is None:
            continue
        forwards = [
            f"hostfwd=tcp:{f.get('hostip')}:{f.get('hostport')}-:{f.get('guestport')}"
            for f in adapter.iterfind("vb:NAT/vb:Forwarding", NS)
            if f.get("proto") == "1"
        ]
        slot = int(adapter.get("slot"))
        argv += [
            "-netdev",
            ",".join([f"user,id=n{slot},restrict=on", *forwards, *stratum1_forward(attached)]),
            "-device",
            f"{NIC.get(adapter.get('type'), 'e1000')},netdev=n{slot}",
        ]
    for port in hardware.iterfind("vb:UART/vb:Port", NS):
        if port.get("enabled") == "true" and port.get("hostMode") == "RawFile":
            argv += ["-serial", f"file:{port.get('path')}"]
    for folder in hardware.iterfind("vb:SharedFolders/vb:SharedFolder", NS):
        argv += [
            "-virtfs",
            f"local,path={folder.get('hostPath')},mount_tag={folder.get('name')},security_model=mapped-xattr",
        ]
    return argv


def main(args: list[str]) -> int:
    if args[:1] == ["startvm"]:
        config = info(args[1])["CfgFile"]
        done = subprocess.run(qemu_argv(config), capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(f"VBoxManage: error: stand-in QEMU failed: {done.stderr}")
            return 1
        print(f'Waiting for VM "{args[1]}" to power on...\nVM "{args[1]}" has been successfully started.')
        return 0
    if args[:1] == ["controlvm"] and args[2:3] == ["poweroff"]:
        pid = running(info(args[1])["CfgFile"])
        if pid is None:
            sys.stderr.write(f"VBoxManage: error: Machine '{args[1]}' is not currently running\n")
            return 1
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if running(info(args[1])["CfgFile"]) is None:
                break
            time.sleep(0.05)
        qmp_socket(info(args[1])["CfgFile"]).unlink(missing_ok=True)
        return 0
    if args[:1] == ["controlvm"] and (
        args[2:3] == ["acpipowerbutton"] or args[2:3] and args[2].startswith("setlinkstate")
    ):
        config = info(args[1])["CfgFile"]
        if running(config) is None:
            sys.stderr.write(f"VBoxManage: error: Machine '{args[1]}' is not currently running\n")
            return 1
        if args[2] == "acpipowerbutton":
            reply = qmp(config, "system_powerdown")
        else:  # setlinkstate<N> on|off: adapter N is the stand-in's netdev n<N-1> (VirtualBox's slot)
            slot = int(args[2].removeprefix("setlinkstate")) - 1
            reply = qmp(config, "set_link", name=f"n{slot}", up=args[3] == "on")
        if "error" in reply:
            sys.stderr.write(f"VBoxManage: error: stand-in QEMU: {reply['error']}\n")
            return 1
        return 0
    if args[:1] == ["controlvm"] and args[2:3] == ["screenshotpng"]:
        config = info(args[1])["CfgFile"]
        if running(config) is None:
            sys.stderr.write(f"VBoxManage: error: Machine '{args[1]}' is not currently running\n")
            return 1
        reply = qmp(config, "screendump", filename=os.path.abspath(args[3]), format="png")
        if "error" in reply:
            sys.stderr.write(f"VBoxManage: error: stand-in QEMU took no screenshot: {reply['error']}\n")
            return 1
        return 0
    if args[:1] == ["debugvm"] and args[2:4] == ["info", "vgatext"]:
        config = info(args[1])["CfgFile"]
        if running(config) is None:
            sys.stderr.write(f"VBoxManage: error: Machine '{args[1]}' is not currently running\n")
            return 1
        with tempfile.TemporaryDirectory() as scratch:
            dump = Path(scratch) / "vga"
            reply = qmp(config, "pmemsave", val=0xB8000, size=0x8000, filename=str(dump))
            if "error" in reply:
                sys.stderr.write(f"VBoxManage: error: stand-in QEMU: {reply['error']}\n")
                return 1
            characters = dump.read_bytes()[::2]
        # VirtualBox prints the visible text screen; the stand-in prints the rows of the text buffer that hold
        # anything (it does not read the CRTC's start address)
        rows = [characters[i : i + 80].decode("cp437").rstrip(" \x00") for i in range(0, len(characters), 80)]
        print("\n".join(row for row in rows if row.strip(" \x00")))
        return 0
    if args[:1] == ["showvminfo"] and "--machinereadable" in args:
        found = info(args[1])
        if running(found["CfgFile"]) is not None:
            found["VMState"] = "running"
        for key, value in found.items():
            print(f'"{key}"="{value}"' if not key.isidentifier() else f'{key}="{value}"')
        return 0
    return real(args).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
