"""The local provider: a machine is a process in a directory of the run, reached through a local ``/bin/sh``.

It exists to test the harness itself (plugin, keep policies, signals, sweep, the contract suite) without an
engine: it is registered under the ``cernvm_fixtures.providers`` entry point group only by the tests that use
it (see :func:`cernvm_fixtures.testing.register_provider`). Commands go through the same
:class:`~cernvm_fixtures.transport.shell.ShellSession` as SSH and Docker, over a local pipe.

What the platform knows of a machine (for ``sweep`` without a ledger) travels in the environment of its
processes: ``CVMFX_MACHINE`` names the machine, ``CVMFX_RESOURCE`` on the machine's init process carries
its ledger entry.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from .. import marks
from ..context import Context
from ..errors import CommandTimeout, PermanentError, ProviderError, ScreenUnavailable
from ..interrupts import signals_deferred
from ..ledger import Resource
from ..providers.base import Machine, Provider, ProviderOptions
from ..providers.kit import wait_until
from ..screen import write_png
from ..transport.base import Login, Result, Transport
from ..transport.shell import STDERR, STDOUT, SessionPool, ShellSession, kill_tree_command

PROFILE = str(resources.files(__package__) / "local.toml")
"""The profile of a local machine (its ready command), for a target's ``profile`` key."""
MACHINE_ENV = "CVMFX_MACHINE"
RESOURCE_ENV = "CVMFX_RESOURCE"
MARK_ENV = "CVMFX_MARK"
"""The entry's mark (:mod:`cernvm_fixtures.marks`) beside it: a sweep takes only what it can prove it made."""
INIT = str(resources.files(__package__) / "_init.py")
"""The machine's init program, run by path on the standard library alone (no import of this package: a tenth of
the start-up time, which every local machine's boot pays)."""
AS_SUBREAPER = [sys.executable, "-I", "-S", str(resources.files(__package__) / "_reaper.py")]
"""Runs a program (absolute path, then its arguments) under an init of its own that adopts and reaps its orphans:
they then land there, as on an instance, not among the children of the host's init, which other processes change
all the time (see :mod:`~cernvm_fixtures.transport.shell` on why that matters)."""
REBOOT = '#!/bin/sh\nkill -USR1 "$(cat "$CVMFX_DIRECTORY/init.pid")"\n'


class LocalOptions(ProviderOptions):
    """Keys of a ``local`` target."""

    boot_seconds: float = Field(0.0, ge=0)
    """How long the machine takes to boot (to interrupt a run during boot)."""


class LocalProvider(Provider[LocalOptions, "LocalMachine"]):
    """Machines as local processes: nothing to install, nothing that can outlive a test unnoticed."""

    name: ClassVar[str] = "local"
    Options: ClassVar[type[ProviderOptions]] = LocalOptions
    instance_kind: ClassVar[str] = "process"

    def machine(self, name: str) -> LocalMachine:
        return LocalMachine(self, name)

    def launch(self, machine: LocalMachine, context: Context) -> None:
        directory = self.run.machine_dir(machine.name)
        resource = self.record(machine, "process", machine.name, directory=str(directory))
        directory.mkdir(parents=True)
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        (bin_dir / "reboot").write_text(REBOOT)
        (bin_dir / "reboot").chmod(0o755)
        env = machine.environment()
        env[RESOURCE_ENV] = resource.to_json()
        env[MARK_ENV] = marks.mark(resource)
        self.start(directory, env)

    def start(self, directory: Path, env: dict[str, str]) -> None:
        """The create call of this platform: start the machine's init process (it detaches)."""
        with signals_deferred():  # a Ctrl-C inside Popen would leave a child no object holds
            subprocess.run(
                [sys.executable, "-I", "-S", INIT, str(directory), str(self.options.boot_seconds)],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                check=True,
            )

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        """Kill every process of the machine until none is left (one forked while the others were being killed is
        found the next round; each round stops them all before killing, so none can fork again), then remove its
        directory (only a run's machine directory)."""
        deadline = time.monotonic() + 30
        while pids := machine_processes(resource.name, resource.data.get("directory")):
            if time.monotonic() > deadline:
                raise ProviderError(f"{resource.name}: processes {pids} are still there 30 s after SIGKILL")
            for sent in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(pid, sent)
                    except ProcessLookupError:
                        pass
            time.sleep(0.005)
        directory = Path(resource.data.get("directory", ""))
        if directory.name == resource.name and directory.parent.name == "machines":
            shutil.rmtree(directory, ignore_errors=True)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        return screenshot(Path(resource.data.get("directory", "")), path, resource.name)

    @classmethod
    def leftovers(cls, target: object, recorded: set[str]) -> list[Resource]:
        """Machines found in the process table by the ledger entry their init process carries."""
        found = []
        for pid in machine_processes(None):
            environ = _environ(pid)
            text = environ.get(RESOURCE_ENV)
            if text:
                resource = Resource.from_json(text)
                if resource.name not in recorded and marks.proven(resource, environ.get(MARK_ENV)):
                    found.append(resource)
        return found


