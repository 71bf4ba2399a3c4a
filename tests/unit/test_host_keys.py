"""Host keys are never trusted silently: checked against the console's first key block, then pinned."""

from __future__ import annotations

import socket
from pathlib import Path

import paramiko
import pytest

from cernvm_fixtures.errors import PermanentError
from cernvm_fixtures.providers.base import Machine
from cernvm_fixtures.transport.ssh import HostKeyMismatch, HostKeyUnknown, SSHTransport


def key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)


def line(k: paramiko.PKey) -> str:
    return f"{k.get_name()} {k.get_base64()}"


def block(*keys: paramiko.PKey) -> str:
    body = "".join(f"{line(k)} root@host\n" for k in keys)
    return f"-----BEGIN SSH HOST KEY KEYS-----\n{body}-----END SSH HOST KEY KEYS-----\n"


def transport(console: list[list[str] | None], trust_first: bool = False) -> SSHTransport:
    """A transport whose instance announces ``console[0]`` (a list the test may change)."""
    return SSHTransport("127.0.0.1", 22, "root", Path("/nonexistent"), lambda: console[0], trust_first=trust_first)


def test_no_key_block_yet_is_not_trusted_but_retried():
    error = pytest.raises(HostKeyUnknown, transport([None])._verify, key())
    assert not isinstance(error.value, PermanentError), "the login step must keep waiting for the block"
    assert "trust-first" in str(error.value) and "HOST KEY KEYS" in str(error.value)


def test_trust_first_only_when_the_target_says_so_and_then_reported():
    offered, other = key(), key()
    ssh = transport([None], trust_first=True)
    ssh._verify(offered)
    assert ssh.verified is False and ssh.pinned_key == line(offered)
    with pytest.raises(HostKeyMismatch, match="pinned"):
        ssh._verify(other)


def test_a_verified_key_is_pinned_for_reconnects():
    offered, forged = key(), key()
    console = [[line(offered)]]
    ssh = transport(console)
    ssh._verify(offered)
    assert ssh.verified is True
    console[0] = None  # the block scrolled out of the console window
    ssh._verify(offered)
    with pytest.raises(HostKeyMismatch, match="pinned"):
        ssh._verify(forged)
    console[0] = [line(forged)]  # or a later block announces another key
    with pytest.raises(HostKeyMismatch):
        ssh._verify(forged)


def test_a_key_not_announced_is_refused():
    with pytest.raises(HostKeyMismatch, match="not among"):
        transport([[line(key())]])._verify(key())


class ConsoleMachine(Machine):
    """A machine whose console is a given text (no engine)."""

    def __init__(self, console: str) -> None:
        self.console = console

    def console_log(self) -> str:
        return self.console

    wait_running = transport = login_command = None  # type: ignore[assignment]


def test_the_first_block_wins_and_must_start_its_lines():
    real, forged = key(), key()
    console = "boot\n" + block(real) + "later, a process writes to the console:\n" + block(forged)
    assert ConsoleMachine(console).host_keys() == [f"{line(real)} root@host"]
    inline = "echo x -----BEGIN SSH HOST KEY KEYS-----\n" + f"{line(forged)}\n" + "-----END SSH HOST KEY KEYS-----\n"
    assert ConsoleMachine(inline).host_keys() is None
    assert ConsoleMachine(inline + block(real)).host_keys() == [f"{line(real)} root@host"]
    assert ConsoleMachine("no keys yet\n").host_keys() is None


def test_keys_handed_over_in_the_context_win_over_the_console():
    real, forged = key(), key()
    machine = ConsoleMachine("boot\n" + block(forged))
    machine.context_host_keys = [line(real)]
    assert machine.host_keys() == [line(real)]
    assert ConsoleMachine("silent serial port").host_keys() is None


def test_only_the_announced_key_type_is_asked_for():
    """A server holding several host keys (an image's own RSA/ECDSA keys besides the handed-over Ed25519) must be
    asked for the announced type, else it presents whichever it prefers and is refused."""
    import paramiko

    ssh = transport([[line(key())]])
    client = paramiko.Transport(socket.socketpair()[0])
    try:
        ssh._offer_announced_types(client)
        types = set(client.get_security_options().key_types)
        assert types and types <= {"ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"}, types  # key() makes RSA keys
    finally:
        client.close()
