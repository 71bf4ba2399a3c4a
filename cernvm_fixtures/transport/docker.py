"""Docker transport through the Docker API, every command run through ``/init``.

CernVM's ``/init`` prepares the environment per process: in parrot mode /cvmfs
and the OS tree exist only for processes that parrot runs, so a plain
``docker exec CMD`` would not see them. Commands therefore run in a long-lived
``<entry> sh`` exec (the fast path: a :class:`ShellSession`, about a
millisecond per command instead of ~50 for an exec), or, with stdin, in an exec
of their own, ``<entry> sh -c <script>``.

``/init`` may print its own lines before the shell starts (CernVM's prints a
banner and ``[INF]`` lines on stdout; debug lines with CERNVM_DEBUG=1). Those go
to :attr:`DockerTransport.preambles` for the console log, never into a command's
output: a session's handshake separates them; a single exec's script first
prints a random marker on stdout and stderr (the latter with the shell's PID)
and the bytes before the markers are ``/init``'s. If a stream ends without its
marker, the command never started (``/init`` refused): everything is returned as
the command's output, with ``/init``'s exit status, so the refusal is visible.

A command that runs past its timeout is killed, with every process it started,
by a second exec; the transport stays usable.
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import CommandTimeout, ProviderError
from .base import Result, Transport
from .shell import STDERR, STDOUT, SessionLost, SessionPool, ShellSession

log = logging.getLogger(__name__)

HEADER = struct.Struct(">BxxxL")
"""Docker's multiplexed stream: one byte stream type (0 stdin, 1 stdout, 2 stderr, 3 daemon error), size."""

KILL_SCRIPT = r"""
pat="cvmfx:$1:"
roots=" $2 "
for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    [ "$p" = "$$" ] && continue
    case "$roots" in *" $p "*) continue ;; esac
    grep -qF -e "$pat" "$f" 2>/dev/null && roots="$roots$p "
done
for f in $(grep -lzxF "CVMFX_COMMAND=$1" /proc/[0-9]*/environ 2>/dev/null); do
    p=${f#/proc/}; p=${p%/environ}
    case "$roots" in *" $p "*) ;; *) roots="$roots$p " ;; esac
done
[ -n "${roots# }" ] || exit 0
pairs=
for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    rest=${line##*) }
    set -- $rest
    p=${f#/proc/}; p=${p%/stat}
    pairs="$pairs $p:$2:$4"
done
all="$roots"
changed=1
while [ -n "$changed" ]; do
    changed=
    for pair in $pairs; do
        p=${pair%%:*}; rest=${pair#*:}; pp=${rest%%:*}; pg=${rest#*:}
        case "$all" in *" $p "*) continue ;; esac
        case "$all" in *" $pp "*|*" $pg "*) ;; *) continue ;; esac
        all="$all$p "
        changed=1
    done
done
kill -STOP $all 2>/dev/null
kill -9 $all 2>/dev/null
exit 0
"""
"""Kills process ``$2`` (the command's shell, maybe exec'd into the command), the processes whose command
line carries marker ``$1`` (a command still in ``/init``) or whose environment carries ``CVMFX_COMMAND=$1`` (a
session's command and its orphans), their descendants and the rest of their sessions."""


class _Stream:
    """One output stream of a command: bytes before the marker are /init's, the rest the command's."""

    def __init__(self, marker: re.Pattern[bytes]) -> None:
        self.marker = marker
        self.pending = bytearray()
        self.output = bytearray()
        self.preamble = b""
        self.started = False
        self.pid: int | None = None

    def feed(self, data: bytes) -> None:
        if self.started:
            self.output += data
            return
        self.pending += data
        match = self.marker.search(self.pending)
        if match is None:
            return
        self.started = True
        self.preamble = bytes(self.pending[: match.start()])
        if match.groups() and match.group(1):
            self.pid = int(match.group(1))
        self.output += self.pending[match.end() :]
        self.pending.clear()

    def finish(self) -> None:
        """At the end of the stream: without a marker, everything was /init's and is the output."""
        if not self.started:
            self.output += self.pending
            self.pending.clear()


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete frame of Docker's multiplexed stream off the front of ``buffer``."""
    frames = []
    while len(buffer) >= HEADER.size:
        kind, size = HEADER.unpack_from(buffer)
        if len(buffer) < HEADER.size + size:
            break
        frames.append((kind, bytes(buffer[HEADER.size : HEADER.size + size])))
        del buffer[: HEADER.size + size]
    return frames


