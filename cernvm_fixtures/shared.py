"""Reverse SSHFS: a host directory mounted in the guest over the instance's own SSH connection.

A real CernVM 4 kernel has FUSE but neither 9p nor virtiofs, so KVM shared folders for it cannot be a
hypervisor device. Instead the host runs OpenSSH's ``sftp-server`` on the folder and pipes it, through one
more channel of the SSH connection the harness already has, into ``sshfs -o slave`` in the guest (sshfs then
speaks SFTP on its stdin/stdout instead of starting ssh). Nothing new listens on the host or in the guest;
the mount lives as long as that channel.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import CernvmError

log = logging.getLogger(__name__)

SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
)
"""Where distributions install OpenSSH's sftp-server (Debian: package openssh-sftp-server)."""


class SharedFolderError(CernvmError):
    """A shared folder cannot be set up; the message says what is missing where."""


class _Channel(Protocol):
    def exec_command(self, command: str) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def recv_stderr(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


def sftp_server() -> str:
    """The host's sftp-server program, or an error saying which package provides it."""
    found = shutil.which("sftp-server") or next((p for p in SFTP_SERVERS if Path(p).is_file()), None)
    if not found:
        raise SharedFolderError(
            "reverse SSHFS needs OpenSSH's sftp-server on the host; none found in PATH or "
            f"{', '.join(SFTP_SERVERS)}: apt-get install openssh-sftp-server"
        )
    return found


@dataclass
class SshfsMount:
    """One reverse SSHFS mount: the host's sftp-server process and the guest's sshfs channel, pumped together."""

    name: str
    guest_path: str
    process: subprocess.Popen[bytes]
    channel: Any
    threads: list[threading.Thread] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        """End the mount from the host side: the guest's sshfs sees EOF and unmounts (idempotent)."""
        try:
            self.channel.close()
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        for thread in self.threads:
            thread.join(5)


def _pump_to_channel(source: Any, channel: _Channel) -> None:
    try:
        while chunk := source.read1(65536):
            channel.sendall(chunk)
        channel.shutdown_write()
    except (OSError, EOFError):
        pass


def _pump_from_channel(channel: _Channel, sink: Any) -> None:
    try:
        while chunk := channel.recv(65536):
            sink.write(chunk)
            sink.flush()
    except (OSError, EOFError, ValueError):
        pass
    finally:
        try:
            sink.close()
        except OSError:
            pass


def _collect_stderr(channel: _Channel, into: bytearray) -> None:
    try:
        while chunk := channel.recv_stderr(4096):
            into.extend(chunk[: max(0, 8192 - len(into))])
    except (OSError, EOFError):
        pass


def mount_sshfs(instance: Any, name: str, host_dir: Path, guest_path: str, *, timeout: float = 30.0) -> SshfsMount:
    """Mount ``host_dir`` at ``guest_path`` in the instance by reverse SSHFS; wait until the mount is there.

    ``instance`` is an :class:`~cernvm_fixtures.instance.Instance` whose transport is SSH. Raises
    :class:`SharedFolderError` naming the instance and what is missing (sshfs or /dev/fuse in the guest,
    sftp-server on the host) or what sshfs printed when the mount did not appear in time.
    """
    server = sftp_server()
    probe = instance.run("command -v sshfs && test -c /dev/fuse", timeout=30)
    if not probe.succeeded:
        what = "/dev/fuse (the fuse module)" if probe.stdout.strip() else "sshfs"
        raise SharedFolderError(
            f"instance {instance.name}: profile {instance.profile.name!r} says shared.mechanism = 'sshfs', but "
            f"the guest has no {what}; reverse SSHFS needs sshfs and FUSE in the guest "
            "(choose another shared.mechanism in the profile, or an image that has them)"
        )
    transport = instance.transport
    opener = getattr(transport, "open_channel", None) or getattr(transport, "_open_channel", None)
    if opener is None:
        raise SharedFolderError(f"instance {instance.name}: reverse SSHFS needs an SSH transport, not {transport!r}")
    channel = opener()
    guest = shlex.quote(guest_path)
    remote = shlex.quote(f"host:{host_dir}")
    # sshfs >= 3.7 calls the option "passive", older ones (CernVM 4's EL7) "slave"
    channel.exec_command(
        f"mkdir -p {guest} && if sshfs --help 2>&1 | grep -q -- '-o passive'; then mode=passive; else mode=slave; fi"
        f" && exec sshfs -f -o $mode {remote} {guest}"
    )
    process = subprocess.Popen(
        [server, "-e"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=host_dir
    )
    mount = SshfsMount(name, guest_path, process, channel)
    mount.threads = [
        threading.Thread(target=_pump_to_channel, args=(process.stdout, channel), daemon=True),
        threading.Thread(target=_pump_from_channel, args=(channel, process.stdin), daemon=True),
        threading.Thread(target=_collect_stderr, args=(channel, mount.stderr), daemon=True),
    ]
    for thread in mount.threads:
        thread.start()
    deadline = time.monotonic() + timeout
    check = f"grep -q ' {guest_path} fuse.sshfs ' /proc/mounts"
    while not instance.run(check, timeout=30).succeeded:
        if time.monotonic() > deadline or process.poll() is not None or channel.exit_status_ready():
            mount.close()
            said = mount.stderr.decode(errors="replace").strip() or "nothing"
            raise SharedFolderError(
                f"instance {instance.name}: reverse SSHFS of {host_dir} on {guest_path} did not appear within "
                f"{timeout:.0f} s; the guest's sshfs said: {said}"
            )
        time.sleep(0.2)
    log.info("%s: %s mounted on %s by reverse SSHFS", instance.name, host_dir, guest_path)
    return mount


def mount_shared_folders(instance: Any) -> list[SshfsMount]:
    """Mount every shared folder of the instance the way its profile says, where the harness must do it.

    9p, virtiofs and vboxsf are hypervisor devices the guest mounts itself; only ``sshfs`` needs the harness.
    Call after the instance is ready; close the returned mounts before destroying the instance.
    """
    mechanism = instance.expected("shared.mechanism")
    if mechanism != "sshfs" or not instance.shared_folders:
        return []
    pattern = instance.expected("shared.path") or "/mnt/shared/{name}"
    mounts: list[SshfsMount] = []
    try:
        for name, host_dir in instance.shared_folders.items():
            mounts.append(mount_sshfs(instance, name, Path(host_dir), pattern.format(name=name)))
    except BaseException:
        for mount in mounts:
            mount.close()
        raise
    return mounts
