"""The run inside a pytest process: selected targets, shared instances, keep policy, reaping, signal safety.

The plugin (``plugin.py``) only translates pytest's hooks and fixtures into calls on the :class:`Harness`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from . import config as configuration
from .context import UserData
from .errors import CernvmError
from .instance import Instance, launch
from .interrupts import cancel_scope, checkpoint, interrupt, signals_deferred
from .ledger import Owner, Resource
from .providers import get as get_provider
from .run import Keep, Run

log = logging.getLogger(__name__)

BOOT_AHEAD_THREADS = 32
"""Threads waiting for a provider's boot slot or booting (the per-provider limits decide how many boot at once)."""
BOOT_AHEAD_STOP = 120.0
"""Seconds the end of a run waits for a called-off boot-ahead launch to unwind (it destroys what it made)."""
WORKER_TEARDOWN = 120.0
"""Seconds an xdist controller given SIGTERM waits for its workers' teardown before reaping what is left."""


@dataclass
class Harness:
    """Per-process state: the run, the selected targets and the instances launched so far."""

    run: Run
    config: configuration.Config
    targets: dict[str, configuration.Target]
    selected: list[str]
    is_worker: bool = False
    shared: dict[tuple[str, str], Instance] = field(default_factory=dict)
    broken: dict[tuple[str, str], str] = field(default_factory=dict)
    used_by: dict[str, list[Instance]] = field(default_factory=lambda: defaultdict(list))
    kept: list[dict[str, str]] = field(default_factory=list)
    workers_kept: list[list[dict[str, str]]] = field(default_factory=list)
    previous_sigterm: Any = None
    previous_sigint: Any = None
    workers: list[int] = field(default_factory=list)
    """xdist controller: the pids of its workers, to pass SIGTERM on to."""
    ahead: dict[tuple[str, str], Future[Instance]] = field(default_factory=dict)
    """Boot-ahead launches not yet claimed by a test, by (target, user data)."""
    warmed: set[str] = field(default_factory=set)
    """xdist worker: the targets whose instances were booted ahead when their group reached this worker."""
    refused: dict[str, str] = field(default_factory=dict)
    """Targets that cannot take a command-line value given for every target, and why (see :meth:`check_used`)."""
    _cancel: threading.Event = field(default_factory=threading.Event)
    _pool: ThreadPoolExecutor | None = None
    _limits: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> Harness:
        option = config.option
        path = getattr(option, "cernvm_config", None) or config.getini("cernvm_config") or None
        loaded = configuration.load(Path(path) if path else None, config.rootpath)
        ini = str(config.inipath.name) if config.inipath else "ini"
        asked = [n for arg in (getattr(option, "cernvm_targets", None) or []) for n in arg.split(",") if n]
        asked_by = "--cernvm-target"
        if not asked and config.getini("cernvm_targets"):
            asked, asked_by = config.getini("cernvm_targets"), f"{ini}: cernvm_targets"
        asked = asked or loaded.enabled
        aliases = loaded.aliases()
        unknown = [n for n in asked if n not in aliases]
        if unknown:
            raise configuration.ConfigError(
                f"{asked_by}: unknown target(s) {', '.join(unknown)}; {loaded.origin} declares {', '.join(aliases)}"
            )
        wanted = list(dict.fromkeys(cell for name in asked for cell in aliases[name]))
        aliases = {name: [c for c in cells if c in wanted] for name, cells in aliases.items()}
        releases = _per_target(getattr(option, "cernvm_releases", None), "", aliases, "--cernvm-release", ini)
        images = {name: given._replace(value=f"release:{given.value}") for name, given in releases.items()}
        images.update(
            _per_target(
                getattr(option, "cernvm_images", None), config.getini("cernvm_image"), aliases, "--cernvm-image", ini
            )
        )
        profiles = _per_target(
            getattr(option, "cernvm_profiles", None), config.getini("cernvm_profile"), aliases, "--cernvm-profile", ini
        )
        targets, refused = {}, {}
        for name in wanted:
            image, profile = images.get(name), profiles.get(name)
            try:
                targets[name] = loaded.targets[name].with_overrides(
                    image.value if image else None,
                    profile.value if profile else None,
                    image_from=image.origin if image else None,
                    profile_from=profile.origin if profile else None,
                )
                targets[name].load_profile()
            except configuration.ConfigError as e:
                given = [o for o in (image, profile) if o is not None]
                if not given or not all(o.every for o in given):
                    raise
                # A value for every target that this one cannot take (an appliance variant on docker): it stops the
                # run once its tests are collected, unless -k/-m deselected them (pytest -k kvm --cernvm-image ...).
                refused[name] = str(e)
                targets[name] = loaded.targets[name]
        if refused and (getattr(config, "workerinput", None) or getattr(option, "numprocesses", None)):
            raise configuration.ConfigError(  # xdist: -k/-m select on the workers, after they collected
                "\n".join(refused.values()) + "\n(with pytest-xdist the selection is not known when the options are "
                "checked: give the value to the targets that take it, --cernvm-image TARGET=IMAGE, or select those "
                "with --cernvm-target)"
            )
        keep = _keep(getattr(option, "cernvm_keep", None), config.getini("cernvm_keep"), ini)
        _check_image_base(getattr(option, "cernvm_image_base", None))
        _check_screens(config, ini)
        workerinput = getattr(config, "workerinput", None)
        run = Run(
            workerinput["cernvm_run"] if workerinput else None,
            keep=keep,
            screens=_screens(config),
            endpoint=lambda machine, host, port: config.hook.pytest_cernvm_endpoint(
                machine=machine, host=host, port=port
            ),
        )
        return cls(
            run=run,
            config=loaded,
            targets=targets,
            selected=wanted,
            is_worker=workerinput is not None,
            refused=refused,
        )

    def check_used(self, used: set[str]) -> None:
        """Stop (UsageError, one message naming each option) if a test of a target that refused a value given for
        every target is still selected once ``-k``/``-m`` have deselected theirs."""
        problems = [self.refused[name] for name in self.selected if name in used and name in self.refused]
        if problems:
            raise pytest.UsageError("\n".join(problems))

    def instance(self, target: configuration.Target, user_data: UserData) -> Instance:
        """The shared instance of a target for this user data, launched on first use."""
        key = (target.name, user_data.key)
        if key in self.broken:
            pytest.fail(
                f"instance for target {target.name!r} failed to come up earlier in this run:\n{self.broken[key]}",
                pytrace=False,
            )
        if key not in self.shared:
            ahead = self.ahead.pop(key, None)
            try:
                self.shared[key] = self._claim(ahead) if ahead is not None else self._launch(target, user_data)
            except CernvmError as e:
                self.broken[key] = str(e)
                raise
        return self.shared[key]

    def boot_ahead(self, wanted: list[tuple[configuration.Target, UserData]]) -> None:
        """Launch the shared instances the collected tests will use, concurrently (at most each provider's
        ``parallel_boots`` at a time), so that each test waits only for its own instance."""
        if not wanted or self._cancel.is_set():
            return
        self.forward_sigterm_here()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=BOOT_AHEAD_THREADS, thread_name_prefix="cernvm-boot-ahead")
        for target, user_data in wanted:
            key = (target.name, user_data.key)
            if key in self.shared or key in self.ahead:
                continue
            if target.provider not in self._limits:
                self._limits[target.provider] = threading.BoundedSemaphore(get_provider(target.provider).parallel_boots)
            self.ahead[key] = self._pool.submit(self._boot, self._limits[target.provider], target, user_data)

    def _boot(self, limit: threading.BoundedSemaphore, target: configuration.Target, user_data: UserData) -> Instance:
        with limit, cancel_scope(self._cancel):
            checkpoint()
            return launch(target, self.run, user_data=user_data)

    def _claim(self, ahead: Future[Instance]) -> Instance:
        """Wait for a boot-ahead launch in short steps (a signal's KeyboardInterrupt is raised at once); an
        interrupt calls off every boot still under way, so they unwind while pytest does."""
        try:
            while not ahead.done():
                wait([ahead], timeout=0.1)
        except BaseException:
            self._cancel.set()
            raise
        return ahead.result()

    def stop_boot_ahead(self) -> None:
        """Call off the launches no test claimed and finish what they made: nothing booted ahead outlives the run."""
        if self._pool is None:
            return
        self._cancel.set()
        for key, ahead in list(self.ahead.items()):
            try:
                instance = ahead.result(timeout=BOOT_AHEAD_STOP)
            except BaseException as e:  # noqa: BLE001 - cancelled or failed: the launch destroyed its own machine
                log.debug("boot-ahead of %s ended: %s", key[0], e)
            else:
                self.finish(instance)
            del self.ahead[key]
        self._pool.shutdown(wait=False, cancel_futures=True)

    def fresh(self, target: configuration.Target, user_data: UserData) -> Instance:
        return self._launch(target, user_data)

    def finish(self, instance: Instance) -> None:
        """Keep or destroy an instance according to the keep policy."""
        keep = self.run.keep is Keep.ALWAYS or (self.run.keep is Keep.ON_FAILURE and instance.failed)
        if keep:
            instance.machine.keep()
            if "transport" in instance.__dict__:  # the machine stays; this process's connection to it does not
                instance.transport.close()
            self.kept.append({"name": instance.name, "target": instance.target.name, "login": instance.login_command})
            return
        with signals_deferred():
            instance.destroy()

    def release(self, target: str) -> None:
        """Done with a target (pytest moved on): finish its shared instances."""
        for key in [k for k in self.shared if k[0] == target]:
            self.finish(self.shared.pop(key))

    def release_all(self) -> None:
        self.stop_boot_ahead()
        for target in {k[0] for k in self.shared}:
            self.release(target)

    def reap(self, reason: str) -> None:
        """Destroy run resources nobody owns any more (not kept, owner gone or us); each is a leak to report."""
        me = Owner.current()
        for resource in reversed(self.run.ledger.entries()):  # newest first: an instance before its network
            if resource.kept or (resource.owner != me and resource.owner.alive()):
                continue
            log.warning("cernvm: destroying %s %s %s (%s)", resource.provider, resource.kind, resource.name, reason)
            _destroy(resource, self.run)

    def forward_sigterm(self) -> None:
        """xdist controller: on SIGTERM, signal every worker, wait (bounded) for their teardown, then unwind."""
        if self.previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, self._forward)

    def _forward(self, signum: int, frame: Any) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + WORKER_TEARDOWN
        while self._workers_tearing_down() and time.monotonic() < deadline:
            time.sleep(0.1)
        raise KeyboardInterrupt("SIGTERM")

    def _workers_tearing_down(self) -> bool:
        """Whether a live worker still holds something it must destroy. A worker whose teardown is done stays
        alive until this controller closes its gateway, so waiting for the processes to end would wait in vain."""
        live = {pid for pid in self.workers if _running(pid)}
        return bool(live) and any(r.owner.pid in live and not r.kept for r in self.run.ledger.entries())

    def _launch(self, target: configuration.Target, user_data: UserData) -> Instance:
        self.forward_sigterm_here()
        return launch(target, self.run, user_data=user_data)

    def forward_sigterm_here(self) -> None:
        """SIGTERM (a cancelled CI job) unwinds this process like Ctrl-C from now on, and neither is lost in a
        finalizer (:func:`interrupts.interrupt`); set from the main thread, once."""
        if self.previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.previous_sigint = signal.signal(signal.SIGINT, interrupt)


