"""Signals reach every process's teardown: the xdist controller passes SIGTERM on; child pytests get Ctrl-C back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from cernvm_fixtures.testing.local import machines_under

from ..helpers import CHILD, LOCAL_TARGETS, start_pytest

WAITING = """
import time

def test_wait(cernvm, tmp_path_factory):
    (tmp_path_factory.getbasetemp().parent.parent / f"ready-{cernvm.target.name}").touch()
    time.sleep(600)
"""


@pytest.mark.slow
def test_sigterm_to_the_xdist_controller_tears_down_every_worker(pytester: pytest.Pytester, local_provider):
    pytester.makefile(".toml", cernvm=LOCAL_TARGETS)
    pytester.makepyfile(test_it=WAITING)
    base = pytester.path / "base"
    base.mkdir()
    controller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *CHILD,
            "-n",
            "2",
            "--dist",
            "loadgroup",
            f"--basetemp={base / 'temp'}",
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not all((base / f"ready-{t}").exists() for t in ("alpha", "beta")):
        assert controller.poll() is None and time.monotonic() < deadline, controller.communicate()[0]
        time.sleep(0.1)
    assert len(machines_under(local_provider)) == 2
    controller.send_signal(signal.SIGTERM)
    output, _ = controller.communicate(timeout=150)
    assert controller.returncode != 0, output
    assert machines_under(local_provider) == [], f"machines left after SIGTERM to the controller:\n{output}"
    entries = [json.loads(p.read_text()) for p in local_provider.glob("runs/*/ledger/*.json")]
    assert entries == [], output


def test_a_child_pytest_gets_sigint_back_when_started_with_it_ignored(tmp_path):
    """A background job of a non-interactive shell starts with SIGINT ignored; the Ctrl-C tests' children must not."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = start_pytest(
            tmp_path,
            """
import signal

def test_sigint_raises_keyboardinterrupt():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
""",
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
