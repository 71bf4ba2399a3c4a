"""Boot-ahead: the run's shared instances launch in parallel at the start; Ctrl-C during that leaves nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from cernvm_fixtures.testing.local import PROFILE, machines_under

from ..helpers import CHILD

TARGETS = """
[targets.alpha]
provider = "local"
profile = "{profile}"
boot_seconds = {boot}

[targets.beta]
provider = "local"
profile = "{profile}"
boot_seconds = {boot}
"""

COUNTS = """
import os, time
from pathlib import Path
from cernvm_fixtures.testing.local import machines_under

def test_count(cernvm):
    state = Path(os.environ["CERNVM_FIXTURES_STATE"])
    seen, deadline = machines_under(state), time.monotonic() + float(os.environ["WAIT_FOR_SECOND"])
    while cernvm.target.name == "alpha" and len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = machines_under(state)
    print(f"MACHINES {cernvm.target.name} {len(seen)}")
"""


WAIT_FOR_SECOND = "WAIT_FOR_SECOND"
"""How long a test waits for the second instance to appear: long where it must (boot-ahead), short where it must
not (a wrong boot-ahead would have started it before the first instance was ready, so it would be seen at once)."""


@pytest.fixture(autouse=True)
def patient(monkeypatch):
    monkeypatch.setenv(WAIT_FOR_SECOND, "5")


def impatient(monkeypatch) -> None:
    monkeypatch.setenv(WAIT_FOR_SECOND, "0.5")


@pytest.fixture
def project(pytester: pytest.Pytester, local_provider):
    pytester.makefile(".toml", cernvm=TARGETS.format(profile=PROFILE, boot=0.5))
    pytester.makepyfile(test_it=COUNTS)
    return pytester


def machines_seen(result: pytest.RunResult) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"MACHINES (\S+) (\d+)", result.stdout.str())}


def test_the_second_target_boots_while_the_first_ones_tests_run(project, local_provider):
    result = project.runpytest_inprocess("-s", "-p", "no:cacheprovider", *CHILD)
    result.assert_outcomes(passed=2)
    assert machines_seen(result)["alpha"] == 2, "beta's instance was not booting while alpha's test ran"
    assert machines_under(local_provider) == []


def test_without_boot_ahead_each_instance_boots_when_first_needed(project, local_provider, monkeypatch):
    impatient(monkeypatch)
    result = project.runpytest_inprocess("-s", "-p", "no:cacheprovider", "--cernvm-no-boot-ahead", *CHILD)
    result.assert_outcomes(passed=2)
    assert machines_seen(result) == {"alpha": 1, "beta": 1}, "an instance booted before its target's tests"


def test_tests_that_are_deselected_or_skipped_boot_nothing(project, local_provider, monkeypatch):
    impatient(monkeypatch)
    result = project.runpytest_inprocess("-s", "-p", "no:cacheprovider", "-k", "alpha", *CHILD)
    result.assert_outcomes(passed=1, deselected=1)
    assert machines_seen(result) == {"alpha": 1}, "beta was booted for a deselected test"


def test_ctrl_c_during_the_parallel_boot_leaves_nothing(pytester: pytest.Pytester, local_provider):
    pytester.makefile(".toml", cernvm=TARGETS.format(profile=PROFILE, boot=60))
    pytester.makepyfile(test_it="def test_it(cernvm):\n    pass\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *CHILD],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(machines_under(local_provider)) < 2:
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()[0]
        time.sleep(0.05)
    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=60)
    took = time.monotonic() - interrupted
    assert child.returncode != 0, output
    assert machines_under(local_provider) == [], f"machines left after Ctrl-C during the boot:\n{output}"
    entries = [json.loads(p.read_text()) for p in local_provider.glob("runs/*/ledger/*.json")]
    assert entries == [], output
    assert took < 30, f"Ctrl-C took {took:.1f} s to end a run whose boots had 60 s to go"


PER_GROUP = """
import os, time
from pathlib import Path
import pytest
from cernvm_fixtures.testing.local import machines_under

def test_plain(cernvm):
    state = Path(os.environ["CERNVM_FIXTURES_STATE"])
    mine = lambda: [m for m in machines_under(state) if f"-{cernvm.target.name}-" in m]
    deadline = time.monotonic() + float(os.environ["WAIT_FOR_SECOND"])
    while len(mine()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(mine()) == 2, "the group's second instance (other user data) is not booting"

@pytest.mark.cernvm_context(raw="#!/bin/sh\\necho second\\n")
def test_with_context(cernvm):
    pass
"""


@pytest.mark.slow
def test_under_xdist_each_worker_boots_its_groups_instances_ahead(
    pytester: pytest.Pytester, local_provider, monkeypatch
):
    pytester.makefile(".toml", cernvm=TARGETS.format(profile=PROFILE, boot=0.5))
    pytester.makepyfile(test_it=PER_GROUP)
    args = ["-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-p", "no:randomly", *CHILD]
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=4)
    impatient(monkeypatch)
    pytester.runpytest_subprocess(*args, "--cernvm-no-boot-ahead").assert_outcomes(passed=2, failed=2)
    assert machines_under(local_provider) == []