def _keep(option: str | None, ini_value: str, ini: str) -> Keep:
    """The keep policy: the option (argparse checked its choices), else the ini key, checked here."""
    try:
        return Keep(option or ini_value or "never")
    except ValueError:
        raise configuration.ConfigError(
            f"{ini}: cernvm_keep = {ini_value!r}: expected one of {', '.join(k.value for k in Keep)}"
        ) from None


def _check_image_base(base: str | None) -> None:
    """``--cernvm-image-base`` is where release files are published: a URL, checked before any test needs it."""
    from .download import is_url, redact

    if base and not is_url(base):
        raise configuration.ConfigError(
            f"--cernvm-image-base {redact(base)}: expected an http:// or https:// URL (where the release files are "
            "published, e.g. https://cernvm.cern.ch/releases/)"
        )


def _check_screens(config: pytest.Config, ini: str) -> None:
    """The screenshot directory must be one (or not exist yet): found at load, not when the first test fails."""
    option = getattr(config.option, "cernvm_screens", None)
    chosen = option or config.getini("cernvm_screens")
    if chosen and Path(chosen).exists() and not Path(chosen).is_dir():
        origin = "--cernvm-screens" if option else f"{ini}: cernvm_screens ="
        raise configuration.ConfigError(f"{origin} {chosen}: exists and is not a directory")


