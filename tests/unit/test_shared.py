"""Reverse SSHFS plumbing: the host's real sftp-server pumped to a channel, errors that name what is missing."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

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
        assert "sshfs -f -o $mode" in channel.command and f"host:{host_dir}" in channel.command
        assert "/mnt/shared/data" in channel.command
        sftp = paramiko.SFTPClient(GuestEnd(theirs))  # what sshfs -o slave does in the guest
        assert sftp.open(str(host_dir / "from-host")).read() == b"hello"
        with sftp.open(str(host_dir / "from-guest"), "w") as f:
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