class Demultiplexer:
    """Splits Docker's multiplexed exec stream into stdout and stderr and strips /init's preamble."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.buffer = bytearray()
        self.stdout = _Stream(re.compile(re.escape(f"cvmfx:{token}:".encode())))
        self.stderr = _Stream(re.compile(re.escape(f"cvmfx:{token}:".encode()) + rb"(\d+):"))

    @property
    def started(self) -> bool:
        return self.stdout.started and self.stderr.started

    @property
    def pid(self) -> int | None:
        return self.stderr.pid

    def feed(self, data: bytes) -> None:
        self.buffer += data
        for kind, payload in split_frames(self.buffer):
            (self.stdout if kind == STDOUT else self.stderr).feed(payload)

    def finish(self) -> tuple[bytes, bytes, bytes]:
        """stdout, stderr and /init's preamble (both streams) once the stream ended."""
        if self.buffer:  # a truncated frame: keep what there is rather than lose it
            self.stderr.feed(bytes(self.buffer[HEADER.size :]))
            self.buffer.clear()
        self.stdout.finish()
        self.stderr.finish()
        return bytes(self.stdout.output), bytes(self.stderr.output), self.stdout.preamble + self.stderr.preamble


def wrap(command: str, token: str) -> str:
    """The script that marks where the command's own output begins, then runs the command."""
    return f"printf '%s' 'cvmfx:{token}:'; printf '%s%s:' 'cvmfx:{token}:' \"$$\" >&2\n{command}"


