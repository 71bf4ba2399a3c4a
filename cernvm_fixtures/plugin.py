"""The pytest plugin: options, markers, fixtures, reports. All pytest glue lives here.

Registered through the ``pytest11`` entry point, so installing the package is all
a downstream project needs. Tests ask for ``cernvm`` (or ``cernvm_host``,
``cernvm_fresh``) and are parametrized over the enabled targets with the target
name as test id, so ``pytest -k kvm`` selects a target.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import config as configuration
from .context import UserData
from .errors import CernvmError
from .instance import Instance, launch
from .ledger import Owner, Resource
from .providers import get as get_provider
from .run import Keep, Run

log = logging.getLogger(__name__)

RUN_KEY = pytest.StashKey["Harness"]()
TARGET_PROPERTY = "cernvm_target"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cernvm", "cernvm-fixtures: boot CernVM on each target and check it")
    group.addoption(
        "--cernvm-target",
        action="append",
        dest="cernvm_targets",
        metavar="NAME[,NAME...]",
        help="run only these targets (default: every enabled target in the config)",
    )
    group.addoption(
        "--cernvm-image",
        action="append",
        dest="cernvm_images",
        metavar="[TARGET=]IMAGE",
        help="boot this image instead of the configured one (all selected targets, or TARGET only)",
    )
    group.addoption(
        "--cernvm-profile",
        action="append",
        dest="cernvm_profiles",
        metavar="[TARGET=]PROFILE",
        help="expect this profile (shipped name or .toml path), for all selected targets or TARGET only",
    )
    group.addoption(
        "--cernvm-keep",
        dest="cernvm_keep",
        choices=[k.value for k in Keep],
        help="leave instances running after the run: never (default), on-failure, always",
    )
    group.addoption("--cernvm-config", dest="cernvm_config", metavar="PATH", help="config file declaring the targets")
    parser.addini("cernvm_targets", "targets to run (default: all enabled)", type="args", default=[])
    parser.addini("cernvm_image", "image for all selected targets", default="")
    parser.addini("cernvm_profile", "profile for all selected targets", default="")
    parser.addini("cernvm_keep", "never | on-failure | always", default="never")
    parser.addini("cernvm_config", "config file declaring the targets", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cernvm_context(cloud_config=None, ucernvm=None, amiconfig='', raw=''): boot a separate instance with this "
        "user data (shared by tests asking for the same)",
    )
    config.addinivalue_line(
        "markers", "cernvm_targets(*names): run this test only on these targets (others are skipped with a reason)"
    )
    if config.option.help or config.option.version:
        return
    try:
        harness = Harness.from_pytest(config)
    except CernvmError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[RUN_KEY] = harness


def _sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so every teardown runs."""
    raise KeyboardInterrupt("SIGTERM")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker joins the controller's run."""
    node.workerinput["cernvm_run"] = node.config.stash[RUN_KEY].run.id


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cernvm_target" not in metafunc.fixturenames:
        return
    harness = metafunc.config.stash[RUN_KEY]
    names = harness.selected
    metafunc.parametrize("cernvm_target", names, indirect=True, scope="session", ids=names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        target = _item_target(item)
        if target is None:
            continue
        item.add_marker(pytest.mark.xdist_group(name=f"cernvm-{target}"))
        marker = item.get_closest_marker("cernvm_targets")
        if marker and target not in marker.args:
            item.add_marker(pytest.mark.skip(reason=f"applies to targets {', '.join(marker.args)}, not {target}"))
    used = [t for t in dict.fromkeys(map(_item_target, items)) if t]
    if used and not config.option.collectonly:  # the doctor's checks: stop once instead of failing every test
        from .doctor import blocking

        stop, warnings = blocking(config.stash[RUN_KEY].targets[t] for t in used)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for line in warnings if reporter else ():
            reporter.write_line(f"cernvm-fixtures doctor: {line}", yellow=True)
        if stop:
            raise pytest.UsageError(stop)


def _item_target(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("cernvm_target") if callspec else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    target = _item_target(item)
    if target is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        report.user_properties.append((TARGET_PROPERTY, target))
    if report.failed:
        harness = item.config.stash[RUN_KEY]
        for instance in harness.used_by.get(item.nodeid, []):
            instance.failed = True
            report.sections.append((f"cernvm {instance.name}: console (tail)", instance.console_tail()))
            note = "" if harness.run.keep is not Keep.NEVER else " (destroyed at the end; --cernvm-keep on-failure keeps it)"
            report.sections.append((f"cernvm {instance.name}: log in", instance.login_command + note))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    harness = config.stash.get(RUN_KEY, None)
    if harness is None:
        return
    matrix: dict[str, dict[str, str]] = defaultdict(dict)
    targets: list[str] = []
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", []))
            target = props.get(TARGET_PROPERTY)
            if target is None:
                continue
            if target not in targets:
                targets.append(target)
            scenario = report.nodeid.split("[", 1)[0]
            matrix[scenario][target] = "ERROR" if outcome == "error" else outcome.upper()
    if matrix:
        terminalreporter.section("cernvm: target x scenario")
        width = max(len(s) for s in matrix)
        columns = [max(len(t), len("SKIPPED")) for t in targets]
        terminalreporter.write_line(" " * width + "  " + "  ".join(f"{t:<{c}}" for t, c in zip(targets, columns)))
        for scenario in sorted(matrix):
            cells = "  ".join(f"{matrix[scenario].get(t, '-'):<{c}}" for t, c in zip(targets, columns))
            terminalreporter.write_line(f"{scenario:<{width}}  {cells}".rstrip())
    kept = harness.kept + [k for node_kept in harness.workers_kept for k in node_kept]
    if kept:
        terminalreporter.section("cernvm: kept instances")
        for entry in kept:
            terminalreporter.write_line(f"{entry['name']} ({entry['target']}):")
            terminalreporter.write_line(f"  log in:  {entry['login']}")
            terminalreporter.write_line(f"  remove:  cernvm-fixtures down {entry['name']}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what a worker kept; reap what a crashed worker left."""
    harness = node.config.stash[RUN_KEY]
    harness.workers_kept.append(getattr(node, "workeroutput", {}).get("cernvm_kept", []))
    if error:
        harness.reap(reason=f"worker {node.gateway.id} crashed")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    harness = session.config.stash.get(RUN_KEY, None)
    if harness is not None and hasattr(session.config, "workeroutput"):
        harness.release_all()
        session.config.workeroutput["cernvm_kept"] = harness.kept


def pytest_unconfigure(config: pytest.Config) -> None:
    harness = config.stash.get(RUN_KEY, None)
    if harness is None:
        return
    harness.release_all()
    if not harness.is_worker:
        harness.reap(reason="left at the end of the run")
        harness.run.finish()
    if harness.previous_sigterm is not None:
        signal.signal(signal.SIGTERM, harness.previous_sigterm)


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

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> Harness:
        option = config.option
        path = getattr(option, "cernvm_config", None) or config.getini("cernvm_config") or None
        loaded = configuration.load(Path(path) if path else None, config.rootpath)
        wanted = [n for arg in (getattr(option, "cernvm_targets", None) or []) for n in arg.split(",") if n]
        wanted = wanted or config.getini("cernvm_targets") or loaded.enabled
        unknown = [n for n in wanted if n not in loaded.targets]
        if unknown:
            raise configuration.ConfigError(
                f"--cernvm-target: unknown target(s) {', '.join(unknown)}; "
                f"{loaded.origin} declares {', '.join(loaded.targets)}"
            )
        images = _per_target(getattr(option, "cernvm_images", None), config.getini("cernvm_image"), wanted, "--cernvm-image")
        profiles = _per_target(
            getattr(option, "cernvm_profiles", None), config.getini("cernvm_profile"), wanted, "--cernvm-profile"
        )
        targets = {n: loaded.targets[n].with_overrides(images.get(n), profiles.get(n)) for n in wanted}
        for target in targets.values():
            target.load_profile()
        keep = Keep(getattr(option, "cernvm_keep", None) or config.getini("cernvm_keep") or "never")
        workerinput = getattr(config, "workerinput", None)
        run = Run(
            workerinput["cernvm_run"] if workerinput else None,
            keep=keep,
            endpoint=lambda machine, host, port: config.hook.pytest_cernvm_endpoint(machine=machine, host=host, port=port),
        )
        return cls(run=run, config=loaded, targets=targets, selected=wanted, is_worker=workerinput is not None)

    def instance(self, target: configuration.Target, user_data: UserData) -> Instance:
        """The shared instance of a target for this user data, launched on first use."""
        key = (target.name, user_data.key)
        if key in self.broken:
            pytest.fail(f"instance for target {target.name!r} failed to come up earlier in this run:\n{self.broken[key]}", pytrace=False)
        if key not in self.shared:
            try:
                self.shared[key] = self._launch(target, user_data)
            except CernvmError as e:
                self.broken[key] = str(e)
                raise
        return self.shared[key]

    def fresh(self, target: configuration.Target, user_data: UserData) -> Instance:
        return self._launch(target, user_data)

    def finish(self, instance: Instance) -> None:
        """Keep or destroy an instance according to the keep policy."""
        keep = self.run.keep is Keep.ALWAYS or (self.run.keep is Keep.ON_FAILURE and instance.failed)
        if keep:
            instance.machine.keep()
            self.kept.append({"name": instance.name, "target": instance.target.name, "login": instance.login_command})
            return
        with _signals_deferred():
            instance.destroy()

    def release(self, target: str) -> None:
        """Done with a target (pytest moved on): finish its shared instances."""
        for key in [k for k in self.shared if k[0] == target]:
            self.finish(self.shared.pop(key))

    def release_all(self) -> None:
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

    def _launch(self, target: configuration.Target, user_data: UserData) -> Instance:
        if self.previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, _sigterm)
        return launch(target, self.run, user_data=user_data)


def _destroy(resource: Resource, run: Run) -> None:
    try:
        with _signals_deferred():
            get_provider(resource.provider).destroy_resource(resource)
    except CernvmError as e:
        log.error("cernvm: could not destroy %s %s: %s (cernvm-fixtures sweep retries)", resource.kind, resource.name, e)
        return
    run.ledger.forget(resource)


class _signals_deferred:
    """Hold SIGINT/SIGTERM while destroying, so a second Ctrl-C cannot cut a cleanup in half."""

    def __enter__(self) -> None:
        self.blocked = threading.current_thread() is threading.main_thread()
        if self.blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    def __exit__(self, *exc: object) -> None:
        if self.blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _per_target(values: list[str] | None, ini: str, targets: list[str], option: str) -> dict[str, str]:
    """Parse repeated ``[TARGET=]VALUE`` options into a per-target mapping."""
    found: dict[str, str] = {}
    for value in ([ini] if ini else []) + (values or []):
        name, sep, rest = value.partition("=")
        if sep and name in targets:
            found[name] = rest
        elif sep and configuration.NAME.match(name) and "/" not in name:
            raise configuration.ConfigError(f"{option}: {name!r} is not a selected target ({', '.join(targets)})")
        else:
            found.update(dict.fromkeys(targets, value))
    return found


def expect(instance: Instance, key: str) -> Any:
    """The profile's expectation ``section.key`` for this instance; skips the test if it does not apply.

    For an expectation a check can do without, use ``instance.expected(key)`` (None if not applicable).
    """
    expectation = instance.profile.expect(key, instance.traits)
    if expectation.value is None:
        pytest.skip(f"{instance.target.name}: {expectation.why}")
    return expectation.value


@pytest.fixture(scope="session")
def cernvm_harness(pytestconfig: pytest.Config) -> Harness:
    """The run's harness (targets, run id, instances); mostly for plugins and the CLI."""
    return pytestconfig.stash[RUN_KEY]


@pytest.fixture(scope="session")
def cernvm_target(request: pytest.FixtureRequest, cernvm_harness: Harness) -> Iterator[configuration.Target]:
    """The target a test runs on (parametrized over the selected targets, id = target name)."""
    target = cernvm_harness.targets[request.param]
    yield target
    cernvm_harness.release(target.name)


def _user_data(request: pytest.FixtureRequest) -> UserData:
    marker = request.node.get_closest_marker("cernvm_context")
    if marker is None:
        return UserData()
    try:
        return UserData(**marker.kwargs)
    except TypeError as e:
        raise pytest.UsageError(f"{request.node.nodeid}: cernvm_context marker: {e}; valid keys: {', '.join(UserData.__dataclass_fields__)}") from None


@pytest.fixture
def cernvm(request: pytest.FixtureRequest, cernvm_harness: Harness, cernvm_target: configuration.Target) -> Instance:
    """A ready instance of the target, shared by every test of the session that asks for the same user data."""
    instance = cernvm_harness.instance(cernvm_target, _user_data(request))
    cernvm_harness.used_by[request.node.nodeid].append(instance)
    return instance


@pytest.fixture
def cernvm_host(cernvm: Instance) -> Any:
    """A testinfra Host over the ``cernvm`` instance's own connection."""
    return cernvm.host


@pytest.fixture
def cernvm_fresh(
    request: pytest.FixtureRequest, cernvm_harness: Harness, cernvm_target: configuration.Target
) -> Iterator[Instance]:
    """A new instance for this test alone (for destructive tests); finished when the test ends."""
    instance = cernvm_harness.fresh(cernvm_target, _user_data(request))
    cernvm_harness.used_by[request.node.nodeid].append(instance)
    try:
        yield instance
    finally:
        cernvm_harness.finish(instance)
