"""Reverse SSHFS plumbing: the host's real sftp-server pumped to a channel, errors that name what is missing,
and a hostile guest that speaks SFTP to it and cannot reach past the share."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from paramiko.sftp import CMD_EXTENDED

from cernvm_fixtures import shared
from cernvm_fixtures.shared import SharedFolderError, mount_shared_folders, mount_sshfs


class SocketChannel:
    """One end of a socket pair standing in for the SSH channel; the test speaks SFTP on the other end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.command = ""

    def exec_command(self, command: str) -> None:
        self.command = command

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def exit_status_ready(self) -> bool:
        return False

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # as closing a paramiko channel does, wakes a reader blocked in recv
        except OSError:
            pass
        self.sock.close()


class GuestEnd:
    """The guest's end for paramiko's SFTP client (which wants a channel's name for its log lines)."""

    def __init__(self, sock: socket.socket) -> None:
        self.send, self.recv, self.close = sock.send, sock.recv, sock.close

    def get_name(self) -> str:
        return "guest-sshfs"


class FakeInstance:
    """What mount_sshfs needs of an Instance: run(), name, profile, expected(), shared_folders, transport."""

    def __init__(self, channel=None, *, has_sshfs=True, has_fuse=True, folders=None, mechanism="sshfs"):
        self.name = "vm-1"
        self.profile = SimpleNamespace(name="p")
        self.shared_folders = folders or {}
        self.commands: list[str] = []
        self.has_sshfs, self.has_fuse, self.mechanism = has_sshfs, has_fuse, mechanism
        self.transport = SimpleNamespace(open_channel=lambda: channel)

    def expected(self, key):
        return {"shared.mechanism": self.mechanism, "shared.path": "/mnt/shared/{name}"}.get(key)

    def run(self, command, timeout=None):
        self.commands.append(command)
        if command.startswith("command -v sshfs"):
            out = "/usr/bin/sshfs\n" if self.has_sshfs else ""
            return SimpleNamespace(succeeded=self.has_sshfs and self.has_fuse, stdout=out)
        return SimpleNamespace(succeeded=True, stdout="")


def test_host_folder_is_served_through_the_channel(tmp_path):
    shared.sftp_server()  # the host must have it (dev installs openssh-sftp-server)
    host_dir = tmp_path / "data"
    host_dir.mkdir()
    (host_dir / "from-host").write_text("hello")
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    instance = FakeInstance(channel, folders={"data": host_dir})
    mounts = mount_shared_folders(instance)
    try:
        assert [m.guest_path for m in mounts] == ["/mnt/shared/data"]
        assert "sshfs -f -o $mode" in channel.command and "host:/share" in channel.command
        assert "/mnt/shared/data" in channel.command
        sftp = paramiko.SFTPClient(GuestEnd(theirs))  # what sshfs -o slave does in the guest
        assert sftp.open("/share/from-host").read() == b"hello"
        with sftp.open("/share/from-guest", "w") as f:
            f.write(b"token")
        assert (host_dir / "from-guest").read_bytes() == b"token"
        sftp.close()
    finally:
        for mount in mounts:
            mount.close()
        theirs.close()
    assert all(m.process.poll() is not None for m in mounts), "sftp-server must be gone after close()"


@pytest.mark.parametrize("has_sshfs,what", [(False, "no sshfs"), (True, "no /dev/fuse")])
def test_guest_without_sshfs_or_fuse_is_named(tmp_path, has_sshfs, what):
    instance = FakeInstance(has_sshfs=has_sshfs, has_fuse=False)
    with pytest.raises(SharedFolderError) as e:
        mount_sshfs(instance, "data", tmp_path, "/mnt/shared/data")
    assert f"instance vm-1: profile 'p' says shared.mechanism = 'sshfs', but the guest has {what}" in str(e.value)


def test_host_without_sftp_server_says_which_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "SFTP_SERVERS", (str(tmp_path / "nothing"),))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SharedFolderError, match="apt-get install openssh-sftp-server"):
        mount_sshfs(FakeInstance(), "data", tmp_path, "/mnt/shared/data")


def test_other_mechanisms_need_no_harness_mount(tmp_path):
    instance = FakeInstance(folders={"data": Path(tmp_path)}, mechanism="9p")
    assert mount_shared_folders(instance) == [] and instance.commands == []


# A hostile guest: it runs anything in place of sshfs and speaks SFTP to the host's server through the channel.


@dataclass
class Served:
    """A share served to a hostile guest, and a host directory beside it holding what the guest must not reach."""

    sftp: paramiko.SFTPClient
    root: str  # the share as the server names it: what the guest's sshfs is told to mount
    share: Path
    outside: Path
    secret: Path
    mount: shared.SshfsMount


