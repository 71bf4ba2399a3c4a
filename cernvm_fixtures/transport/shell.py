"""A long-lived shell that runs many commands, framed by random markers: the fast path of every transport.

Starting a process per command (a new SSH channel, a new ``docker exec``) costs
tens of milliseconds; writing the command to a shell that is already running
costs about one. Each command runs as::

    ( eval '<command>' ) </dev/null; printf '<nonce> %d\\n' $? ; printf '<nonce>\\n' >&2

(see :func:`wrap` for the exact form), so it gets a subshell (no cwd,
variable, option or trap leaks into the next command), no stdin (it cannot eat the commands that follow), its own exit
status, and separate stdout and stderr, each ended by a fresh 128-bit random
marker that output cannot predict. A command that runs past its timeout is
killed together with the shell and its descendants; the next command gets a
new shell.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import CernvmError, CommandTimeout
from .base import Result

STDOUT, STDERR = 1, 2


class SessionLost(CernvmError):
    """The shell went away in the middle of a command (connection dropped, instance rebooted)."""


class SessionStale(SessionLost):
    """The shell was already gone before the command could be sent: nothing ran, so it is safe to retry."""


class Channel(Protocol):
    """A byte pipe to a freshly started ``/bin/sh``: its stdin in, its stdout and stderr out."""

    def send(self, data: bytes) -> None:
        """Write all of ``data`` to the shell's stdin."""

    def recv(self, timeout: float | None) -> tuple[int, bytes]:
        """Next chunk as (STDOUT or STDERR, bytes); b"" means that stream ended; TimeoutError if none came."""

    def close(self) -> None:
        """Tear the pipe down (idempotent)."""


def kill_tree_command(pid: int) -> str:
    """A shell command that kills ``pid`` and all its descendants (found through /proc)."""
    return (
        "tree() { echo $1; for c in $(grep -l \"^[0-9]* ([^)]*) [A-Za-z] $1 \" /proc/[0-9]*/stat 2>/dev/null"
        " | cut -d/ -f3); do tree $c; done; }; "
        f"kill -KILL $(tree {int(pid)}) 2>/dev/null; true"
    )


def wrap(command: str) -> str:
    """The command as a subshell the session's shell parses safely (a syntax error only fails it).

    ``command eval '( CMD )'`` lets the subshell exec its last command instead of
    forking once more (a millisecond per command under emulation); ``command``
    keeps a syntax error from ending the session's shell. A ``)`` in the command
    could close that subshell early, so such commands take ``( eval 'CMD' )``,
    which forks once more but parses the command only inside the subshell.
    """
    if ")" in command:
        return f"( eval {shlex.quote(command)}\n)"
    return f"command eval {shlex.quote('( ' + command + chr(10) + ')')}"


class ShellSession:
    """One shell on one channel; not thread-safe (transports keep a pool, one user per session)."""

    def __init__(self, channel: Channel, connect_timeout: float = 30.0) -> None:
        self.channel = channel
        self.alive = True
        try:
            started = self.run("printf '\\n%s' $$", connect_timeout)
        except CommandTimeout:
            raise SessionLost(f"the shell did not answer within {connect_timeout} s") from None
        head, _, pid = started.stdout_bytes.rpartition(b"\n")
        self.pid = int(pid)
        """The shell's pid on the instance, so a stuck command's process tree can be killed."""
        self.preamble = (head + started.stderr_bytes).decode("utf-8", "replace")
        """What the shell's launcher printed before the shell took over (e.g. CernVM's /init banner)."""

    def close(self) -> None:
        self.alive = False
        self.channel.close()

    def run(self, command: str, timeout: float | None) -> Result:
        """Run one command; raises CommandTimeout (the session is then dead) or SessionLost."""
        nonce = secrets.token_hex(16).encode()
        script = (
            f"{wrap(command)} </dev/null; "
            f"printf '\\n%s %d\\n' {nonce.decode()} $?; printf '\\n%s\\n' {nonce.decode()} >&2\n"
        )
        try:
            self.channel.send(script.encode())
        except (OSError, EOFError) as e:
            self.alive = False
            raise SessionStale(f"the shell was gone before {command!r} could be sent: {e}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        out_marker, err_marker = b"\n" + nonce + b" ", b"\n" + nonce + b"\n"
        out, err = bytearray(), bytearray()
        out_end = err_end = -1
        out_from = err_from = 0
        while out_end < 0 or err_end < 0:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.alive = False
                raise CommandTimeout(f"command {command!r} still running after {timeout} s; stopped it")
            try:
                stream, chunk = self.channel.recv(left)
            except TimeoutError:
                continue
            if not chunk:
                self.alive = False
                said = (bytes(out) + bytes(err)).decode("utf-8", "replace").strip()[-1500:]
                raise SessionLost(f"the shell went away while running {command!r}" + (f"; it said: {said}" if said else ""))
            if stream == STDOUT:
                out += chunk
                if out_end < 0:
                    at = out.find(out_marker, out_from)
                    if at >= 0 and out.find(b"\n", at + len(out_marker)) >= 0:
                        out_end = at
                    out_from = max(0, (at if at >= 0 else len(out)) - len(out_marker))
            else:
                err += chunk
                if err_end < 0:
                    err_end = err.find(err_marker, err_from)
                    err_from = max(0, len(err) - len(err_marker))
        status = out[out_end + len(out_marker) :].split(b"\n", 1)[0]
        return Result(command, int(status), bytes(out[:out_end]), bytes(err[:err_end]))


class SessionPool:
    """Idle shell sessions of one transport: one per concurrent caller, reused, replaced when stale or stuck."""

    def __init__(self, open_session: Callable[[], ShellSession], kill: Callable[[ShellSession], None]) -> None:
        self._open = open_session
        self._kill = kill
        self._idle: list[ShellSession] = []
        self._lock = threading.Lock()

    def run(self, command: str, timeout: float | None) -> Result:
        session = self._take()
        try:
            try:
                result = session.run(command, timeout)
            except SessionStale:
                session.close()
                session = self._open()
                result = session.run(command, timeout)
        except CommandTimeout:
            try:
                self._kill(session)
            finally:
                session.close()
            raise
        except BaseException:
            session.close()
            raise
        with self._lock:
            self._idle.append(session)
        return result

    def _take(self) -> ShellSession:
        with self._lock:
            while self._idle:
                session = self._idle.pop()
                if session.alive:
                    return session
                session.close()
        return self._open()

    def clear(self) -> None:
        """Close every idle session (e.g. their connection is gone)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()
