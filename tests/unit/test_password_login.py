"""Trying a password login (the release checklist's "root cannot log in with a password"): against an in-process
SSH server on 127.0.0.1, on connections of their own, only after the host key check, never showing the password."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import paramiko
import pytest

from cernvm_fixtures.errors import Unsupported
from cernvm_fixtures.transport.base import Transport
from cernvm_fixtures.transport.ssh import HostKeyMismatch, SSHTransport

HOST_KEY = paramiko.RSAKey.generate(1024)
SECRET = "s3cret-not-to-be-shown"


class Server(paramiko.ServerInterface):
    """Offers ``methods``; accepts root with SECRET when it offers passwords; records the passwords it was sent."""

    def __init__(self, methods: str, received: list[str]) -> None:
        self.methods, self.received = methods, received

    def get_allowed_auths(self, username: str) -> str:
        return self.methods

    def check_auth_password(self, username: str, password: str) -> int:
        self.received.append(password)
        ok = "password" in self.methods.split(",") and (username, password) == ("root", SECRET)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        return paramiko.InteractiveQuery("", "", ("Password: ", False))

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        self.received.extend(responses)
        return paramiko.AUTH_SUCCESSFUL if list(responses) == [SECRET] else paramiko.AUTH_FAILED


@pytest.fixture
def server():
    """Start a server offering the given methods; yields (port, passwords received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[str] = []
    threads: list[threading.Thread] = []
    state = {"methods": "publickey"}

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(HOST_KEY)
            try:
                transport.start_server(server=Server(state["methods"], received))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    threads.append(thread)

    def start(methods: str) -> tuple[int, list[str]]:
        state["methods"] = methods
        return listener.getsockname()[1], received

    yield start
    listener.close()


def ssh(port: int, key: paramiko.PKey = HOST_KEY) -> SSHTransport:
    announced = [f"{key.get_name()} {key.get_base64()}"]
    return SSHTransport("127.0.0.1", port, "root", Path("/nonexistent"), lambda: announced, connect_timeout=5)


def test_keys_only_server_offers_no_password_and_refuses_it(server):
    port, received = server("publickey")
    transport = ssh(port)
    assert transport.auth_methods("root") == ["publickey"]
    assert transport.password_login("root", SECRET) is False
    assert received == [], "a server that does not offer passwords is not sent one"


def test_password_server_accepts_only_the_right_password(server, caplog):
    port, received = server("publickey,password")
    transport = ssh(port)
    assert "password" in transport.auth_methods("root")
    with caplog.at_level(logging.DEBUG):
        assert transport.password_login("root", "wrong") is False
        assert transport.password_login("root", SECRET) is True
    assert received == ["wrong", SECRET]
    assert SECRET not in caplog.text, "the password is never logged"


def test_no_password_goes_to_a_server_with_another_host_key(server):
    port, received = server("publickey,password")
    with pytest.raises(HostKeyMismatch) as error:
        ssh(port, key=paramiko.RSAKey.generate(1024)).password_login("root", SECRET)
    assert received == [] and SECRET not in str(error.value)


def test_transports_without_a_login_service_say_so():
    class Exec(Transport):
        def unreachable(self):
            return None

        def connect(self):
            pass

        def run(self, command, *, timeout=None, stdin=None):
            raise AssertionError

        def close(self):
            pass

    with pytest.raises(Unsupported, match="no SSH"):
        Exec().password_login("root", SECRET)
    with pytest.raises(Unsupported, match="no SSH"):
        Exec().auth_methods("root")
    with pytest.raises(Unsupported, match="no SSH"):
        Exec().key_login("alice")


def test_keyboard_interactive_only_is_answered_with_the_password(server):
    port, received = server("publickey,keyboard-interactive")
    transport = ssh(port)
    assert transport.password_login("root", "wrong") is False
    assert transport.password_login("root", SECRET) is True
    assert received == ["wrong", SECRET]


class KeyServer(paramiko.ServerInterface):
    """Lets ``user`` in with ``key`` only, and answers ``id -un`` with the user's name."""

    def __init__(self, user: str, key: paramiko.PKey) -> None:
        self.user, self.key = user, key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == self.user and key.get_base64() == self.key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        def answer() -> None:
            channel.sendall(f"{self.user}\n".encode() if command == b"id -un" else b"")
            channel.send_exit_status(0)
            channel.shutdown_write()  # EOF, not a close: the client may not have seen the exec request's answer yet

        threading.Thread(target=answer, daemon=True).start()
        return True


def test_key_login_as_a_user_of_the_context(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    key_file = tmp_path / "run_key"
    key_file.write_bytes(pem)
    run_key = paramiko.PKey.from_path(key_file)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(HOST_KEY)
            try:
                transport.start_server(server=KeyServer("alice", run_key))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    threading.Thread(target=serve, daemon=True).start()
    announced = [f"{HOST_KEY.get_name()} {HOST_KEY.get_base64()}"]
    transport = SSHTransport(
        "127.0.0.1", listener.getsockname()[1], "root", key_file, lambda: announced, connect_timeout=5
    )
    try:
        assert transport.key_login("alice") == "alice"
        assert transport.key_login("bob") is None, "a user the key is not authorized for is refused"
    finally:
        listener.close()