def served_path(command: str) -> str:
    """The remote path the guest's sshfs is told to mount (``host:PATH`` in its command)."""
    return next(word for word in shlex.split(command) if word.startswith("host:"))[len("host:") :]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    share, outside = tmp_path / "share", tmp_path / "outside-the-share"
    share.mkdir()
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("the host's secret")
    (share / "inside").write_text("shared")
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    mount = mount_sshfs(FakeInstance(channel), "data", share, "/mnt/shared/data")
    sftp = paramiko.SFTPClient(GuestEnd(theirs))
    try:
        yield Served(sftp, served_path(channel.command), share, outside, secret, mount)
    finally:
        sftp.close()
        mount.close()
        theirs.close()


def hardlink(sftp: paramiko.SFTPClient, old: str, new: str) -> None:
    """OpenSSH's hardlink@openssh.com extension, which paramiko's client does not wrap."""
    sftp._request(CMD_EXTENDED, "hardlink@openssh.com", old, new)


def outside_paths(s: Served, name: str) -> list[str]:
    """Ways a guest names a host file beside the share: up from the share, the host's absolute path, /proc."""
    return [f"{s.root}/../{s.outside.name}/{name}", str(s.outside / name), f"/proc/self/root{s.outside / name}"]


@pytest.mark.attack_row("a hostile guest through a shared folder", "kvm")
def test_a_guest_cannot_read_outside_the_share(served):
    for path in outside_paths(served, "secret"):
        with pytest.raises(OSError):
            served.sftp.open(path).read()
            pytest.fail(f"the guest read {path}")
        with pytest.raises(OSError):
            served.sftp.stat(path)
    assert served.outside.name not in served.sftp.listdir(f"{served.root}/.."), "the guest lists the share's parent"


@pytest.mark.attack_row("a hostile guest through a shared folder", "kvm")
def test_a_guest_cannot_write_outside_the_share(served):
    for i, path in enumerate(outside_paths(served, "planted")):
        with pytest.raises(OSError):
            with served.sftp.open(path.replace("planted", f"planted-{i}"), "w") as f:
                f.write(b"from the guest")
        with pytest.raises(OSError):
            served.sftp.mkdir(path.replace("planted", f"dir-{i}"))
        with pytest.raises(OSError):
            served.sftp.rename(f"{served.root}/inside", path.replace("planted", f"moved-{i}"))
    assert sorted(p.name for p in served.outside.iterdir()) == ["secret"]
    assert (served.share / "inside").read_text() == "shared"


@pytest.mark.attack_row("a hostile guest through a shared folder", "kvm")
def test_a_guest_cannot_link_to_outside_the_share(served):
    targets = [str(served.secret), f"../{served.outside.name}/secret", f"{served.root}/../{served.outside.name}/secret"]
    for i, target in enumerate(targets):
        with pytest.raises(PermissionError):  # refused as a request, whatever the target
            served.sftp.symlink(target, f"{served.root}/symlink-{i}")
        with pytest.raises(OSError):
            served.sftp.open(f"{served.root}/symlink-{i}").read()  # and read through it
        for old in outside_paths(served, "secret"):
            with pytest.raises(PermissionError):
                hardlink(served.sftp, old, f"{served.root}/hardlink-{i}")
    with pytest.raises(PermissionError):  # links are refused outright, even within the share
        served.sftp.symlink("inside", f"{served.root}/symlink-inside")
    with pytest.raises(PermissionError):
        hardlink(served.sftp, f"{served.root}/inside", f"{served.root}/hardlink-inside")
    assert sorted(p.name for p in served.share.iterdir()) == ["inside"]
    assert served.secret.stat().st_nlink == 1


@pytest.mark.attack_row("a hostile guest through a shared folder", "kvm")
def test_a_symlink_already_in_the_share_does_not_lead_outside(served):
    # placed by the host, or by the guest some other way: absolute, relative, and to a directory
    (served.share / "absolute").symlink_to(served.secret)
    (served.share / "relative").symlink_to(Path("..") / served.outside.name / "secret")
    (served.share / "victim").symlink_to(served.outside / "victim")
    (served.share / "directory").symlink_to(served.outside)
    (served.share / "system").symlink_to("/etc/passwd")
    for name in ("absolute", "relative"):
        with pytest.raises(OSError):
            served.sftp.open(f"{served.root}/{name}").read()
            pytest.fail(f"the guest read the host's secret through the symlink {name}")
    with pytest.raises(OSError):
        with served.sftp.open(f"{served.root}/victim", "w") as f:
            f.write(b"from the guest")
    with pytest.raises(OSError):
        served.sftp.listdir(f"{served.root}/directory")
    with pytest.raises(OSError):
        served.sftp.open(f"{served.root}/directory/secret").read()
    # an absolute symlink resolves inside the server's sandbox, where no host file but the share exists
    assert served.sftp.open(f"{served.root}/system").read() != Path("/etc/passwd").read_bytes()
    assert sorted(p.name for p in served.outside.iterdir()) == ["secret"]