class LocalMachine(Machine):
    """A machine directory with an init process; its transport starts shells in that directory."""

    def __init__(self, provider: Provider, name: str) -> None:
        super().__init__(provider, name)
        self.directory = provider.run.machine_dir(name)
        self.traits["kind"] = provider.instance_kind

    def environment(self) -> dict[str, str]:
        """The environment every process of the machine starts with (its name marks it as the machine's)."""
        path = f"{self.directory / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        directory = str(self.directory)
        return {"PATH": path, "HOME": directory, MACHINE_ENV: self.name, "CVMFX_DIRECTORY": directory}

    def is_running(self) -> bool:
        """Whether the machine's init process still runs."""
        return self.init_pid() is not None

    def init_pid(self) -> int | None:
        """The pid of the machine's init process while it runs, else None."""
        try:
            pid = int((self.directory / "init.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _environ(pid).get(MACHINE_ENV) == self.name else None

    def wait_running(self, deadline: float) -> None:
        def started() -> bool | None:
            if not self.directory.is_dir():
                raise PermanentError(f"{self.name}: the machine directory is gone")
            return True if self.init_pid() is not None else None

        wait_until(f"{self.name}: init process started", started, deadline, 0.02)

    def transport(self) -> LocalTransport:
        return LocalTransport(self)

    def login_command(self) -> Login:
        return Login(["sh", "-c", 'cd "$1" && exec /bin/sh', "sh", str(self.directory)], self.environment())

    def console_log(self) -> str:
        try:
            return (self.directory / "console.log").read_text()
        except OSError:
            return ""

    def screenshot(self, path: Path) -> Path:
        return screenshot(self.directory, path, self.name)


class PipeChannel:
    """A local ``/bin/sh`` on pipes: the :class:`~cernvm_fixtures.transport.shell.Channel` of the local transport."""

    def __init__(self, machine: LocalMachine) -> None:
        with signals_deferred():  # a Ctrl-C inside Popen would leave a shell no object holds
            self.process = subprocess.Popen(
                [*AS_SUBREAPER, "/bin/sh"],
                cwd=machine.directory,
                env=machine.environment(),
                start_new_session=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._stdin = self.process.stdin
        self._open = {self.process.stdout.fileno(): STDOUT, self.process.stderr.fileno(): STDERR}

    def send(self, data: bytes) -> None:
        self._stdin.write(data)
        self._stdin.flush()

    def recv(self, timeout: float | None) -> tuple[int, bytes]:
        if not self._open:
            return STDOUT, b""
        ready = select.select(list(self._open), [], [], timeout)[0]
        if not ready:
            raise TimeoutError
        chunk = os.read(ready[0], 65536)
        stream = self._open[ready[0]]
        if not chunk:
            del self._open[ready[0]]
        return stream, chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class LocalTransport(Transport):
    """Commands through a pool of local shell sessions in the machine's directory."""

    def __init__(self, machine: LocalMachine) -> None:
        self.machine = machine
        self.pool = SessionPool(self._open, self._kill)

    def _open(self) -> ShellSession:
        channel = PipeChannel(self.machine)
        try:
            return ShellSession(channel)
        except BaseException:
            channel.close()
            raise

    @staticmethod
    def _kill(session: ShellSession) -> None:
        subprocess.run(["/bin/sh", "-c", session.kill_command()], check=False)

    def unreachable(self) -> str | None:
        if self.machine.init_pid() is None:
            return "the init process is not running"
        if not (self.machine.directory / "ready").exists():
            return "still booting"
        return None

    def connect(self) -> None:
        problem = self.unreachable()
        if problem:
            raise ProviderError(f"{self.machine.name}: cannot log in: {problem}")
        self.boot_id = (self.machine.directory / "boot_id").read_text()

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            return self._run_with_stdin(command, timeout, stdin)
        return self.pool.run(command, timeout)

    def _run_with_stdin(self, command: str, timeout: float | None, stdin: bytes) -> Result:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=self.machine.directory,
            env=self.machine.environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["/bin/sh", "-c", kill_tree_command(process.pid)], check=False)
            process.communicate()
            raise CommandTimeout(f"command {command!r} still running after {timeout} s; stopped it") from None
        return Result(command, process.returncode, out, err)

    def close(self) -> None:
        self.pool.clear()


def screenshot(directory: Path, path: Path, name: str) -> Path:
    """A local machine's screen is a file its processes draw: ``screen.png`` in its directory (tests write one)."""
    try:
        drawn = (directory / "screen.png").read_bytes()
    except OSError:
        raise ScreenUnavailable("a local machine shows no screen until a process writes screen.png") from None
    return write_png(drawn, path, name)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def machine_processes(name: str | None, directory: str | None = None) -> list[int]:
    """Pids of the processes of machine ``name`` (of every local machine if None), from their environment; with
    ``directory``, only that machine's (another run's machine may bear the same name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        environ = _environ(int(entry.name))
        value = environ.get(MACHINE_ENV)
        if value is None or name is not None and value != name:
            continue
        if directory is None or environ.get("CVMFX_DIRECTORY") == directory:
            found.append(int(entry.name))
    return found


def machines_under(directory: Path) -> list[str]:
    """Names of the local machines with a process still running whose directory lies under ``directory``."""
    found = set()
    for pid in machine_processes(None):
        env = _environ(pid)
        if env.get("CVMFX_DIRECTORY", "").startswith(f"{directory}/"):
            found.add(env[MACHINE_ENV])
    return sorted(found)
