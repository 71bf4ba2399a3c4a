"""The instance handle a test gets, and how one is brought up: launch, then readiness in layers.

Readiness has four steps, each with its own deadline (scaled by the machine's
slowdown, e.g. under software emulation): the platform says it is *running*,
the instance is *reachable* (SSH banner / container answers), the harness can
*log in*, and the image says it is *ready* (the profile's ready command). A
failure names the step and carries the tail of the console log and the screen at
that moment (a screenshot, and the text of tty1 where the guest can be reached).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Deadlines, Target, effective_deadlines
from .context import Context, HostKey, UserData
from .errors import CernvmError, PermanentError, ReadinessError, ScreenUnavailable
from .interrupts import checkpoint
from .profile import Profile
from .providers import get as get_provider
from .providers.base import Machine
from .run import Keep, Run
from .screen import Capture, file_label, vcsa_text
from .transport.base import TIMEOUT, Default, Result, Transport
from .transport.ssh import SSHTransport

if TYPE_CHECKING:
    import testinfra.host

log = logging.getLogger(__name__)

CONSOLE_TAIL = 40
SCREEN_DEVICE = "/dev/vcsa1"
"""The first virtual console's memory inside the guest: rows and columns, then character and attribute per cell."""


class Instance:
    """One booted machine or container: run commands, move files, read its console, log in."""

    def __init__(self, machine: Machine, target: Target, profile: Profile, context: Context) -> None:
        self.machine = machine
        self.target = target
        self.profile = profile
        self.context = context
        self.failed = False
        """Set by the plugin when a test using this instance failed (for the keep policy)."""
        self.ready_after: float | None = None
        """Seconds from launch to ready."""
        self.timings: dict[str, float] = {}
        """Seconds per step of the last bring-up: prepare, engine create, running, reachable, login, ready."""
        self.logged_in = False
        """Whether readiness ever logged in (only then is the guest asked for anything over the network)."""
        self._host: tuple[str | None, testinfra.host.Host] | None = None

    def __repr__(self) -> str:
        return f"<Instance {self.name} target={self.target.name}>"

    @property
    def name(self) -> str:
        return self.machine.name

    @cached_property
    def deadlines(self) -> Deadlines:
        """Seconds per readiness step: the profile's first-boot deadlines, overridden by the target's own keys."""
        return effective_deadlines(self.target.deadlines, self.profile)

    @property
    def slowdown(self) -> float:
        """How many times slower than the profile's deadlines assume this platform is (e.g. software emulation)."""
        return self.machine.slowdown

    @property
    def traits(self) -> Mapping[str, str]:
        """What profile rules match on: provider, target, kind, instance type, NIC model, ..."""
        return self.machine.traits

    def expected(self, key: str) -> Any:
        """The profile's ``section.key`` for this instance's traits, or None where it does not apply."""
        return self.profile.expect(key, self.traits).value

    @property
    def shared_folders(self) -> Mapping[str, Path]:
        """Shared folder name -> host directory (local providers only)."""
        return self.machine.shared_folders

    @cached_property
    def transport(self) -> Transport:
        transport = self.machine.transport()
        if self.target.host_key == "trust-first" and isinstance(transport, SSHTransport):
            transport.trust_first = True
        return transport

    @property
    def host_key_trust(self) -> str | None:
        """How the SSH host key was accepted, for reports: 'verified', 'trusted on first use', or None (no SSH yet)."""
        verified = getattr(self.__dict__.get("transport"), "verified", None)
        return None if verified is None else "verified" if verified else "trusted on first use"

    def run(
        self, command: str, *, timeout: float | Default | None = TIMEOUT, stdin: bytes | str | None = None
    ) -> Result:
        """Run a shell command as ``sh -c`` would; exit status, stdout and stderr come back separately.

        ``timeout``: seconds (None: no limit), by default the target's ``command_timeout``.
        """
        if isinstance(stdin, str):
            stdin = stdin.encode()
        if timeout is TIMEOUT:
            timeout = self.target.command_timeout
        return self.transport.run(command, timeout=timeout, stdin=stdin)

    def put(self, data: bytes | str | Path, remote: str, mode: int | None = None) -> None:
        """Write bytes, text or a local file's content to ``remote``."""
        if isinstance(data, Path):
            data = data.read_bytes()
        elif isinstance(data, str):
            data = data.encode()
        self.transport.put(data, remote, mode)

    def get(self, remote: str, local: Path | None = None) -> bytes:
        """Read ``remote``; also write it to ``local`` if given."""
        data = self.transport.get(remote)
        if local is not None:
            local.write_bytes(data)
        return data

    @property
    def host(self) -> testinfra.host.Host:
        """A testinfra Host whose commands go through this instance's transport (renewed after a reboot)."""
        from .testinfra_backend import host_for

        boot_id = self.transport.boot_id
        if self._host is None or self._host[0] != boot_id:
            self._host = (boot_id, host_for(self))
        return self._host[1]

    def reboot(self) -> Instance:
        """Reboot and wait until ready again; the boot id must change (so it really restarted)."""
        self.transport.connect()
        before = self.transport.boot_id
        try:
            self.transport.exec("(sleep 1; reboot) >/dev/null 2>&1 &", timeout=30)
        finally:
            self.transport.close()
        deadline = time.monotonic() + self.deadlines.running * self.machine.slowdown
        while True:
            self.wait_ready()
            if self.transport.boot_id != before:
                return self
            if time.monotonic() > deadline:
                raise self.not_ready("reboot", self.deadlines.running, "boot id did not change")
            self.transport.close()
            time.sleep(0.5)

    def auth_methods(self, user: str) -> list[str]:
        """The login methods the instance's SSH server offers ``user`` (Unsupported: not reached over SSH)."""
        return self.transport.auth_methods(user)

    def password_login(self, user: str, password: str) -> bool:
        """Whether the instance's SSH server lets ``user`` in with ``password`` (a separate connection, closed at
        once; the password is never logged). Unsupported where the instance is not reached over SSH."""
        return self.transport.password_login(user, password)

    def change_image(self, target: Target) -> None:
        """Put ``target``'s image where the instance boots from, keeping its disks: its next reboot is an upgrade to
        that image (Unsupported where the platform cannot: the provider's ``no_upgrade`` says why)."""
        self.machine.change_image(target)

    def key_login(self, user: str) -> str | None:
        """Log in as ``user`` with the run's key on a connection of its own: who ``id -un`` says is logged in, or
        None when the key is refused. Unsupported where the instance is not reached over SSH."""
        return self.transport.key_login(user)

    def press_power_button(self) -> None:
        """Press the ACPI power button (Unsupported where the platform has none: the provider's
        ``no_power_button`` says why); the guest decides whether it powers off (:meth:`is_running`)."""
        self.transport.close()
        self.machine.press_power_button()

    def set_link(self, up: bool) -> None:
        """Plug or pull the instance's network cable (Unsupported where the platform has none: the provider's
        ``no_cable`` says why); pulling it drops the transport first (SSH goes through the instance's NIC)."""
        if not up:
            self.transport.close()
        self.machine.set_link(up)

    def is_running(self) -> bool:
        """Whether the platform still runs the instance (False once it powered off)."""
        return self.machine.is_running()

    def console_log(self) -> str:
        return self.machine.console_log()

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        return "\n".join(self.console_log().rstrip().splitlines()[-lines:])

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the guest's screen as it is now to ``path`` (ScreenUnavailable: the platform has none)."""
        return self.machine.screenshot(path)

    def screen_text(self) -> str | None:
        """The text of the guest's first virtual console, read from inside (``/dev/vcsa1``) where the guest is
        reachable over its transport, else what the platform can read from outside (KVM: the VGA text memory);
        None where neither works."""
        try:
            # only once logged in: an instance that never got that far is not asked over the network (a cloud's
            # address for a machine that failed to provision may be anyone's)
            if self.logged_in and self.transport.unreachable() is None:
                result = self.run(f"cat {SCREEN_DEVICE}", timeout=15)
                if result.succeeded:
                    return vcsa_text(result.stdout_bytes)
        except Exception as e:  # noqa: BLE001 - diagnostics of a failure must not fail
            log.debug("%s: no screen text from inside: %s", self.name, e)
        try:
            return self.machine.screen_text()
        except Exception as e:  # noqa: BLE001 - diagnostics of a failure must not fail
            log.debug("%s: no screen text from outside: %s", self.name, e)
            return None

    def capture(self, label: str) -> Capture:
        """Screenshot and screen text now, for a failure report: the PNG goes to the run's screenshots directory,
        by machine and ``label`` (the test or the readiness step). Never raises: a screenshot that fails is noted."""
        path = self.machine.provider.run.screens / self.name / f"{file_label(label)}.png"
        try:
            shot: Path | None = self.screenshot(path)
            problem = ""
        except ScreenUnavailable as e:
            shot, problem = None, e.reason
        except Exception as e:  # noqa: BLE001 - never hide the failure being reported
            log.warning("%s: the screenshot failed: %s: %s", self.name, type(e).__name__, e)
            shot, problem = None, f"the screenshot failed: {type(e).__name__}: {e}"
        return Capture(shot, problem, self.screen_text())

    def not_ready(self, step: str, waited: float, detail: str) -> ReadinessError:
        """The error of a failed readiness step, with the console tail and the screen at that moment."""
        return ReadinessError(
            self.name,
            step,
            waited,
            detail,
            self.console_tail(),
            self.machine.network(),
            self.capture(f"not-ready-{step}"),
        )

    @property
    def login_command(self) -> str:
        """What a person types to get a shell (display form; the ledger keeps the argv)."""
        return str(self.machine.login_command())

    def wait_ready(self) -> Instance:
        """Walk the readiness steps; raise ReadinessError naming the first one that misses its deadline."""
        start = time.monotonic()
        scale = self.machine.slowdown
        deadlines = self.deadlines

        def step(name: str, seconds: float, attempt: Callable[[], str | None]) -> None:
            begun = time.monotonic()
            deadline = begun + seconds * scale
            while True:
                try:
                    problem = attempt()
                except PermanentError as e:
                    raise self.not_ready(name, time.monotonic() - begun, str(e)) from None
                except CernvmError as e:
                    problem = str(e)
                except Exception as e:  # noqa: BLE001 - OSError, paramiko's SSHException, ...: retry until the deadline
                    problem = f"{type(e).__name__}: {e}"
                if problem is None:
                    log.info("%s: %s after %.1f s", self.name, name, time.monotonic() - start)
                    self.timings[name] = time.monotonic() - begun
                    return
                if time.monotonic() >= deadline:
                    raise self.not_ready(name, time.monotonic() - begun, problem)
                checkpoint()
                time.sleep(0.1)

        def running() -> str | None:
            self.machine.wait_running(time.monotonic() + deadlines.running * scale)
            return None

        def login() -> str | None:
            self.transport.connect()
            self.logged_in = True
            return None

        def ready() -> str | None:
            command = self.expected("ready.command") or "true"
            result = self.run(command, timeout=30)
            if result.succeeded:
                return None
            return f"ready command {command!r} exited {result.exit_status}"

        step("running", deadlines.running, running)
        step("reachable", deadlines.reachable, self.transport.unreachable)
        step("login", deadlines.login, login)
        step("ready", deadlines.ready, ready)
        self.ready_after = time.monotonic() - start
        return self

    def destroy(self) -> None:
        """Close the connection and destroy everything the instance owns (idempotent)."""
        try:
            if "transport" in self.__dict__:
                self.transport.close()
        finally:
            self.machine.destroy()


