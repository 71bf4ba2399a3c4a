"""Fixtures shared by the harness's own tests (the fakes' and emulators' come from the plugins the root conftest
declares), and the provider contract's fault and attack matrix."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_fixtures.instance import Instance, launch
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing import register_provider
from cernvm_fixtures.testing.local import machines_under

from .helpers import ROOT, domains_under
from .standins import standin_target


@pytest.fixture(scope="session", autouse=True)
def plugins_on_the_path() -> Iterator[None]:
    """Every process a test starts finds this checkout's test plugins (``-p tests.network_rule``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        yield


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One test appliance under KVM standing in for the cloud VMs of every suite that needs one (EC2, OpenStack,
    Azure and their contract tests): booted once per session, reached over its 127.0.0.1 forward."""
    state = tmp_path_factory.mktemp("standin")
    run = Run(state=state)
    instance = launch(standin_target("cloud stand-in"), run)
    yield instance
    instance.destroy()
    run.finish()
    assert domains_under(state) == []


@pytest.fixture(scope="session")
def local_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``local`` provider installed (an entry point on sys.path and PYTHONPATH) for the rest of the session."""
    site = register_provider(tmp_path_factory.mktemp("site"), "local", "cernvm_fixtures.testing.local:LocalProvider")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        yield site


@pytest.fixture
def local_provider(
    local_site: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The ``local`` provider with a state directory of this test's own; yields that directory.

    Fails the test if a local machine of its state directory is still running at the end.
    """
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(state))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    yield state
    assert machines_under(state) == [], "local machines left running"


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt for the test's duration, restored after: a test that sends itself Ctrl-C
    must not depend on how pytest was started (a non-interactive shell's background job inherits it ignored)."""
    assert threading.current_thread() is threading.main_thread(), "signal handlers are set in the main thread"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


CONTRACT_CASES: dict[str, dict[str, str]] = {}
"""The provider contract's outcomes as they are reported: case -> provider -> ok / FAIL / ERROR / n/a."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("::")
    if len(parts) != 3 or "test_contract" not in parts[0] or not (report.when == "call" or not report.passed):
        return
    provider = parts[1].removeprefix("Test").removesuffix("Contract").lower()
    mark = "n/a" if report.skipped else "ok" if report.passed else "FAIL" if report.when == "call" else "ERROR"
    cells = CONTRACT_CASES.setdefault(parts[2].removeprefix("test_"), {})
    if cells.get(provider) not in ("FAIL", "ERROR"):
        cells[provider] = mark


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The fault and attack matrix: each provider contract case (rows) on each provider (columns), as measured
    by the contract's own checks (the engine's objects of the run listed after each case: nothing left)."""
    if not CONTRACT_CASES:
        return
    providers = list(dict.fromkeys(p for cells in CONTRACT_CASES.values() for p in cells))
    terminalreporter.section("fault and attack matrix (provider contract: nothing leaked, nothing wrongly deleted)")
    width = max(len(case) for case in CONTRACT_CASES)
    terminalreporter.write_line(" " * width + "  " + "  ".join(f"{p:<9}" for p in providers))
    for case, cells in CONTRACT_CASES.items():
        terminalreporter.write_line(f"{case:<{width}}  " + "  ".join(f"{cells.get(p, '-'):<9}" for p in providers))
