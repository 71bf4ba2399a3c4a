"""The framing of the long-lived shell, against real local shells (dash and busybox sh).

The session only needs a byte pipe to a ``/bin/sh``; here that pipe is a local
process, so the properties can be checked on thousands of inputs in seconds.
The same properties run against the appliance over SSH in the integration tests.
"""

from __future__ import annotations

import base64
import contextlib
import os
import selectors
import shutil
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cernvm_fixtures.errors import CommandTimeout
from cernvm_fixtures.testing.local import AS_SUBREAPER
from cernvm_fixtures.transport.shell import (
    PLAIN,
    REAPER,
    SETSID,
    STDERR,
    STDOUT,
    SessionLost,
    SessionStale,
    ShellSession,
)

SHELLS = [s for s in (["dash"], ["busybox", "sh"]) if shutil.which(s[0])]


class LocalChannel:
    """A local shell process as a Channel (stdout and stderr kept apart), under an init of its own that adopts
    its commands' orphans, as on an instance (the host's init has children come and go, from the tests beside)."""

    def __init__(self, argv: list[str]) -> None:
        argv = [*AS_SUBREAPER, shutil.which(argv[0]), *argv[1:]]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ, STDOUT)
        self.selector.register(self.process.stderr, selectors.EVENT_READ, STDERR)

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def recv(self, timeout):
        events = self.selector.select(timeout)
        if not events:
            raise TimeoutError
        key, _ = events[0]
        return key.data, os.read(key.fileobj.fileno(), 1 << 16)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(BrokenPipeError):
                stream.close()
        self.selector.close()


@pytest.fixture(params=SHELLS, ids=lambda s: s[0], scope="module")
def session(request):
    channel = LocalChannel(request.param)
    session = ShellSession(channel)
    yield session
    session.close()


def emit(data: bytes, fd: int = 1) -> str:
    """A command writing exactly ``data`` to fd 1 or 2."""
    encoded = base64.b64encode(data).decode()
    return f"printf %s {encoded} | base64 -d" + (" >&2" if fd == 2 else "")


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(out=st.binary(max_size=4096), err=st.binary(max_size=4096), status=st.integers(0, 255))
def test_arbitrary_bytes_and_status_round_trip(session, out, err, status):
    result = session.run(f"{emit(out)}; {emit(err, 2)}; exit {status}", timeout=30)
    assert (result.stdout_bytes, result.stderr_bytes, result.exit_status) == (out, err, status)


MARKERISH = st.builds(
    lambda hexes, n, pre: pre + b"\n" + hexes.encode() + (b" %d\n" % n),
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.integers(0, 255),
    st.binary(max_size=64),
)


@SETTINGS
@given(fake=MARKERISH, tail=st.binary(max_size=64))
def test_output_that_looks_like_markers(session, fake, tail):
    result = session.run(f"{emit(fake + tail)}; {emit(fake + tail, 2)}; exit 3", timeout=30)
    assert (result.stdout_bytes, result.stderr_bytes, result.exit_status) == (fake + tail, fake + tail, 3)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 3 * 1024 * 1024 + 7])
def test_huge_and_empty_outputs_on_both_streams_at_once(session, size):
    command = f"head -c {size} /dev/zero | tr '\\0' a & head -c {size} /dev/zero | tr '\\0' b >&2; wait"
    result = session.run(command, timeout=60)
    assert result.stdout_bytes == b"a" * size and result.stderr_bytes == b"b" * size


def test_no_state_leaks_between_commands(session):
    before = session.run("pwd; umask; echo x${LEAK-unset}; set -o | grep -c 'errexit *on'; trap", timeout=10)
    session.run("cd /; umask 077; LEAK=1; export LEAK; set -e; trap 'echo trapped' EXIT; alias ll=ls", timeout=10)
    session.run("cd /tmp && exit 0", timeout=10)
    after = session.run("pwd; umask; echo x${LEAK-unset}; set -o | grep -c 'errexit *on'; trap", timeout=10)
    assert after.stdout == before.stdout and "xunset" in after.stdout
    assert session.run("ll", timeout=10).exit_status == 127


def test_commands_do_not_read_the_session(session):
    result = session.run("cat; read line; echo read=$?", timeout=10)
    assert result.stdout == "read=1\n"
    assert session.run("echo next", timeout=10).stdout == "next\n"


@pytest.mark.parametrize(
    "command,status",
    [("echo 'unterminated", 2), ("echo a ) ; cd /tmp ; ( echo b", 2), ("(", 2), ("fi", 2), ("exit 300", 44)],
)
def test_bad_syntax_fails_the_command_not_the_session(session, command, status):
    assert session.run(command, timeout=10).exit_status == status
    assert session.run("pwd", timeout=10).stdout.strip() == os.getcwd()


