"""SSH transport on paramiko: one connection per instance, one channel per command."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from ..errors import CommandTimeout, ProviderError
from .base import Result, Transport

log = logging.getLogger(__name__)

HostKeys = Callable[[], "list[str] | None"]
"""Returns the instance's host public keys (``ssh-ed25519 AAAA...``) as it announced them, or None if unknown."""


class HostKeyMismatch(ProviderError):
    """The server presented a key the instance did not announce: refuse to talk to it."""


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
        sock_factory: Callable[[], socket.socket] | None = None,
    ) -> None:
        self.host, self.port, self.user = host, port, user
        self.key_file = key_file
        self._host_keys = host_keys
        self.connect_timeout = connect_timeout
        self._sock_factory = sock_factory
        self._client: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self.verified: bool | None = None
        """True: host key matched what the instance announced; False: trusted on first use."""
        self._pinned: str | None = None

    def __repr__(self) -> str:
        return f"SSHTransport({self.user}@{self.host}:{self.port})"

    def _socket(self) -> socket.socket:
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
        client = paramiko.Transport(self._socket())
        try:
            client.banner_timeout = self.connect_timeout
            client.start_client(timeout=self.connect_timeout)
            self._verify(client.get_remote_server_key())
            key = paramiko.Ed25519Key.from_private_key_file(str(self.key_file))
            client.auth_publickey(self.user, key)
        except BaseException:
            client.close()
            raise
        self._client = client

    def _verify(self, key: paramiko.PKey) -> None:
        offered = f"{key.get_name()} {key.get_base64()}"
        announced = self._host_keys()
        if announced is None:
            if self.verified is None:
                log.warning("%s: no host keys announced on the console; trusting %s on first use", self, key.fingerprint)
            self.verified = False
            self._pinned = self._pinned or offered
            if offered != self._pinned:
                raise HostKeyMismatch(f"{self}: host key changed within the run ({key.fingerprint})")
            return
        if not any(" ".join(k.split()[:2]) == offered for k in announced):
            raise HostKeyMismatch(
                f"{self}: server offered host key {key.fingerprint}, "
                f"which is not among the {len(announced)} key(s) the instance announced on its console"
            )
        self.verified = True

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _channel(self) -> paramiko.Channel:
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

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        chan = self._channel()
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    if chan.eof_received or chan.closed:
                        break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CommandTimeout(
                        f"{self}: command {command!r} still running after {timeout} s; stopped it"
                        f" (stdout so far: {bytes(out[-500:])!r})"
                    )
                select.select([chan], [], [], 0.5 if left is None else min(left, 0.5))
            return Result(command, chan.recv_exit_status(), bytes(out), bytes(err))
        finally:
            chan.close()
