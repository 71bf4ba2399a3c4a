"""Reverse SSHFS: a host directory mounted in the guest over the instance's own SSH connection.

A real CernVM 4 kernel has FUSE but neither 9p nor virtiofs, so KVM shared folders for it cannot be a
hypervisor device. Instead the host runs OpenSSH's ``sftp-server`` on the folder and pipes it, through one
more channel of the SSH connection the harness already has, into ``sshfs -o slave`` in the guest (sshfs then
speaks SFTP on its stdin/stdout instead of starting ssh). Nothing new listens on the host or in the guest;
the mount lives as long as that channel.

Whatever the guest runs in place of sshfs speaks SFTP to that server, so the server is confined to the share:
it runs in a bubblewrap (``bwrap``) sandbox whose only host files are the share (read-write, at ``/share``),
the server program and its libraries (read-only), ``/dev/null`` and a one-line ``/etc/passwd``; ``..``, an
absolute path or a symlink (absolute or relative, already in the share or not) resolves inside the sandbox,
where nothing else of the host's exists. The sandbox has no network, its own user, pid, ipc, uts, mount and
cgroup namespaces, no capabilities, no environment, and dies with the harness. The server refuses to create
symlinks and hardlinks (``sftp-server -P``), so nothing the guest leaves in the share leads host programs
reading it elsewhere. Where bwrap cannot make such a sandbox the mount is refused, never served unconfined.

As root (the CI machines) bwrap needs no setuid bit: it creates the namespaces itself, maps root to itself in
the new user namespace and drops every capability, so the server is root only for files owned by root, i.e.
the share's own (files the guest creates are root's, and it can set their mode bits, setuid included: keep
shares where other users cannot reach them, as pytest's 0700 temporary directories are). As a normal user
bwrap needs unprivileged user namespaces (allowed by default on Debian 11 and later and on Fedora; refused
where ``user.max_user_namespaces`` is 0, where ``kernel.unprivileged_userns_clone`` is 0, where AppArmor
restricts them (Ubuntu 23.10 and later) and no profile lets bwrap create them, or where a container's seccomp
filter forbids them); the server then runs as that user, mapped to itself, and the guest's files are its.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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

SANDBOX_SHARE = "/share"
"""Where the share is inside the sandbox: the path the guest's sshfs mounts (``host:/share``)."""

DENIED_REQUESTS = ("symlink", "hardlink")
"""SFTP requests the server refuses (``sftp-server -P``; names as ``sftp-server -Q requests`` prints them)."""

_PARENT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cvmfx-sshfs-sandboxes")
"""The one thread that starts every sandbox: bwrap's --die-with-parent fires when the thread that started it
ends, so a mount made in a short-lived thread (a boot) would die with it; this one lives as long as the process."""

USERNS_HELP = (
    "bwrap needs user namespaces: user.max_user_namespaces above 0; as a normal user also "
    "kernel.unprivileged_userns_clone=1 (Debian before 11) and, where AppArmor restricts them (Ubuntu 23.10 and "
    "later), kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile granting /usr/bin/bwrap "
    "'userns'; in a container, a seccomp profile that allows unshare(CLONE_NEWUSER) (Docker's default does not)"
)


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


def bubblewrap() -> str:
    """The host's bwrap program, or an error saying which package provides it (a share is never served without)."""
    found = shutil.which("bwrap")
    if not found:
        raise SharedFolderError(
            "reverse SSHFS serves a shared folder only from inside a bubblewrap sandbox, and bwrap is not in "
            "PATH: apt-get install bubblewrap (the share is never served unconfined)"
        )
    return found


