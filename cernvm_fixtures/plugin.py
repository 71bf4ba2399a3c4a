"""The pytest plugin: options, markers, fixtures, reports; the run's lifecycle is the Harness (harness.py).

Registered through the ``pytest11`` entry point, so installing the package is all
a downstream project needs. Tests ask for ``cernvm`` (or ``cernvm_host``,
``cernvm_fresh``) and are parametrized over the enabled targets with the target
name as test id, so ``pytest -k kvm`` selects a target.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from . import config as configuration
from .context import UserData
from .download import redact
from .errors import CernvmError, ReadinessError
from .harness import Harness
from .instance import Instance
from .report import SCREEN_TEXT_PROPERTY, SCREENSHOT_PROPERTY, column_of
from .run import Keep
from .screen import Capture
from .sweep import reap

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
        "--cernvm-release",
        action="append",
        dest="cernvm_releases",
        metavar="[TARGET=][BRANCH/]YYYY.MM-R",
        help="boot this CernVM release: each target fetches the published file in its own format (iso, hvm, vhd...)",
    )
    group.addoption(
        "--cernvm-image-base",
        dest="cernvm_image_base",
        metavar="URL",
        help="where --cernvm-release files are published (default: CernVM's release area)",
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
    group.addoption(
        "--cernvm-screens",
        dest="cernvm_screens",
        metavar="DIR",
        help="where screenshots of failing instances go (default: cernvm-screens beside --junitxml, else the state "
        "directory's screens/)",
    )
    group.addoption(
        "--cernvm-offline",
        dest="cernvm_offline",
        action="store_true",
        help="use only cached images: an image URL not in the cache is an error instead of a download",
    )
    group.addoption(
        "--cernvm-no-boot-ahead",
        dest="cernvm_boot_ahead",
        action="store_false",
        default=None,
        help="boot each instance when its first test needs it, instead of all of them in parallel at the start",
    )
    parser.addini("cernvm_targets", "targets to run (default: all enabled)", type="args", default=[])
    parser.addini(
        "cernvm_boot_ahead", "boot the run's shared instances in parallel at the start", type="bool", default=True
    )
    parser.addini("cernvm_image", "image for all selected targets", default="")
    parser.addini("cernvm_profile", "profile for all selected targets", default="")
    parser.addini("cernvm_keep", "never | on-failure | always", default="never")
    parser.addini("cernvm_config", "config file declaring the targets", default="")
    parser.addini("cernvm_screens", "directory for screenshots of failing instances", default="")


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
    if getattr(config.option, "cernvm_offline", False):
        os.environ["CERNVM_FIXTURES_OFFLINE"] = "1"  # read where an image URL is resolved (workers inherit it)
    if getattr(config.option, "cernvm_image_base", None):
        os.environ["CERNVM_FIXTURES_IMAGE_BASE"] = config.option.cernvm_image_base
    try:
        harness = Harness.from_pytest(config)
    except CernvmError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[RUN_KEY] = harness


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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouped = config.pluginmanager.hasplugin("xdist")  # xdist registers its marker; without it, add none
    for item in items:
        target = _item_target(item)
        if target is None:
            continue
        if grouped:
            item.add_marker(pytest.mark.xdist_group(name=f"cernvm-{target}"))
        marker = item.get_closest_marker("cernvm_targets")
        declared = config.stash[RUN_KEY].targets[target].declared
        if marker and target not in marker.args and declared not in marker.args:
            item.add_marker(pytest.mark.skip(reason=f"applies to targets {', '.join(marker.args)}, not {target}"))
    used = [t for t in dict.fromkeys(map(_item_target, items)) if t]
    if used and not config.option.collectonly:  # the doctor's checks: stop once instead of failing every test
        from .doctor import blocking

        stop, warnings = blocking(config.stash[RUN_KEY].targets[t] for t in used)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for line in warnings:
                reporter.write_line(f"cernvm-fixtures doctor: {line}", yellow=True)
        if stop:
            raise pytest.UsageError(stop)


@pytest.hookimpl(trylast=True)  # after -k/-m deselected what they do
def pytest_collection_finish(session: pytest.Session) -> None:
    """A value given for every target that one of them cannot take stops the run here, once, if that target's tests
    are still selected (``pytest -k kvm --cernvm-image appliance:no-cvmfs`` runs; without ``-k`` it stops)."""
    harness = session.config.stash.get(RUN_KEY, None)
    if harness is not None and harness.refused:
        harness.check_used({t for t in map(_item_target, session.items) if t})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller, ``--dist loadgroup``: each target's tests on one worker (they share its instances).

    xdist marks a group by renaming the test (``nodeid@group``), which pytest 9 no longer lets it do, so the
    scheduler finds the target in the test id itself.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    targets = sorted(config.stash[RUN_KEY].selected, key=len, reverse=True)

    class TargetScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]") or not nodeid.endswith("]"):
                return super()._split_scope(nodeid)
            ids = nodeid[nodeid.rfind("[") + 1 : -1]
            for target in targets:
                if f"-{ids}-".find(f"-{target}-") >= 0:
                    return f"cernvm-{target}"
            return nodeid

    return TargetScheduling(config, log)


def _item_target(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("cernvm_target") if callspec else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    target = _item_target(item)
    if target is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        declared = item.config.stash[RUN_KEY].targets[target]
        found = [(TARGET_PROPERTY, declared.declared), ("cernvm_verification", declared.verification)]
        if declared.image_label is not None:
            found.append(("cernvm_image_label", declared.image_label))
        for instance in item.config.stash[RUN_KEY].instances.used_by.get(item.nodeid, [])[:1]:
            found += _properties(instance)
        report.user_properties.extend(found)  # the summary grid reads this report
        item.user_properties.extend(found)  # JUnit XML takes the item's properties from the teardown report
    if report.failed:
        harness = item.config.stash[RUN_KEY]
        for instance in harness.instances.used_by.get(item.nodeid, []):
            instance.failed = True
            report.sections.append((f"cernvm {instance.name}: console (tail)", instance.console_tail()))
            if report.when in ("setup", "call"):
                _attach_screen(item, report, instance.name, instance.capture(item.nodeid))
            note = (
                ""
                if harness.run.keep is not Keep.NEVER
                else " (destroyed at the end; --cernvm-keep on-failure keeps it)"
            )
            report.sections.append((f"cernvm {instance.name}: log in", instance.login_command + note))
        error = call.excinfo.value if call.excinfo is not None else None
        if report.when == "setup" and isinstance(error, ReadinessError) and isinstance(error.screen, Capture):
            _attach_screen(item, report, error.instance, error.screen)  # taken when the step failed
    return report


def _attach_screen(item: pytest.Item, report: pytest.TestReport, name: str, capture: Capture) -> None:
    """The screen of a failing test's instance: a report section (next to the console tail) and JUnit properties
    naming the PNG and holding the screen text (``cernvm-fixtures report`` shows both)."""
    report.sections.append((f"cernvm {name}: screen", capture.describe()))
    found = []
    if capture.path is not None:
        found.append((SCREENSHOT_PROPERTY, str(capture.path)))
    if capture.text is not None:
        found.append((SCREEN_TEXT_PROPERTY, capture.text))
    report.user_properties.extend(found)
    item.user_properties.extend(found)


def _properties(instance: Instance) -> list[tuple[str, str]]:
    """What a JUnit reader (``cernvm-fixtures report``) shows of the instance a test ran on."""
    found = [
        ("cernvm_provider", instance.target.provider),
        ("cernvm_image", redact(instance.target.image)),
        ("cernvm_profile", instance.profile.name),
    ]
    if instance.ready_after is not None:
        found.append(("cernvm_ready_s", f"{instance.ready_after:.2f}"))
    found += [
        (f"cernvm_ready_{step.replace(' ', '_')}_s", f"{seconds:.2f}") for step, seconds in instance.timings.items()
    ]
    if instance.host_key_trust:
        found.append(("cernvm_host_key", instance.host_key_trust))
    return found


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    harness = config.stash.get(RUN_KEY, None)
    if harness is None:
        return
    matrix: dict[str, dict[str, str]] = defaultdict(dict)
    targets: list[str] = []
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            target = column_of(dict(getattr(report, "user_properties", [])))
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
        header = "  ".join(f"{t:<{c}}" for t, c in zip(targets, columns, strict=True))
        terminalreporter.write_line(" " * width + "  " + header)
        for scenario in sorted(matrix):
            cells = "  ".join(f"{matrix[scenario].get(t, '-'):<{c}}" for t, c in zip(targets, columns, strict=True))
            terminalreporter.write_line(f"{scenario:<{width}}  {cells}".rstrip())
    kept = harness.keeping.everything_kept()
    if kept:
        terminalreporter.section("cernvm: kept instances")
        for entry in kept:
            terminalreporter.write_line(f"{entry['name']} ({entry['target']}):")
            terminalreporter.write_line(f"  log in:  {entry['login']}")
            terminalreporter.write_line(f"  remove:  cernvm-fixtures down {entry['name']}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodeready(node: Any) -> None:
    """xdist controller: note the worker's pid, so a SIGTERM to the controller reaches the worker's teardown."""
    harness = node.config.stash[RUN_KEY]
    harness.signals.workers.append(node.gateway._rinfo().pid)
    harness.signals.forward_to_workers()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what a worker kept; reap what a crashed worker left."""
    harness = node.config.stash[RUN_KEY]
    harness.keeping.workers_kept.append(getattr(node, "workeroutput", {}).get("cernvm_kept", []))
    if error:
        reap(harness.run, reason=f"worker {node.gateway.id} crashed")