def test_parentheses_cannot_escape_into_the_session(session):
    session.run("echo ')' ; cd / ; echo '('", timeout=10)
    session.run("x=$(cd /; echo y); cd /; (cd /)", timeout=10)
    assert session.run("pwd", timeout=10).stdout.strip() == os.getcwd()


def kill_and_wait_gone(session: ShellSession, marker: str, why: str) -> None:
    """Run the session's kill command, then wait (5 s at most, else fail with ``why``) until no process whose
    command line holds ``marker`` is left; close the session."""
    subprocess.run(["sh", "-c", session.kill_command()], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, why
        time.sleep(0.05)
    session.close()


def test_timeout_kills_the_command_tree():
    channel = LocalChannel(["sh"])
    session = ShellSession(channel)
    marker = f"cvmfx-test-{os.getpid()}-{time.monotonic_ns()}"
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="still running after 0.5 s"):
        session.run(f"sh -c 'sleep 300; : {marker}' & sleep 301; : {marker}", timeout=0.5)
    assert time.monotonic() - started < 5
    assert not session.alive
    kill_and_wait_gone(session, marker, "the timed-out command's processes survived")


def test_a_dead_shell_is_reported():
    session = ShellSession(LocalChannel(["sh"]))
    session.channel.process.kill()
    session.channel.process.wait()
    with pytest.raises(SessionLost):
        session.run("true", timeout=5)
    assert not session.alive
    session.close()


def test_a_shell_dying_mid_command_is_reported():
    session = ShellSession(LocalChannel(["sh"]))
    with pytest.raises(SessionLost) as error:
        session.run(f"kill -9 {session.pid}", timeout=5)
    assert not isinstance(error.value, SessionStale), "the command had been sent: retrying is not safe"
    session.close()


def test_sessions_do_not_share_state_across_threads():
    sessions = [ShellSession(LocalChannel(["sh"])) for _ in range(4)]
    failures = []

    def work(session, n):
        for i in range(50):
            result = session.run(f"echo {n}-{i}; echo e{n}-{i} >&2; exit {(n + i) % 256}", timeout=10)
            if (result.stdout, result.stderr, result.exit_status) != (f"{n}-{i}\n", f"e{n}-{i}\n", (n + i) % 256):
                failures.append(result)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session in sessions:
        session.close()
    assert not failures


def sh_c(shell: list[str], command: str) -> subprocess.CompletedProcess:
    """What ``sh -c COMMAND`` does on its own (as sshd runs a command), with ``sh`` being ``shell``."""
    return subprocess.run([*shell, "-c", command], capture_output=True, stdin=subprocess.DEVNULL, timeout=30)


def test_dollar_dollar_is_the_command_s_own_process(session):
    result = session.run("echo $$; exec cut -d' ' -f1 /proc/self/stat", timeout=10)
    first, second = result.stdout.split()
    assert first == second, f"$$ is {first}, but the command runs as {second}"
    assert int(first) != session.pid
    assert session.run("echo $$", timeout=10).stdout != result.stdout.split()[0] + "\n"


@pytest.mark.parametrize("signal,status", [("", 143), ("-9", 137), ("-USR1", 138)])
def test_a_command_that_kills_itself_gets_an_exit_status(session, signal, status):
    result = session.run(f"echo before; kill {signal} $$; echo after", timeout=10)
    assert (result.exit_status, result.stdout, result.stderr) == (status, "before\n", "")
    assert session.alive and session.run("echo still here", timeout=10).stdout == "still here\n"


@pytest.mark.parametrize(
    "command",
    ["no-such-command-cvmfx", "echo a \\", "echo $- $LINENO; false", "echo ok\nno-such-command-cvmfx", "exit 3"],
)
def test_same_output_as_sh_c(session, command):
    """Messages, flags and a trailing backslash exactly as ``sh -c`` gives them, the same on every run."""
    shell = ["busybox", "sh"] if "busybox" in str(session.channel.process.args) else ["sh"]
    expected = sh_c(shell, command)
    for _ in range(2):
        result = session.run(command, timeout=10)
        assert (result.exit_status, result.stdout_bytes, result.stderr_bytes) == (
            expected.returncode,
            expected.stdout,
            expected.stderr,
        )


def test_sessions_find_leftovers_through_the_reaper(session):
    """The fast way (no extra exec per command) is the one in use where /proc shows the reaper's children."""
    assert session.mode == REAPER


@pytest.fixture(params=[REAPER, SETSID])
def either_way(session, request):
    """The session, finding what commands leave running through the reaper's children or a session per command."""
    mode, session.mode = session.mode, request.param
    yield session
    session.mode = mode