def _screens(config: pytest.Config) -> Path | None:
    """Where failure screenshots go: the option or ini key, else beside the JUnit file (a CI job's artifacts)."""
    chosen = getattr(config.option, "cernvm_screens", None) or config.getini("cernvm_screens")
    if chosen:
        return Path(chosen).resolve()
    junit = getattr(config.option, "xmlpath", None)
    return Path(junit).resolve().parent / "cernvm-screens" if junit else None


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _destroy(resource: Resource, run: Run) -> None:
    with signals_deferred():
        try:
            get_provider(resource.provider).destroy_resource(resource)
        except CernvmError as e:
            log.error(
                "cernvm: could not destroy %s %s: %s (cernvm-fixtures sweep retries)", resource.kind, resource.name, e
            )
            return
        run.ledger.forget(resource)


class Override(NamedTuple):
    """A value the command line (or the ini file) gives one target instead of its config's."""

    value: str
    origin: str
    """The option and the value as given, for messages: ``--cernvm-image kvm=x.iso``, ``--cernvm-image x.iso
    (target kvm)``, ``pytest.ini: cernvm_image = x.iso (target kvm)``."""
    every: bool = False
    """Given for every selected target (no ``TARGET=``)."""


def _per_target(
    values: list[str] | None, ini_value: str, aliases: dict[str, list[str]], option: str, ini: str = "ini"
) -> dict[str, Override]:
    """Parse repeated ``[TARGET=]VALUE`` options into one :class:`Override` per target (a table name standing for
    its images); the last value for a target wins, the ini key's first."""
    from .download import redact

    found: dict[str, Override] = {}
    selected = [name for name, cells in aliases.items() if cells]
    given = [(f"{ini}: {option.removeprefix('--').replace('-', '_')} =", ini_value)] if ini_value else []
    for source, value in given + [(option, v) for v in values or []]:
        name, sep, rest = value.partition("=")
        if sep and configuration.NAME.match(name) and "/" not in name:
            origin = f"{source} {name}={redact(rest)}"
            if not aliases.get(name):
                raise configuration.ConfigError(f"{origin}: {name!r} is not a selected target ({', '.join(selected)})")
            found.update(dict.fromkeys(aliases[name], Override(rest, origin)))
        else:
            for cell in (c for cells in aliases.values() for c in cells):
                found[cell] = Override(value, f"{source} {redact(value)} (target {cell})", every=True)
    return found