def _boot_ahead_wanted(config: pytest.Config) -> bool:
    option = config.option.cernvm_boot_ahead
    return bool(config.getini("cernvm_boot_ahead") if option is None else option) and not config.option.collectonly


def _needed(items: list[pytest.Item], harness: Harness, target: str | None = None) -> list[tuple[Any, UserData]]:
    """Each (target, user data) whose shared instance the selected tests use (of one target, if given)."""
    found: dict[tuple[str, str], tuple[configuration.Target, UserData]] = {}
    for item in items:
        name = _item_target(item)
        if name is None or (target is not None and name != target) or item.get_closest_marker("skip"):
            continue
        if "cernvm" not in getattr(item, "fixturenames", ()):
            continue
        try:
            user_data = _item_user_data(item)
        except pytest.UsageError:
            continue  # the test reports its bad marker itself
        found.setdefault((name, user_data.key), (harness.targets[name], user_data))
    return list(found.values())


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Boot ahead: launch, in parallel, the shared instance of every (target, user data) the selected tests use.
    Not in xdist processes: there each worker boots ahead per target group (see pytest_runtest_protocol)."""
    config = session.config
    harness = config.stash.get(RUN_KEY, None)
    if harness is None or harness.is_worker or getattr(config.option, "numprocesses", None):
        return
    if _boot_ahead_wanted(config) and not session.testsfailed:
        harness.boot_ahead(_needed(session.items, harness))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """xdist worker under ``--dist loadgroup``: a target's whole group comes to one worker, so when its first test
    arrives, every instance the group needs (one per user data) boots ahead in parallel."""
    harness = item.config.stash.get(RUN_KEY, None)
    target = _item_target(item)
    if harness is None or not harness.is_worker or target is None or target in harness.boots.warmed:
        return
    if not getattr(item.config.option, "loadgroup", False) or not _boot_ahead_wanted(item.config):  # set by xdist
        return
    harness.boots.warmed.add(target)
    harness.boot_ahead(_needed(item.session.items, harness, target))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    harness = session.config.stash.get(RUN_KEY, None)
    if harness is not None and hasattr(session.config, "workeroutput"):
        harness.release_all()
        session.config.workeroutput["cernvm_kept"] = harness.keeping.kept


def pytest_unconfigure(config: pytest.Config) -> None:
    harness = config.stash.get(RUN_KEY, None)
    if harness is not None:
        harness.end()


@pytest.fixture(scope="session")
def cernvm_harness(pytestconfig: pytest.Config) -> Harness:
    """The run's harness (targets, run id, instances); mostly for plugins and the CLI."""
    return pytestconfig.stash[RUN_KEY]