def test_a_guest_works_normally_inside_the_share(served):
    sftp, root = served.sftp, served.root
    assert sftp.open(f"{root}/inside").read() == b"shared"
    sftp.mkdir(f"{root}/dir")
    with sftp.open(f"{root}/dir/new", "w") as f:
        f.write(b"from the guest")
    sftp.rename(f"{root}/dir/new", f"{root}/dir/renamed")
    sftp.posix_rename(f"{root}/dir/renamed", f"{root}/final")
    sftp.chmod(f"{root}/final", 0o600)
    sftp.truncate(f"{root}/final", 4)
    sftp.utime(f"{root}/final", (1_000_000_000, 1_000_000_000))
    assert sorted(sftp.listdir(root)) == ["dir", "final", "inside"]
    assert (served.share / "final").read_bytes() == b"from"
    assert (served.share / "final").stat().st_mode & 0o777 == 0o600
    assert (served.share / "final").stat().st_mtime == 1_000_000_000
    sftp.rmdir(f"{root}/dir")
    sftp.remove(f"{root}/inside")
    assert sorted(p.name for p in served.share.iterdir()) == ["final"]
    assert served.secret.read_text() == "the host's secret"


def test_the_sandbox_lets_the_server_write_only_to_the_share(tmp_path):
    runtime = ["/usr/lib/openssh/sftp-server", "/lib/x86_64-linux-gnu/libc.so.6"]
    argv = shared.sandbox_command("/usr/bin/bwrap", runtime, tmp_path, 7)
    writable = [argv[i : i + 3] for i, word in enumerate(argv) if word in ("--bind", "--bind-try", "--dev-bind")]
    assert writable == [["--dev-bind", "/dev/null", "/dev/null"], ["--bind", str(tmp_path), "/share"]]
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--ro-bind"] == runtime
    for flags in (
        ["--unshare-all"],
        ["--unshare-user"],
        ["--disable-userns"],
        ["--die-with-parent"],
        ["--cap-drop", "ALL"],
        ["--clearenv"],
        ["--remount-ro", "/"],
        ["--chdir", "/share"],
    ):
        assert any(argv[i : i + len(flags)] == flags for i in range(len(argv))), flags
    assert "--share-net" not in argv and argv[-2:] == ["--", runtime[0]]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_no_process_of_the_sandbox_outlives_the_mount(served):
    served.sftp.listdir(served.root)  # the server is up
    sandbox = descendants(served.mount.process.pid)
    assert len(sandbox) >= 2, "bwrap and the server it runs"
    served.mount.close()
    assert [pid for pid in sandbox if Path(f"/proc/{pid}").exists()] == []


def test_the_server_outlives_the_thread_that_mounted_it(tmp_path):
    # bwrap's --die-with-parent fires when the *thread* that started it ends; mounts are made in boot threads
    ours, theirs = socket.socketpair()
    made: list[shared.SshfsMount] = []
    thread = threading.Thread(
        target=lambda: made.append(mount_sshfs(FakeInstance(SocketChannel(ours)), "d", tmp_path, "/m"))
    )
    thread.start()
    thread.join()
    try:
        (tmp_path / "file").write_text("still served")
        sftp = paramiko.SFTPClient(GuestEnd(theirs))
        assert sftp.open(f"{shared.SANDBOX_SHARE}/file").read() == b"still served"
        sftp.close()
    finally:
        made[0].close()
        theirs.close()


def test_without_bwrap_nothing_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # sftp-server is still found where Debian installs it
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    with pytest.raises(SharedFolderError, match="apt-get install bubblewrap") as e:
        mount_sshfs(FakeInstance(channel), "data", tmp_path, "/mnt/shared/data")
    assert "never served unconfined" in str(e.value) and channel.command == ""
    ours.close()
    theirs.close()


def test_a_bwrap_that_cannot_make_namespaces_refuses_the_mount(tmp_path, monkeypatch):
    # the real bwrap, run where no user namespace may be created (a child user namespace whose limit is 0)
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\nexec unshare --user --map-root-user sh -c "
        f'\'echo 0 >/proc/sys/user/max_user_namespaces && exec {shutil.which("bwrap")} "$@"\' sh "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    ours, theirs = socket.socketpair()
    channel = SocketChannel(ours)
    with pytest.raises(SharedFolderError) as e:
        mount_sshfs(FakeInstance(channel), "data", tmp_path, "/mnt/shared/data")
    message = str(e.value)
    assert "bwrap could not run" in message and "max_*_namespaces exceeded" in message, message
    assert "user.max_user_namespaces" in message and "never served unconfined" in message
    assert channel.command == "", "the guest must not be told to mount anything"
    theirs.close()


def test_a_server_that_cannot_refuse_links_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "DENIED_REQUESTS", ("symlink", "hardlink", "no-such-request"))
    with pytest.raises(SharedFolderError, match="does not know the SFTP requests no-such-request"):
        shared.serve(tmp_path)


def test_a_missing_host_directory_is_named(tmp_path):
    with pytest.raises(SharedFolderError, match=f"shared folder {tmp_path / 'nothing'} is not a directory"):
        shared.serve(tmp_path / "nothing")
