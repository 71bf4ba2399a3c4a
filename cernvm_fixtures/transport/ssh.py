"""SSH transport on paramiko: one connection per instance, commands through long-lived shell sessions.

The socket has TCP_NODELAY (paramiko sets no socket options, and Nagle's
algorithm meeting delayed ACKs costs ~45 ms per command); commands without
stdin go to an idle :class:`ShellSession` (about a millisecond each), commands
with stdin get a channel of their own.
"""

from __future__ import annotations

import logging
import re
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from ..errors import CernvmError, CommandTimeout, PermanentError
from .base import Login, Result, Transport
from .shell import STDERR, STDOUT, SessionPool, ShellSession, kill_tree_command

log = logging.getLogger(__name__)

HostKeys = Callable[[], "list[str] | None"]
"""Returns the instance's host public keys (``ssh-ed25519 AAAA...``) as it announced them, or None if unknown."""


class HostKeyMismatch(PermanentError):
    """The server presented a key the instance did not announce: refuse to talk to it."""


class HostKeyUnknown(CernvmError):
    """The instance has not announced its host keys yet: nothing to check the server's key against (retried)."""


class SSHTransport(Transport):
    """Commands over SSH with key authentication and host key verification."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_file: Path,
        host_keys: HostKeys,
        *,
        connect_timeout: float = 10.0,
        sock_factory: Callable[[], socket.socket | paramiko.Channel] | None = None,
        trust_first: bool = False,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.key_file = key_file
        self._host_keys = host_keys
        self.connect_timeout = connect_timeout
        self._sock_factory = sock_factory
        self._client: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self.trust_first = trust_first
        """Accept the first key offered when the instance announced none (target key ``host_key = "trust-first"``)."""
        self.verified: bool | None = None
        """True: host key matched what the instance announced; False: trusted on first use (only with trust_first)."""
        self._pinned: str | None = None
        self._sessions = SessionPool(self._new_session, self._kill)
        self.boot_id: str | None = None
        """The instance's boot id, read at each (re)connect: a change means it rebooted."""

    def __repr__(self) -> str:
        return f"SSHTransport({self.user}@{self.host}:{self.port})"

    def _socket(self) -> socket.socket | paramiko.Channel:
        if self._sock_factory:
            return self._sock_factory()
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def unreachable(self) -> str | None:
        try:
            with self._socket() as sock:
                sock.settimeout(min(self.connect_timeout, 3.0))
                banner = sock.recv(256)
        except OSError as e:
            return f"{self.host}:{self.port}: {e}"
        if banner.startswith(b"SSH-"):
            return None
        return f"{self.host}:{self.port}: no SSH banner (got {banner[:40]!r})"

    def connect(self) -> None:
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> None:
        if self._client is not None and self._client.is_active():
            return
        self._drop()
        client = self._handshake()
        try:
            key = paramiko.PKey.from_path(self.key_file)
            client.auth_publickey(self.user, key)
        except BaseException:
            client.close()
            raise
        self._client = client
        self.boot_id = self._read_boot_id(client)

    def _handshake(self) -> paramiko.Transport:
        """A new connection, not logged in yet, whose server presented a host key the instance announced (the
        pinned one once a key was accepted)."""
        client = paramiko.Transport(self._socket())
        try:
            self._offer_announced_types(client)
            client.banner_timeout = self.connect_timeout
            client.start_client(timeout=self.connect_timeout)
            self._verify(client.get_remote_server_key())
        except BaseException:
            client.close()
            raise
        return client

    def auth_methods(self, user: str) -> list[str]:
        """What the server offers ``user``: asked with SSH's ``none`` method on a connection of its own."""
        client = self._handshake()
        try:
            try:
                client.auth_none(user)
            except paramiko.BadAuthenticationType as e:
                return list(e.allowed_types)
            return ["none"]  # the server let the user in without any credential
        finally:
            client.close()

    def password_login(self, user: str, password: str) -> bool:
        """A password login on a connection of its own (after the host key check, so the password goes only to the
        instance), closed at once. The password is sent only where the server offers ``password`` (or only
        ``keyboard-interactive``, which is then answered with it); a server letting the user in with no
        credential at all counts as accepting."""
        client = self._handshake()
        try:
            try:
                client.auth_none(user)
                return True
            except paramiko.BadAuthenticationType as e:
                allowed = list(e.allowed_types)
            try:
                if "password" in allowed:
                    client.auth_password(user, password, fallback=False)
                elif "keyboard-interactive" in allowed:
                    client.auth_interactive(user, lambda _title, _text, prompts: [password for _ in prompts])
                else:
                    return False
            except paramiko.AuthenticationException:
                return False
            return client.is_authenticated()
        finally:
            client.close()

    def key_login(self, user: str) -> str | None:
        """A login as ``user`` with the run's key on a connection of its own (after the host key check), closed at
        once: what ``id -un`` prints there, or None when the server refuses the key."""
        client = self._handshake()
        try:
            try:
                client.auth_publickey(user, paramiko.PKey.from_path(self.key_file))
            except paramiko.AuthenticationException:
                return None
            chan = client.open_session(timeout=self.connect_timeout)
            try:
                chan.settimeout(self.connect_timeout)
                chan.exec_command("id -un")
                return chan.makefile("rb").read().decode(errors="replace").strip()
            finally:
                chan.close()
        finally:
            client.close()

    def _read_boot_id(self, client: paramiko.Transport) -> str | None:
        chan = client.open_session(timeout=self.connect_timeout)
        try:
            chan.settimeout(self.connect_timeout)
            chan.exec_command("cat /proc/sys/kernel/random/boot_id")
            data = chan.makefile("rb").read().strip()
            return data.decode() if chan.recv_exit_status() == 0 and data else None
        finally:
            chan.close()

    def _offer_announced_types(self, client: paramiko.Transport) -> None:
        """Ask only for host key types the instance announced: a server holding several (an image's own keys kept
        with ``ssh_deletekeys: false``, or made at boot by something other than cloud-init) then presents the
        announced one, not whichever it prefers."""
        announced = self._pinned and [self._pinned] or self._host_keys() or []
        options = client.get_security_options()
        wanted = {k.split()[0] for k in announced if k.split()}
        types = [t for t in options.key_types if t in wanted or (t.startswith("rsa-sha2") and "ssh-rsa" in wanted)]
        if types:
            options.key_types = types

    def _verify(self, key: paramiko.PKey) -> None:
        """Accept only a key the instance announced (or, with ``trust_first``, the first one offered), then pin it."""
        offered = f"{key.get_name()} {key.get_base64()}"
        if self._pinned is not None:
            if offered != self._pinned:
                raise HostKeyMismatch(
                    f"{self}: server offered host key {key.fingerprint}, not the key pinned at the first login"
                    " (a reconnect must present the same key for the instance's lifetime)"
                )
            return
        announced = self._host_keys()
        if announced is None:
            if not self.trust_first:
                raise HostKeyUnknown(
                    f"{self}: the instance has not printed its host keys on the console yet"
                    " (-----BEGIN SSH HOST KEY KEYS-----); not trusting the key offered"
                    ' (host_key = "context", the default, hands the instance a key instead; "trust-first" trusts'
                    " the first key offered)"
                )
            log.warning('%s: host key %s trusted on first use (host_key = "trust-first")', self, key.fingerprint)
            self.verified = False
        elif any(" ".join(k.split()[:2]) == offered for k in announced):
            self.verified = True
        else:
            raise HostKeyMismatch(
                f"{self}: server offered host key {key.fingerprint}, "
                f"which is not among the {len(announced)} key(s) the instance was given or announced"
            )
        self._pinned = offered

    @property
    def pinned_key(self) -> str | None:
        """The host key (``type base64``) every connection to this instance must present, once one was accepted."""
        return self._pinned

    def _drop(self) -> None:
        self._sessions.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _open_channel(self) -> paramiko.Channel:
        """A new channel, reconnecting first if the connection dropped (e.g. the instance rebooted)."""
        with self._lock:
            self._connect_locked()
            assert self._client is not None
            try:
                return self._client.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError):
                self._drop()
                self._connect_locked()
                assert self._client is not None
                return self._client.open_session(timeout=self.connect_timeout)

    def _new_session(self) -> ShellSession:
        channel = self._open_channel()
        channel.exec_command("exec /bin/sh")
        return ShellSession(_ParamikoChannel(channel), self.connect_timeout)

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            return self.exec(command, timeout=timeout, stdin=stdin)
        return self._sessions.run(command, timeout)

    def _kill(self, session: ShellSession) -> None:
        """Stop a stuck command: kill its shell and every descendant, from a second channel."""
        problem = self._run_kill(session.kill_command())
        if problem:
            log.warning("%s: a timed-out command's processes may survive%s", self, problem)

    def exec(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run a command on a channel of its own (the slow path: for stdin, and when the shell is stuck).

        stdin is written from a thread, so a command that never reads it still ends at ``timeout``; a
        command that runs past it is killed with its descendants and their sessions (from another channel).
        """
        tag = secrets.token_hex(8)
        chan = self._open_channel()
        writer = None
        try:
            chan.exec_command(f"printf 'cvmfx:{tag}:%d:' $$ >&2; exec sh -c {shlex.quote(command)}")
            writer = threading.Thread(target=_feed, args=(chan, stdin), name=f"stdin {self}", daemon=True)
            writer.start()
            out, err = bytearray(), bytearray()
            reader = _ParamikoChannel(chan)
            deadline = None if timeout is None else time.monotonic() + timeout
            open_streams = {STDOUT, STDERR}
            while open_streams:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    pid = _announced_pid(err, tag)
                    problem = self._kill_pid(pid) if pid else "; its pid was not known, so it may still run"
                    raise CommandTimeout(
                        f"{self}: command {command!r} still running after {timeout} s; stopped it{problem}"
                    )
                try:
                    stream, chunk = reader.recv(left)
                except TimeoutError:
                    continue
                if not chunk:
                    open_streams.clear()
                    continue
                (out if stream == STDOUT else err).extend(chunk)
            prefix = re.match(rb"cvmfx:" + tag.encode() + rb":\d+:", err)
            return Result(command, chan.recv_exit_status(), bytes(out), bytes(err[prefix.end() if prefix else 0 :]))
        finally:
            chan.close()
            if writer is not None:
                writer.join(timeout=5)

    def _kill_pid(self, pid: int) -> str:
        """Kill a command run by :meth:`exec` and everything it started; '' or why that failed."""
        return self._run_kill(kill_tree_command(pid))

    def _run_kill(self, command: str) -> str:
        """Run a kill command on a channel of its own; '' or why that failed."""
        try:
            result = self.exec(command, timeout=self.connect_timeout)
        except Exception as e:  # noqa: BLE001 - only for the message
            return f" (could not kill it: {e})"
        return "" if result.succeeded else f" (could not kill it: exit {result.exit_status}: {result.stderr[-300:]})"


def _announced_pid(err: bytes | bytearray, tag: str) -> int | None:
    """The pid :meth:`SSHTransport.exec`'s prefix printed at the start of stderr, if it came."""
    match = re.match(rb"cvmfx:" + tag.encode() + rb":(\d+):", err)
    return int(match.group(1)) if match else None


def _feed(chan: paramiko.Channel, data: bytes | None) -> None:
    """Write a command's stdin, then end it (runs in a thread of its own: the command may never read it)."""
    try:
        if data:
            chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command exited or was killed before reading everything


def ssh_login(
    user: str,
    host: str,
    port: int,
    key_file: Path,
    host_keys: Sequence[str],
    directory: Path,
    *,
    jump_host: str | None = None,
    jump_key: Path | None = None,
    jump_known_hosts: Path | None = None,
) -> Login:
    """The ``ssh`` a person runs to log in: key auth, and only the host keys given (``StrictHostKeyChecking=yes``).

    Writes ``directory/known_hosts`` with ``host_keys`` (``type base64 [comment]``, as the instance announced
    them; none: ssh refuses, nothing is trusted silently). A jump host (``[user@]host[:port]``) goes to ``-J``;
    its key and known_hosts, if given, to ``directory/ssh_config`` (``-F``): no ProxyCommand, no shell.
    """
    directory.mkdir(parents=True, exist_ok=True)
    known = directory / "known_hosts"
    shown = host if port == 22 else f"[{host}]:{port}"
    known.write_text("".join(f"{shown} {' '.join(k.split()[:2])}\n" for k in host_keys))
    argv = ["ssh"]
    if jump_host:
        if jump_host.startswith("-") or any(c.isspace() or c == "," for c in jump_host):
            raise ValueError(f"jump host {jump_host!r}: expected [user@]host[:port]")
        if jump_key or jump_known_hosts:
            config = directory / "ssh_config"
            address = jump_host.rpartition("@")[2]
            lines = [f"Host {address.rsplit(':', 1)[0] if address.count(':') == 1 else address}"]
            if jump_key:
                lines += [f'  IdentityFile "{jump_key}"', "  IdentitiesOnly yes"]
            if jump_known_hosts:
                lines += [f'  UserKnownHostsFile "{jump_known_hosts}"', "  StrictHostKeyChecking yes"]
            config.write_text("\n".join(lines) + "\n")
            argv += ["-F", str(config)]
        argv += ["-J", jump_host]
    argv += ["-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", f'UserKnownHostsFile="{known}"']
    argv += ["-o", "StrictHostKeyChecking=yes"]
    if port != 22:
        argv += ["-p", str(port)]
    return Login([*argv, f"{user}@{host}"])


class JumpHost:
    """An SSH connection to a bastion (OpenSSH's ProxyJump): opened on first use, reopened when it drops, and
    handing out direct-tcpip channels that an SSHTransport uses as its socket. Only known host keys are accepted."""

    def __init__(
        self,
        user: str | None,
        host: str,
        port: int,
        *,
        key_file: str | None,
        known_hosts: str | None,
        timeout: float,
        label: str,
    ) -> None:
        self.user, self.host, self.port = user, host, port
        self.key_file = Path(key_file).expanduser() if key_file else None
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser()
        self.timeout = timeout
        self.label = label
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _open(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host,
                self.port,
                username=self.user,
                key_filename=str(self.key_file) if self.key_file else None,
                look_for_keys=self.key_file is None,
                allow_agent=self.key_file is None,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
        except (OSError, paramiko.SSHException) as e:
            client.close()
            raise PermanentError(
                f"{self.label}: jump host {self.host}:{self.port}: {e} (its host key must be in {self.known_hosts})"
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    def channel(self, host: str, port: int) -> paramiko.Channel:
        """A channel from the jump host to ``host:port``, usable as a socket."""
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                if self._client is not None:
                    self._client.close()
                self._client = self._open()
                transport = self._client.get_transport()
            assert transport is not None
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.timeout)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class _ParamikoChannel:
    """Adapts a paramiko channel to the shell session's Channel: both streams, select-able, EOF as b""."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def send(self, data: bytes) -> None:
        self.channel.sendall(data)

    def recv(self, timeout: float | None) -> tuple[int, bytes]:
        channel = self.channel
        while True:
            if channel.recv_stderr_ready():
                return STDERR, channel.recv_stderr(1 << 16)
            if channel.recv_ready():
                return STDOUT, channel.recv(1 << 16)
            if channel.eof_received or channel.closed:
                return STDOUT, b""
            ready, _, _ = select.select([channel], [], [], timeout)
            if not ready:
                raise TimeoutError

    def close(self) -> None:
        self.channel.close()
