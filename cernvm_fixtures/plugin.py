"""The pytest plugin: hooks and fixtures only. The run's lifecycle is the Harness (:mod:`.harness`); what a test's
report carries, :mod:`.junit`; the end-of-run grid, :mod:`.report`; boot-ahead selection, :mod:`.boot_ahead`;
xdist scheduling by target, :mod:`.scheduling`.

Registered through the ``pytest11`` entry point, so installing the package is all
a downstream project needs. Tests ask for ``cernvm`` (or ``cernvm_host``,
``cernvm_fresh``) and are parametrized over the enabled targets with the target
name as test id, so ``pytest -k kvm`` selects a target.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from . import boot_ahead, junit, report
from . import config as configuration
from .errors import CernvmError, ReadinessError
from .harness import Harness
from .instance import Instance
from .items import item_target, item_user_data
from .run import Keep
from .screen import Capture
from .sweep import reap

RUN_KEY = pytest.StashKey["Harness"]()


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
    group.addoption(
        "--cernvm-workers",
        dest="cernvm_workers",
        metavar="auto|N",
        help="pytest-xdist workers for a run of several targets: auto (default: one per target, at most one per "
        "core), N, or 0 for none; -n/--dist given wins",
    )
    parser.addini("cernvm_workers", "auto | number of xdist workers for several targets (0: none)", default="")
    parser.addini("cernvm_targets", "targets to run (default: all enabled)", type="args", default=[])
    parser.addini(
        "cernvm_boot_ahead", "boot the run's shared instances in parallel at the start", type="bool", default=True
    )
    parser.addini("cernvm_image", "image for all selected targets", default="")
    parser.addini("cernvm_profile", "profile for all selected targets", default="")
    parser.addini("cernvm_keep", "never | on-failure | always", default="never")
    parser.addini("cernvm_config", "config file declaring the targets", default="")
    parser.addini("cernvm_screens", "directory for screenshots of failing instances", default="")


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Several targets: their tests on pytest-xdist workers, each target's on one (``--dist loadgroup``), so the
    matrix overlaps tests and not only boots (see :func:`.harness.options.auto_workers`)."""
    from .harness.options import auto_workers

    workers = auto_workers(early_config)
    if workers >= 2:
        args[:] = [*args, "-n", str(workers), "--dist", "loadgroup"]


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
        target = item_target(item)
        if target is None:
            continue
        if grouped:
            item.add_marker(pytest.mark.xdist_group(name=f"cernvm-{target}"))
        marker = item.get_closest_marker("cernvm_targets")
        declared = config.stash[RUN_KEY].targets[target].declared
        if marker and target not in marker.args and declared not in marker.args:
            item.add_marker(pytest.mark.skip(reason=f"applies to targets {', '.join(marker.args)}, not {target}"))
    used = [t for t in dict.fromkeys(map(item_target, items)) if t]
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
        harness.check_used({t for t in map(item_target, session.items) if t})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller, ``--dist loadgroup``: each target's tests on one worker (they share its instances)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from .scheduling import TargetScheduling

    return TargetScheduling(config, log, config.stash[RUN_KEY].selected)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A target test's report: JUnit properties of its target and instance; for a failure, each instance's console
    tail, screen and login command (and the instance is marked failed, for the keep policy)."""
    test_report: pytest.TestReport = yield
    target = item_target(item)
    if target is None:
        return test_report
    harness = item.config.stash[RUN_KEY]
    used = harness.instances.used_by.get(item.nodeid, [])
    if test_report.when == "call" or (test_report.when == "setup" and not test_report.passed):
        junit.record(item, test_report, junit.target_properties(harness.targets[target], used[:1]))
    if test_report.failed:
        for instance in used:
            instance.failed = True
            test_report.sections.append((f"cernvm {instance.name}: console (tail)", instance.console_tail()))
            if test_report.when in ("setup", "call"):
                junit.attach_screen(item, test_report, instance.name, instance.capture(item.nodeid))
            note = (
                ""
                if harness.run.keep is not Keep.NEVER
                else " (destroyed at the end; --cernvm-keep on-failure keeps it)"
            )
            test_report.sections.append((f"cernvm {instance.name}: log in", instance.login_command + note))
        error = call.excinfo.value if call.excinfo is not None else None
        if test_report.when == "setup" and isinstance(error, ReadinessError) and isinstance(error.screen, Capture):
            junit.attach_screen(item, test_report, error.instance, error.screen)  # taken when the step failed
    return test_report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The target x scenario grid, and how to reach and remove each kept instance."""
    harness = config.stash.get(RUN_KEY, None)
    if harness is None:
        return
    for title, lines in (
        ("cernvm: target x scenario", report.text_grid(report.cells_of(terminalreporter.stats))),
        ("cernvm: kept instances", report.kept_lines(harness.keeping.everything_kept())),
    ):
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)


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


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Boot ahead: launch, in parallel, the shared instance of every (target, user data) the selected tests use.
    Not in xdist processes: there each worker boots ahead per target group (see pytest_runtest_protocol)."""
    config = session.config
    harness = config.stash.get(RUN_KEY, None)
    if harness is None or harness.is_worker or getattr(config.option, "numprocesses", None):
        return
    if boot_ahead.wanted(config) and not session.testsfailed:
        harness.boot_ahead(boot_ahead.needed(session.items, harness.targets))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """xdist worker under ``--dist loadgroup``: a target's whole group comes to one worker, so when its first test
    arrives, every instance the group needs (one per user data) boots ahead in parallel."""
    harness = item.config.stash.get(RUN_KEY, None)
    target = item_target(item)
    if harness is None or not harness.is_worker or target is None or target in harness.boots.warmed:
        return
    if not getattr(item.config.option, "loadgroup", False) or not boot_ahead.wanted(item.config):  # set by xdist
        return
    harness.boots.warmed.add(target)
    harness.boot_ahead(boot_ahead.needed(item.session.items, harness.targets, target))


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


@pytest.fixture
def cernvm(request: pytest.FixtureRequest, cernvm_harness: Harness, cernvm_target: configuration.Target) -> Instance:
    """A ready instance of the target, shared by every test of the session that asks for the same user data."""
    instance = cernvm_harness.instances.get(cernvm_target, item_user_data(request.node))
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
    instance = cernvm_harness.fresh(cernvm_target, item_user_data(request.node))
    cernvm_harness.instances.used_by[request.node.nodeid].append(instance)
    try:
        yield instance
    finally:
        cernvm_harness.finish(instance)