class DockerTransport(Transport):
    """Commands in a running container, each in its own exec, through ``entry`` (``/init``)."""

    def __init__(
        self,
        api: Any,
        container: str,
        *,
        entry: Sequence[str] = ("/init",),
        shell: str = "sh",
        kill_timeout: float = 15.0,
    ) -> None:
        """``api``: a ``docker.APIClient``; ``container``: the container's name or id."""
        self.api = api
        self.container = container
        self.entry = tuple(entry)
        self.shell = shell
        self.kill_timeout = kill_timeout
        self.preambles: collections.deque[str] = collections.deque(maxlen=20)
        """What ``entry`` printed before recent commands started (newest last), for the console log."""
        self._sessions = SessionPool(self._new_session, self._kill_session)

    def __repr__(self) -> str:
        return f"DockerTransport({self.container})"

    def state(self) -> dict[str, Any]:
        """The container's State from the API (raises ProviderError if it is gone)."""
        import docker.errors

        try:
            return self.api.inspect_container(self.container)["State"]
        except docker.errors.NotFound:
            raise ProviderError(f"{self}: the container no longer exists") from None
        except docker.errors.DockerException as e:
            raise ProviderError(f"{self}: the Docker API did not answer: {e}") from None

    def unreachable(self) -> str | None:
        try:
            state = self.state()
        except ProviderError as e:
            return str(e)
        if state.get("Status") != "running":
            return f"{self}: container is {state.get('Status')} (exit code {state.get('ExitCode')})"
        return None

    def connect(self) -> None:
        """A cheap check that commands run: ``true`` through ``entry`` in an exec of its own, so a refusal shows."""
        result = self.exec("true", timeout=60)
        if not result.succeeded:
            detail = (result.stderr or result.stdout).strip()[-1500:]
            raise ProviderError(
                f"{self}: {' '.join(self.entry) or 'sh'} did not run a command (exit {result.exit_status}): {detail}"
            )

    def close(self) -> None:
        self._sessions.clear()

    def _exec(self, argv: list[str], *, stdin: bool) -> tuple[str, socket.socket, Any]:
        import docker.errors

        try:
            exec_id = self.api.exec_create(self.container, argv, stdin=stdin, stdout=True, stderr=True, tty=False)["Id"]
            handle = self.api.exec_start(exec_id, socket=True)
        except docker.errors.NotFound:
            raise ProviderError(f"{self}: the container no longer exists") from None
        except docker.errors.APIError as e:
            raise ProviderError(f"{self}: cannot run a command: {e.explanation or e}") from None
        except docker.errors.DockerException as e:
            raise ProviderError(f"{self}: the Docker API did not answer: {e}") from None
        raw = getattr(handle, "_sock", handle)
        raw.settimeout(None)
        return exec_id, raw, handle

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Commands without stdin go to a long-lived ``entry sh`` session; the others get an exec of their own."""
        if stdin is not None:
            return self.exec(command, timeout=timeout, stdin=stdin)
        return self._sessions.run(command, timeout)

    def _new_session(self) -> ShellSession:
        exec_id, raw, handle = self._exec([*self.entry, self.shell], stdin=True)
        try:
            session = ShellSession(_DockerChannel(raw, handle), self.kill_timeout * 4)
        except SessionLost as e:
            _close(raw, handle)
            raise ProviderError(f"{self}: {' '.join([*self.entry, self.shell])} did not start a shell: {e}") from None
        if session.preamble:
            self.preambles.append(session.preamble)
        return session

    def _kill_session(self, session: ShellSession) -> None:
        problem = self._kill(session.running or secrets.token_hex(8), session.pid)
        if problem:
            log.warning("%s: a timed-out command's processes may survive%s", self, problem)

    def exec(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """One exec of ``entry sh -c`` for this command alone (stdin, refusals of ``entry`` shown as output)."""
        token = secrets.token_hex(8)
        argv = [*self.entry, self.shell, "-c", wrap(command, token)]
        exec_id, raw, handle = self._exec(argv, stdin=stdin is not None)
        demux = Demultiplexer(token)
        writer = None
        if stdin is not None:
            writer = threading.Thread(target=_send, args=(raw, stdin), name=f"stdin {self.container}", daemon=True)
            writer.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        problem = ""
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    timed_out = True
                    break
                readable, _, _ = select.select([raw], [], [], 0.5 if left is None else min(left, 0.5))
                if not readable:
                    continue
                data = raw.recv(262144)
                if not data:
                    break
                demux.feed(data)
        finally:
            if timed_out:
                problem = self._kill(token, demux.pid)
            _close(raw, handle)
            if writer is not None:
                writer.join(timeout=5)
        stdout, stderr, preamble = demux.finish()
        said = preamble if demux.started else stdout + stderr  # a refusal is all /init's
        if said:
            self.preambles.append(said.decode("utf-8", "replace"))
        if timed_out:
            raise CommandTimeout(
                f"{self}: command {command!r} still running after {timeout} s; stopped it{problem}"
                f" (stdout so far: {stdout[-500:]!r})"
            )
        status = self._exit_code(exec_id)
        if not demux.started:
            log.debug("%s: %s exited %s before running %r", self, self.entry, status, command)
        return Result(command, status, stdout, stderr)

    def _exit_code(self, exec_id: str) -> int:
        import docker.errors

        deadline = time.monotonic() + 10
        while True:
            try:
                info = self.api.exec_inspect(exec_id)
            except docker.errors.DockerException as e:
                raise ProviderError(f"{self}: cannot read a command's exit status: {e}") from None
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                raise ProviderError(f"{self}: a command's output ended but it did not exit within 10 s")
            time.sleep(0.01)

    def _kill(self, token: str, pid: int | None) -> str:
        """Kill the command (shell ``pid``, or marked by ``token``) and its descendants; '' or why not."""
        problems = []
        # Directly first (the container's own sh); through the entry if there is no sh outside it (parrot mode).
        for prefix in ((), self.entry) if self.entry else ((),):
            argv = [*prefix, self.shell, "-c", KILL_SCRIPT, "kill", token, str(pid or "")]
            try:
                exec_id, raw, handle = self._exec(argv, stdin=False)
            except ProviderError as e:
                problems.append(str(e))
                continue
            try:
                deadline = time.monotonic() + self.kill_timeout
                output = bytearray()
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([raw], [], [], 0.2)
                    if readable:
                        data = raw.recv(65536)
                        if not data:
                            break
                        output += data
            finally:
                _close(raw, handle)
            try:
                info = self.api.exec_inspect(exec_id)
            except Exception as e:  # noqa: BLE001 - only for the message
                problems.append(f"cannot inspect the kill command: {e}")
                continue
            if info.get("ExitCode") == 0:
                return ""
            problems.append(f"kill command exited {info.get('ExitCode')}: {bytes(output[-300:])!r}")
        return " (could not kill it: " + "; ".join(problems) + ")"


class _DockerChannel:
    """A long-lived exec's socket as a shell session Channel: stdin in, demultiplexed stdout/stderr out."""

    def __init__(self, raw: socket.socket, handle: Any) -> None:
        self.raw, self.handle = raw, handle
        self.buffer = bytearray()
        self.frames: collections.deque[tuple[int, bytes]] = collections.deque()

    def send(self, data: bytes) -> None:
        self.raw.sendall(data)

    def recv(self, timeout: float | None) -> tuple[int, bytes]:
        while not self.frames:
            readable, _, _ = select.select([self.raw], [], [], timeout)
            if not readable:
                raise TimeoutError
            data = self.raw.recv(1 << 18)
            if not data:
                return STDOUT, b""
            self.buffer += data
            self.frames.extend(
                (STDOUT if kind == STDOUT else STDERR, payload) for kind, payload in split_frames(self.buffer)
            )
        return self.frames.popleft()

    def close(self) -> None:
        _close(self.raw, self.handle)


def _send(raw: socket.socket, data: bytes) -> None:
    """Write stdin, then half-close so the command sees end of file (runs in its own thread)."""
    try:
        view = memoryview(data)
        while view:
            sent = raw.send(view[:262144])
            view = view[sent:]
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the command exited or was killed before reading everything


def _close(raw: socket.socket, handle: Any) -> None:
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    for thing in (raw, handle):
        try:
            thing.close()
        except OSError:
            pass