@pytest.fixture(scope="session")
def cernvm_target(request: pytest.FixtureRequest, cernvm_harness: Harness) -> Iterator[configuration.Target]:
    """The target a test runs on (parametrized over the selected targets, id = target name)."""
    target = cernvm_harness.targets[request.param]
    yield target
    cernvm_harness.instances.release(target.name)


def _user_data(request: pytest.FixtureRequest) -> UserData:
    return _item_user_data(request.node)


def _item_user_data(item: pytest.Item) -> UserData:
    marker = item.get_closest_marker("cernvm_context")
    if marker is None:
        return UserData()
    try:
        return UserData(**marker.kwargs)
    except TypeError as e:
        raise pytest.UsageError(
            f"{item.nodeid}: cernvm_context marker: {e}; valid keys: {', '.join(UserData.__dataclass_fields__)}"
        ) from None


@pytest.fixture
def cernvm(request: pytest.FixtureRequest, cernvm_harness: Harness, cernvm_target: configuration.Target) -> Instance:
    """A ready instance of the target, shared by every test of the session that asks for the same user data."""
    instance = cernvm_harness.instances.get(cernvm_target, _user_data(request))
    cernvm_harness.instances.used_by[request.node.nodeid].append(instance)
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
    cernvm_harness.instances.used_by[request.node.nodeid].append(instance)
    try:
        yield instance
    finally:
        cernvm_harness.finish(instance)