def launch(target: Target, run: Run, *, user_data: UserData | None = None, profile: Profile | None = None) -> Instance:
    """Create an instance for a target and wait until it is ready.

    If anything fails (including KeyboardInterrupt/SystemExit) before the
    instance is ready, it is destroyed right away, unless the keep policy keeps
    failures, in which case it is marked kept and the error says how to log in.
    """
    began = time.time()
    provider = get_provider(target.provider)(target, run)
    profile = profile or target.load_profile()
    machine = provider.machine(run.name(target.name))
    host_key = HostKey.generate() if target.host_key == "context" else None
    context = Context(
        hostname=machine.name, ssh_keys=(run.public_key,), user_data=user_data or UserData(), host_key=host_key
    )
    if host_key is not None:
        machine.context_host_keys = [host_key.public]
    try:
        provider.launch(machine, context)
        created = time.time()
        engine = max((r.created for r in machine.resources), default=created)  # the last record precedes the create
        instance = Instance(machine, target, profile, context)
        instance.timings.update({"prepare": engine - began, "engine create": created - engine})
        return instance.wait_ready()
    except BaseException as error:
        if run.keep is not Keep.NEVER and isinstance(error, CernvmError) and machine.resources:
            machine.keep()
            error.add_note(f"kept for debugging: {machine.login_command()}")
            raise
        try:
            machine.destroy()
        except BaseException as e:  # noqa: BLE001 - the original error matters more; the ledger still has it
            log.error("%s: cleanup after failed launch did not finish: %s", machine.name, e)
        raise