def runtime_files(program: str) -> list[str]:
    """The program and the shared libraries its loader maps (``ldd``): what the sandbox binds read-only."""
    try:
        listed = subprocess.run(
            ["ldd", program], capture_output=True, text=True, timeout=30, env={"LC_ALL": "C", "PATH": os.defpath}
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SharedFolderError(f"cannot list the libraries of {program} for its sandbox (ldd: {e})") from None
    if "not a dynamic executable" in listed.stdout + listed.stderr or "statically linked" in listed.stdout:
        return [program]
    files = [program]
    for line in listed.stdout.splitlines():  # "libc.so.6 => /lib/.../libc.so.6 (0x...)", "/lib64/ld-linux... (0x...)"
        name, arrow, where = line.strip().partition(" => ")
        path = (where if arrow else name).split(" (0x")[0]
        if path == "not found":
            raise SharedFolderError(f"{program} needs {name}, which its loader does not find (ldd: {line.strip()})")
        if path.startswith("/"):
            files.append(path)
    if listed.returncode != 0 or len(files) == 1:
        said = (listed.stderr or listed.stdout).strip() or f"exit status {listed.returncode}"
        raise SharedFolderError(f"cannot list the libraries of {program} for its sandbox (ldd: {said})")
    return files


def sandbox_command(bwrap: str, runtime: list[str], host_dir: Path, passwd_fd: int) -> list[str]:
    """bwrap's argv running ``runtime[0]`` (its libraries the rest, see :func:`runtime_files`) on ``host_dir`` alone.

    The share is the one writable place (at :data:`SANDBOX_SHARE`, the working directory); the root is an
    empty tmpfs made read-only holding the runtime files (read-only), ``/dev/null`` and the ``/etc/passwd`` read
    from ``passwd_fd`` (sftp-server looks its own uid up before it starts). Append the program's arguments.
    """
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--clearenv"]
    argv += ["--as-pid-1", "--die-with-parent", "--new-session"]  # pid 1: the outer bwrap reaps it directly
    for path in runtime:
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--ro-bind-data", str(passwd_fd), "/etc/passwd"]
    argv += ["--dev-bind", "/dev/null", "/dev/null", "--bind", str(host_dir), SANDBOX_SHARE]
    return argv + ["--remount-ro", "/", "--chdir", SANDBOX_SHARE, "--", runtime[0]]


def _passwd() -> int:
    """A pipe's read end holding the sandbox's one-line /etc/passwd: this user, at home in the share."""
    read, write = os.pipe()
    try:
        os.write(write, f"sftp:x:{os.getuid()}:{os.getgid()}:shared folder:{SANDBOX_SHARE}:/nonexistent\n".encode())
    finally:
        os.close(write)
    return read


def serve(host_dir: Path) -> subprocess.Popen[bytes]:
    """OpenSSH's sftp-server on ``host_dir`` alone, sandboxed by bwrap; its stdin/stdout carry SFTP.

    Refuses (:class:`SharedFolderError`, saying what is missing and how to get it) unless the sandbox starts
    here and the server knows, hence refuses, every request in :data:`DENIED_REQUESTS`: checked by running the
    same sandbox once with ``sftp-server -Q requests``. The server dies with the harness process, not with the
    calling thread.
    """
    server, bwrap = sftp_server(), bubblewrap()
    if not host_dir.is_dir():
        raise SharedFolderError(f"shared folder {host_dir} is not a directory on the host")
    runtime = runtime_files(server)
    passwd = _passwd()
    try:
        probe = subprocess.run(
            [*sandbox_command(bwrap, runtime, host_dir, passwd), "-Q", "requests"],
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(passwd,),
        )
    except subprocess.TimeoutExpired:
        raise SharedFolderError(f"bwrap did not start {server} in its sandbox within 30 s") from None
    finally:
        os.close(passwd)
    if probe.returncode != 0:
        said = probe.stderr.strip() or probe.stdout.strip() or f"exit status {probe.returncode}"
        raise SharedFolderError(
            f"reverse SSHFS serves a shared folder only from inside a bubblewrap sandbox, and bwrap could not "
            f"run {server} in one here: {said}. {USERNS_HELP}. The share is never served unconfined"
        )
    unknown = set(DENIED_REQUESTS) - set(probe.stdout.split())
    if unknown:
        raise SharedFolderError(
            f"{server} does not know the SFTP requests {', '.join(sorted(unknown))} (it lists: "
            f"{' '.join(probe.stdout.split())}), so it cannot be told to refuse them; a newer OpenSSH is needed"
        )
    passwd = _passwd()
    try:
        argv = [*sandbox_command(bwrap, runtime, host_dir, passwd), "-e", "-P", ",".join(DENIED_REQUESTS)]
        pipe = subprocess.PIPE
        return _PARENT.submit(subprocess.Popen, argv, stdin=pipe, stdout=pipe, stderr=pipe, pass_fds=(passwd,)).result()
    finally:
        os.close(passwd)


@dataclass
class SshfsMount:
    """One reverse SSHFS mount: the host's sandboxed sftp-server and the guest's sshfs channel, pumped together.

    ``stderr`` holds what the guest's sshfs printed, ``server_stderr`` what the host's bwrap and server did.
    """

    name: str
    guest_path: str
    process: subprocess.Popen[bytes]
    channel: Any
    threads: list[threading.Thread] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    server_stderr: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        """End the mount from the host side: the guest's sshfs sees EOF and unmounts (idempotent).

        The server sees EOF too (the pump closes its stdin) and ends, and its sandbox with it, before this
        returns; a server that does not is terminated (bwrap's --die-with-parent then kills the rest).
        """
        try:
            self.channel.close()
        finally:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        for thread in self.threads:
            thread.join(5)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


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


def _collect_server_stderr(source: Any, into: bytearray) -> None:
    try:
        while chunk := source.read1(4096):
            into.extend(chunk[: max(0, 8192 - len(into))])
    except (OSError, ValueError):
        pass


def mount_sshfs(instance: Any, name: str, host_dir: Path, guest_path: str, *, timeout: float = 30.0) -> SshfsMount:
    """Mount ``host_dir`` at ``guest_path`` in the instance by reverse SSHFS; wait until the mount is there.

    ``instance`` is an :class:`~cernvm_fixtures.instance.Instance` whose transport is SSH. The host side is
    :func:`serve`'s sandboxed server: the guest reaches ``host_dir`` and nothing else. Raises
    :class:`SharedFolderError` naming the instance and what is missing (sshfs or /dev/fuse in the guest,
    sftp-server or a working bwrap on the host) or what sshfs printed when the mount did not appear in time.
    """
    sftp_server()
    bubblewrap()
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
    try:
        process = serve(host_dir)
    except BaseException:
        channel.close()
        raise
    mount = SshfsMount(name, guest_path, process, channel)
    guest = shlex.quote(guest_path)
    remote = shlex.quote(f"host:{SANDBOX_SHARE}")
    try:
        # sshfs >= 3.7 calls the option "passive", older ones (CernVM 4's EL7) "slave"
        channel.exec_command(
            f"mkdir -p {guest} && if sshfs --help 2>&1 | grep -q -- '-o passive'; then mode=passive; else mode=slave;"
            f" fi && exec sshfs -f -o $mode {remote} {guest}"
        )
    except BaseException:
        mount.close()
        raise
    mount.threads = [
        threading.Thread(target=_pump_to_channel, args=(process.stdout, channel), daemon=True),
        threading.Thread(target=_pump_from_channel, args=(channel, process.stdin), daemon=True),
        threading.Thread(target=_collect_stderr, args=(channel, mount.stderr), daemon=True),
        threading.Thread(target=_collect_server_stderr, args=(process.stderr, mount.server_stderr), daemon=True),
    ]
    for thread in mount.threads:
        thread.start()
    deadline = time.monotonic() + timeout
    check = f"grep -q ' {guest_path} fuse.sshfs ' /proc/mounts"
    while not instance.run(check, timeout=30).succeeded:
        if time.monotonic() > deadline or process.poll() is not None or channel.exit_status_ready():
            mount.close()
            said = mount.stderr.decode(errors="replace").strip() or "nothing"
            server_said = mount.server_stderr.decode(errors="replace").strip() or "nothing"
            raise SharedFolderError(
                f"instance {instance.name}: reverse SSHFS of {host_dir} on {guest_path} did not appear within "
                f"{timeout:.0f} s; the guest's sshfs said: {said}; the host's sandboxed sftp-server said: "
                f"{server_said}"
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