def test_background_jobs_holding_the_output_die_with_their_command(either_way):
    """Jobs still writing to the command's output are killed when it returns, double-forked ones included."""
    started = "(sleep 1; echo late1) & (sh -c 'sleep 1; echo late2 >&2' &); (setsid sh -c 'sleep 1; echo late3' &)"
    result = either_way.run(f"{started}; echo early", timeout=10)
    assert (result.stdout, result.stderr) == ("early\n", "")
    time.sleep(1.5)
    after = either_way.run("echo next", timeout=10)
    assert (after.stdout, after.stderr) == ("next\n", "")


@pytest.fixture(params=[REAPER, SETSID, PLAIN])
def any_mode(session, request):
    """The session in each of the three ways it finds what commands leave running."""
    mode, session.mode = session.mode, request.param
    yield session
    session.mode = mode


def test_a_job_in_a_session_of_its_own_cannot_print_into_the_next_command(any_mode):
    """A job that leaves the command's session (``setsid``) but keeps its output is still the command's: it is found
    by the ``CVMFX_COMMAND`` its environment carries and killed, in every mode, before it prints into a later result."""
    first = any_mode.run("(setsid sh -c 'sleep 0.4; echo late; echo late >&2' &); echo early", timeout=10)
    assert (first.stdout, first.stderr) == ("early\n", "")
    after = any_mode.run("sleep 0.8; echo next", timeout=10)
    assert (after.stdout, after.stderr) == ("next\n", ""), "a job of the first command printed into the second"


def test_plain_mode_reaps_the_jobs_holding_the_output(any_mode, tmp_path):
    pid_file = tmp_path / "pid"
    any_mode.run(f"sh -c 'echo $$ > {pid_file}; exec sleep 30' &", timeout=10)
    pid, deadline = int(pid_file.read_text()), time.monotonic() + 5
    while running(pid):
        assert time.monotonic() < deadline, f"the job holding the command's output still runs ({any_mode.mode})"
        time.sleep(0.01)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = open(f"/proc/{pid}/stat").read().rpartition(") ")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_leftover_does_not_run_into_the_next_command(either_way, tmp_path):
    """A job that keeps the command's output is killed before the command's result comes back."""
    pid_file = tmp_path / "pid"
    either_way.run(f"sh -c 'echo $$ > {pid_file}; exec sleep 30' &", timeout=10)
    pid, deadline = int(pid_file.read_text()), time.monotonic() + 5  # SIGKILL is sent; let it land
    while running(pid):
        assert time.monotonic() < deadline, "the job holding the command's output still runs"
        time.sleep(0.01)


def test_a_job_that_redirected_its_output_keeps_running(session, tmp_path):
    done = tmp_path / f"done-{session.pid}"
    session.run(f"nohup sh -c 'sleep 0.5; echo ok > {done}' >/dev/null 2>&1 &", timeout=10).check()
    deadline = time.monotonic() + 10
    while not done.exists():
        assert time.monotonic() < deadline, "a job with its own output files was killed with its command"
        time.sleep(0.05)


def test_output_arriving_between_commands_is_dropped_before_the_next_one(session, caplog):
    """Output from a process that escaped every check (here: one outside the session writing to the shell's own
    pipes, as a job that cleared its environment and holds other descriptors could) is drained, with a warning,
    before the next command is sent, so it cannot reach that command's result."""
    session.run("true", timeout=10).check()
    for fd in (1, 2):
        with open(f"/proc/{session.pid}/fd/{fd}", "w") as pipe:
            pipe.write("stray\n")
    after = session.run("echo next", timeout=10)
    assert (after.stdout, after.stderr) == ("next\n", "")
    assert "stray byte(s)" in caplog.text


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_timeout_kills_double_forked_processes(shell):
    session = ShellSession(LocalChannel(shell))
    marker = f"cvmfx-test-{os.getpid()}-{time.monotonic_ns()}"
    with pytest.raises(CommandTimeout):
        session.run(f"(sh -c 'sleep 300; : {marker}' &); sleep 301; : {marker}", timeout=0.5)
    kill_and_wait_gone(session, marker, "a double-forked process survived the timeout kill")


def test_a_timeout_spares_what_earlier_commands_left_running_on_purpose(tmp_path):
    session = ShellSession(LocalChannel(["sh"]))
    pid_file = tmp_path / "pid"
    session.run(f"nohup sh -c 'echo $$ > {pid_file}; exec sleep 30' >/dev/null 2>&1 &", timeout=10).check()
    with pytest.raises(CommandTimeout):
        session.run("(sleep 300 &); sleep 301", timeout=0.5)
    subprocess.run(["sh", "-c", session.kill_command()], check=True, timeout=10)
    pid = int(pid_file.read_text())
    try:
        assert running(pid), "a timeout killed a job an earlier command had left running on purpose"
    finally:
        os.kill(pid, 9)
        session.close()
