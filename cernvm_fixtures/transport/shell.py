"""A long-lived shell that runs many commands, framed by random markers: the fast path of every transport.

Starting a process per command (a new SSH channel, a new ``docker exec``) costs
tens of milliseconds; writing the command to a shell that is already running
costs about one. Each command runs as ``sh -c CMD`` does over SSH (see
:func:`script` for the exact form)::

    sh -c '<command>' </dev/null & wait $!; printf '<nonce> %d\\n' $?; printf '<nonce>\\n' >&2

so it is a process of its own (``$$`` is its own pid; it may ``exit``, ``exec``
or kill itself: the session only sees an exit status, 128 + the signal number
when a signal ended it), has no stdin (it cannot eat the commands that follow),
cannot leak cwd, variables, options or traps into the next command, reports
errors as ``sh -c`` does (``sh: 1: x: not found``), and its text reaches the
session shell only as one single-quoted word, never parsed there. stdout and
stderr are kept apart, each ended by a fresh 128-bit random marker that output
cannot predict. A command that runs past its timeout is killed together with
the session shell, its descendants and their sessions (double-forked processes
included); the next command gets a new shell.

Background jobs: what a command leaves running is found when it returns, without a process of its own per
command: the orphans it left are adopted by the instance's reaper (init, or a subreaper), so they show up as
new entries of the reaper's ``/proc/R/task/R/children``, read before and after the command (two reads of a
small file). Of those and their descendants, what still holds the session's stdout or stderr 0.1 s later is
killed (over SSH, ``sh -c`` would not return until they ended); a job that redirected its output keeps running.
Each command carries ``CVMFX_COMMAND=<its nonce>`` in its environment, so a timed-out command's orphans are
killed with it (:func:`kill_tree_command`). Where that ``children`` file cannot be read, each command leads a
session of its own instead (``setsid``, one more exec per command: about 7 ms on an emulated guest), and what is
left of that session or still carries the command's ``CVMFX_COMMAND`` (a job that started a session of its own)
is reaped; without ``setsid`` either, only the latter. Output that still arrives between commands (from a
process that escaped all of these, e.g. one that cleared its environment) is dropped, with a warning, before the
next command is sent.

One difference from ``sh -c`` over SSH remains: the command is an asynchronous
list of the session shell, so POSIX has it start with SIGINT and SIGQUIT
ignored (they cannot be trapped back); use ``Transport.exec`` where a command
must be interruptible by those two.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import CernvmError, CommandTimeout
from .base import Result

STDOUT, STDERR = 1, 2

log = logging.getLogger(__name__)


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


KILL_TREE = r"""
all=" $1 "
if [ -n "$2" ]; then
    for f in $(grep -lzxF "CVMFX_COMMAND=$2" /proc/[0-9]*/environ 2>/dev/null); do
        p=${f#/proc/}; all="$all${p%/environ} "
    done
fi
pairs=
for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$f" || continue
    set -- ${line##*) }
    p=${f#/proc/}; p=${p%/stat}
    pairs="$pairs $p:$2:$3:$4"
done
changed=1
while [ -n "$changed" ]; do
    changed=
    for pair in $pairs; do
        p=${pair%%:*}; rest=${pair#*:}
        case "$all" in *" $p "*) continue ;; esac
        for up in $(IFS=:; echo $rest); do
            case "$all" in *" $up "*) all="$all$p "; changed=1; break ;; esac
        done
    done
done
kill -STOP $all 2>/dev/null
kill -KILL $all 2>/dev/null
true
"""
"""Kills process ``$1``, the processes whose environment carries ``CVMFX_COMMAND=$2`` (if given), their
descendants, and every process in a process group or session one of them leads (so a double-forked process,
reparented away from the tree, dies too)."""

REAP = r"""cvmfx_holding() {
    for cvmfx_q; do
        for cvmfx_d in /proc/$cvmfx_q/fd/*; do
            if [ "$cvmfx_d" -ef /proc/$$/fd/1 ] || [ "$cvmfx_d" -ef /proc/$$/fd/2 ]; then echo "$cvmfx_q"; break; fi
        done
    done
}
cvmfx_tree() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v roots=" $* " '{ p = $1; sub(/.*\) /, ""); up[p] = $2 }
        END { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1
              more = 1
              while (more) { more = 0; for (p in up) if (!(p in keep) && (up[p] in keep)) { keep[p] = 1; more = 1 } }
              for (p in keep) print p }'
}
cvmfx_children() {
    read -r cvmfx_c < $cvmfx_r; cvmfx_a=
    until [ "$cvmfx_a" = "$cvmfx_c" ]; do cvmfx_a=$cvmfx_c; read -r cvmfx_c < $cvmfx_r; done
}
cvmfx_orphans() {
    cvmfx_old=" $1 "; cvmfx_new=; shift
    for cvmfx_q; do case $cvmfx_old in *" $cvmfx_q "*) ;; *) cvmfx_new="$cvmfx_new $cvmfx_q" ;; esac; done
    [ -n "$cvmfx_new" ] || return 0
    sleep 0.1
    cvmfx_kill $(cvmfx_holding $(cvmfx_tree $cvmfx_new))
}
cvmfx_members() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v s="$1" '{ p = $1; sub(/.*\) /, ""); if ($4 == s) print p }'
}
cvmfx_tagged() {
    for cvmfx_f in $(grep -lzxF "CVMFX_COMMAND=$1" /proc/[0-9]*/environ 2>/dev/null); do
        cvmfx_f=${cvmfx_f#/proc/}; echo "${cvmfx_f%/environ}"
    done
}
cvmfx_reap() {
    cvmfx_left="$(cvmfx_tagged "$1") $([ -n "$2" ] && kill -0 -"$2" 2>/dev/null && cvmfx_members "$2")"
    [ -n "${cvmfx_left## }" ] || return 0
    sleep 0.1
    cvmfx_kill $(cvmfx_holding $(cvmfx_tree $cvmfx_left))
}
cvmfx_kill() {
    [ $# -gt 0 ] || return 0
    kill -STOP "$@" 2>/dev/null
    kill -KILL "$@" 2>/dev/null
}
"""
"""Defined once in the session shell. ``cvmfx_children`` reads the reaper's children into ``cvmfx_a`` until two
reads agree (the kernel resumes a read by position, so a child exiting in the middle of one can hide another);
the read before a command is a single one: what it misses only looks new afterwards, and costs a look, not a kill.
``cvmfx_tree`` and ``cvmfx_members`` read /proc through ``cat``, which goes on past a process that just exited
(some ``awk`` stop at the first file that is gone).
``cvmfx_orphans BEFORE AFTER...`` kills, a moment (0.1 s) after a command
returned, what of the reaper's new children (in AFTER, not in BEFORE) and their descendants still holds the
session's stdout or stderr (a job just starting, ``nohup x >log &``, is given time to redirect; and a process in
the middle of an exec does not show its descriptors, so none is looked at before that moment);
``cvmfx_reap NONCE [SID]`` does the same for what is left of the command found without the reaper: the processes
whose environment carries ``CVMFX_COMMAND=NONCE`` (a job that left the command's session with ``setsid`` keeps it)
and the members of session SID (where each command leads a session), with their descendants; nothing is left in
the usual case, which costs one ``grep`` and no sleep. Each kill stops them all first: a parent woken by its child's
death would otherwise still print before its own turn."""

REAPER, SETSID, PLAIN = "reaper", "setsid", "plain"
"""How a session finds what a command left running: the reaper's children, a session per command, or not at all."""

HANDSHAKE = r"""cvmfx_r=; cvmfx_o=$(sh -c 'sleep 9 </dev/null >/dev/null 2>&1 & echo $!' 2>/dev/null)
if [ -n "$cvmfx_o" ] && { read -r cvmfx_l < /proc/$cvmfx_o/stat; } 2>/dev/null; then
    set -- ${cvmfx_l##*) }
    [ -r /proc/$2/task/$2/children ] && cvmfx_r=/proc/$2/task/$2/children
fi
[ -n "$cvmfx_o" ] && kill $cvmfx_o 2>/dev/null
if [ -n "$cvmfx_r" ]; then cvmfx_m=reaper
elif command -v setsid >/dev/null; then cvmfx_m=setsid
else cvmfx_m=plain
fi
"""
"""Finds the reaper: the parent of an orphan (a ``sleep`` whose ``sh`` exited) is whoever adopts this shell's
orphans; ``cvmfx_r`` is its children file if that can be read, ``cvmfx_m`` the mode the session then uses."""


def kill_tree_command(pid: int, command_nonce: str | None = None) -> str:
    """A shell command that kills ``pid``, its descendants and their sessions (found through /proc), and, given the
    nonce of a session's command, every process that command started, orphans included."""
    nonce = "" if command_nonce is None else " " + shlex.quote(command_nonce)
    return f"sh -c {shlex.quote(KILL_TREE)} kill {int(pid)}{nonce}"


def end_markers(nonce: str, status: str) -> str:
    """What ends every exchange: ``status`` after the nonce on stdout, the nonce alone on stderr."""
    return f"printf '\\n%s %d\\n' {nonce} {status}; printf '\\n%s\\n' {nonce} >&2\n"


def script(command: str, nonce: str, mode: str = REAPER) -> str:
    """What the session shell is sent for one command: ``sh -c`` in a child, then both end markers.

    The command is one single-quoted word to the session shell (data, never
    parsed there); ``wait`` reports its exit status (128 + signal if a signal
    ended it) and stays quiet about the signal (no ``Terminated`` line). What the
    command left running is then found as ``mode`` says (see the module's
    docstring) and killed if it still holds the session's output.
    """
    run = f"sh -c {shlex.quote(command)} </dev/null & wait $! 2>/dev/null; s=$?; "
    if mode == REAPER:
        run = (
            f"read -r cvmfx_b < $cvmfx_r; CVMFX_COMMAND={nonce} {run}cvmfx_children; "
            '[ "$cvmfx_a" = "$cvmfx_b" ] || cvmfx_orphans "$cvmfx_b" $cvmfx_a; '
        )
    elif mode == SETSID:
        run = f"CVMFX_COMMAND={nonce} setsid {run}cvmfx_reap {nonce} $!; "
    else:
        run = f"CVMFX_COMMAND={nonce} {run}cvmfx_reap {nonce}; "
    return run + end_markers(nonce, "$s")


class ShellSession:
    """One shell on one channel; not thread-safe (transports keep a pool, one user per session)."""

    def __init__(self, channel: Channel, connect_timeout: float = 30.0) -> None:
        self.channel = channel
        self.alive = True
        nonce = secrets.token_hex(16)
        handshake = f"{REAP}{HANDSHAKE}printf '\\n%s %s' $$ $cvmfx_m; " + end_markers(nonce, "0")
        try:
            started = self._exchange("(session start)", handshake, nonce, connect_timeout)
        except CommandTimeout:
            raise SessionLost(f"the shell did not answer within {connect_timeout} s") from None
        head, _, last = started.stdout_bytes.rpartition(b"\n")
        pid, _, mode = last.decode().partition(" ")
        self.pid = int(pid)
        """The shell's pid on the instance, so a stuck command's process tree can be killed."""
        self.mode = mode
        """How the session finds what a command left running: REAPER, SETSID or PLAIN."""
        self.preamble = (head + started.stderr_bytes).decode("utf-8", "replace")
        """What the shell's launcher printed before the shell took over (e.g. CernVM's /init banner)."""
        self.running: str | None = None
        """The nonce of the command sent last (its processes carry it in ``CVMFX_COMMAND``)."""

    def kill_command(self) -> str:
        """A shell command (for another channel) that kills this session's shell and all its last command started."""
        return kill_tree_command(self.pid, self.running)

    def close(self) -> None:
        self.alive = False
        self.channel.close()

    def run(self, command: str, timeout: float | None) -> Result:
        """Run one command as ``sh -c`` would; raises CommandTimeout (the session is then dead) or SessionLost."""
        self._drain(command)
        nonce = self.running = secrets.token_hex(16)
        return self._exchange(command, script(command, nonce, self.mode), nonce, timeout)

    def _drain(self, command: str) -> None:
        """Drop output that arrived after the previous command ended, so it cannot reach this one."""
        while True:
            try:
                stream, chunk = self.channel.recv(0)
            except TimeoutError:
                return
            if not chunk:
                self.alive = False
                raise SessionStale(f"the shell was gone before {command!r} could be sent")
            log.warning("dropped %d stray byte(s) on %s between commands: %r", len(chunk), stream, chunk[:200])

    def _exchange(self, command: str, text: str, nonce: str, timeout: float | None) -> Result:
        """Send ``text`` and read both streams up to their ``nonce`` markers."""
        try:
            self.channel.send(text.encode())
        except (OSError, EOFError) as e:
            self.alive = False
            raise SessionStale(f"the shell was gone before {command!r} could be sent: {e}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        out_marker, err_marker = b"\n" + nonce.encode() + b" ", b"\n" + nonce.encode() + b"\n"
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
                raise SessionLost(
                    f"the shell went away while running {command!r}" + (f"; it said: {said}" if said else "")
                )
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
