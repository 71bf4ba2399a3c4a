"""The transport contract: how commands reach an instance, whatever the platform."""

from __future__ import annotations

import enum
import os
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..errors import CernvmError, Unsupported


class Default(enum.Enum):
    """Marks an argument left to the target's configuration."""

    TIMEOUT = "the target's command_timeout"


TIMEOUT = Default.TIMEOUT


@dataclass(frozen=True)
class Result:
    """What a command did: exact exit status and both output streams as bytes (decoded on demand)."""

    command: str
    exit_status: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def rc(self) -> int:
        return self.exit_status

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    def check(self) -> Result:
        """Return self, or raise naming the command, its status and its stderr."""
        if self.exit_status != 0:
            raise CommandFailed(self)
        return self


@dataclass(frozen=True)
class Login:
    """How a person gets a shell on an instance: an argv and extra environment, run as is, never re-split."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "argv", tuple(argv))
        object.__setattr__(self, "env", dict(env or {}))

    def __str__(self) -> str:
        """For display only: what to paste into a POSIX shell."""
        assignments = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        return " ".join([*assignments, shlex.join(self.argv)])

    def as_data(self) -> dict[str, Any]:
        """For the ledger: ``login`` (the display form) plus ``login_argv`` and ``login_env``, which are used."""
        return {"login": str(self), "login_argv": list(self.argv), "login_env": dict(self.env)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Login:
        """The login a ledger entry recorded (see :meth:`as_data`)."""
        return cls(data["login_argv"], data.get("login_env") or {})

    def exec(self) -> NoReturn:
        """Replace this process with the login (argv[0] looked up on PATH)."""
        os.execvpe(self.argv[0], list(self.argv), {**os.environ, **self.env})


class CommandFailed(CernvmError):
    """A command that had to succeed exited non-zero."""

    def __init__(self, result: Result) -> None:
        self.result = result
        detail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"command {result.command!r} exited {result.exit_status}: {detail}")


class Transport(ABC):
    """Runs commands on one instance; connects lazily and reconnects when the connection dropped."""

    boot_id: str | None = None
    """The instance's boot id as of the last (re)connect, if known: a change means it rebooted."""

    @abstractmethod
    def unreachable(self) -> str | None:
        """None if the instance answers at the network/API level, else why not (one cheap attempt)."""

    @abstractmethod
    def connect(self) -> None:
        """Log in (or attach); raises with the reason on failure."""

    @abstractmethod
    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run a shell command; raises CommandTimeout if it runs past ``timeout`` seconds."""

    def exec(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run a command in a process of its own, apart from any shared session (e.g. one that ends the connection)."""
        return self.run(command, timeout=timeout, stdin=stdin)

    @abstractmethod
    def close(self) -> None:
        """Drop the connection (idempotent)."""

    def auth_methods(self, user: str) -> list[str]:
        """The login methods the instance's login service offers ``user`` (SSH: ``publickey``, ``password``, ...).

        Raises:
            Unsupported: the transport has no login service to ask (e.g. Docker exec).
        """
        raise Unsupported(f"{self} reaches the instance without a login service (no SSH): no login methods to ask")

    def password_login(self, user: str, password: str) -> bool:
        """Whether the instance's login service lets ``user`` in with ``password``, tried on a connection of its
        own that is closed at once (the password is never logged nor put into a message).

        Raises:
            Unsupported: the transport has no login service to try (e.g. Docker exec).
        """
        raise Unsupported(f"{self} reaches the instance without a login service (no SSH): no password login to try")

    def key_login(self, user: str) -> str | None:
        """Log in as ``user`` with the run's key on a connection of its own (closed at once) and return what
        ``id -un`` prints there; None when the login service refuses the key.

        Raises:
            Unsupported: the transport has no login service to try (e.g. Docker exec).
        """
        raise Unsupported(f"{self} reaches the instance without a login service (no SSH): no key login to try")

    def put(self, data: bytes, remote: str, mode: int | None = None) -> None:
        """Write bytes to a file on the instance, through the command channel (binary safe)."""
        command = f"cat > {shlex.quote(remote)}"
        if mode is not None:
            command += f" && chmod {mode:o} {shlex.quote(remote)}"
        self.run(command, stdin=data, timeout=300).check()

    def get(self, remote: str) -> bytes:
        """Read a file from the instance (binary safe)."""
        return self.run(f"cat {shlex.quote(remote)}", timeout=300).check().stdout_bytes
