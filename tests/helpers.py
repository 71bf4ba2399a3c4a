"""Helpers of the harness's own tests: run pytest with the plugin in a separate process, read what it did,
and find what it left behind."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from cernvm_fixtures import config, providers
from cernvm_fixtures.context import Context
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing.local import PROFILE

ROOT = Path(__file__).resolve().parent.parent

CHILD = ["-p", "tests.network_rule", "-p", "no:hypothesispytest", "--cernvm-workers=0"]
"""Arguments of every pytest these tests start: the network rule (a plugin of this checkout, which every
process the tests start finds on its PYTHONPATH), and without Hypothesis's plugin (no child test uses it, and its import
costs about 1.5 s per pytest process and per xdist worker), and without the workers a run of several targets gets
by default (a test that wants them says -n)."""


LOCAL_TARGETS = f"""
[targets.alpha]
provider = "local"
profile = "{PROFILE}"

[targets.beta]
provider = "local"
profile = "{PROFILE}"
"""
"""Two targets of the local provider, for the plugin's tests."""


def subprocess_env(state: Path) -> dict[str, str]:
    env = dict(os.environ, CERNVM_FIXTURES_STATE=str(state))
    env.pop("PYTEST_ADDOPTS", None)
    return env


def ledger_entries(state: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in state.glob("runs/*/ledger/*.json")]


def domains_under(directory: Path) -> list[str]:
    """libvirt domains whose recorded machine directory lies under ``directory`` (i.e. made by that test)."""
    names = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in names:
        if not name.startswith("cvmfx-"):
            continue
        xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True).stdout
        if str(directory) in xml:
            found.append(name)
    return found


def docker_objects_under(directory: Path, run: str | None = None) -> list[str]:
    """Containers, images and volumes labelled by cernvm-fixtures whose state directory lies under ``directory``
    (and, given ``run``, that belong to that run)."""
    import docker

    from cernvm_fixtures.providers.docker import LABEL_RUN, labelled_state

    client = docker.from_env()

    def ours(labels: dict[str, str] | None) -> bool:
        return (labelled_state(labels) or "").startswith(str(directory))

    try:
        found = []
        selector = {"label": f"{LABEL_RUN}={run}" if run else LABEL_RUN}
        for container in client.containers.list(all=True, filters=selector, ignore_removed=True):  # others come and go
            if ours(container.labels):
                found.append(f"container {container.name}")
        for image in client.images.list(filters=selector):
            if ours(image.labels):
                found.append(f"image {image.tags or image.id}")
        for volume in client.volumes.list(filters=selector):
            if ours(volume.attrs.get("Labels")):
                found.append(f"volume {volume.name}")
        return found
    finally:
        client.close()


def create_only(target: config.Target, run: Run, name: str | None = None, *, running: float | None = None):
    """The provider's launch without readiness (no SSH needed), and with ``running`` its wait (that many seconds)
    until the platform runs the machine: the machine and its context. A launch that fails destroys the machine."""
    provider = providers.get(target.provider)(target, run)
    machine = provider.machine(name or run.name(target.name))
    context = Context(hostname=machine.name, ssh_keys=(run.public_key,))
    try:
        provider.launch(machine, context)
        if running is not None:
            machine.wait_running(time.monotonic() + running)
    except BaseException:
        machine.destroy()
        raise
    return machine, context


def killed_launch(toml: Path, env: dict[str, str]) -> str:
    """The config's first target's machine made by a process of its own, SIGKILLed once it has made it (what sweep
    must then find from the ledger, or from the platform's labels alone); returns the killed run's id."""
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_LAUNCH, str(toml)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    return run_id


def sweep_killed(toml: Path, state: Path, lose_ledger: bool) -> subprocess.CompletedProcess:
    """``cernvm-fixtures sweep --config toml`` (in its directory) after a killed launch, once the ledger is deleted
    if ``lose_ledger`` (the state directory's mark key survives): it must succeed. A sweep from another state
    directory (another key) first must find nothing to destroy: the resources' marks are not its own."""
    if lose_ledger:
        shutil.rmtree(state / "runs")
        elsewhere = cli(state.parent / "another-state", "sweep", "--config", str(toml), cwd=toml.parent)
        assert elsewhere.returncode == 0 and "no leftovers" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr
    sweep = cli(state, "sweep", "--config", str(toml), cwd=toml.parent)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    return sweep


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *CHILD, *args]


def run_pytest(work: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``pytest ARGS`` with the plugin, run in ``work`` by a process of its own (``env``: see ``subprocess_env``).

    The result carries ``output`` (stdout and stderr).
    """
    result = subprocess.run(pytest_command(*args), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    result.output = result.stdout + result.stderr
    return result


def write_work(tmp_path: Path, *, config: str | None = None, tests: dict[str, str] | None = None) -> Path:
    """A work directory with the given cernvm.toml and test files (text is dedented)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    for name, text in {"cernvm.toml": config, **(tests or {})}.items():
        if text is not None:
            (work / name).write_text(textwrap.dedent(text))
    return work


def run_scenarios(
    tmp_path: Path, *args: str, config: str | None = None, conftest: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """The real scenario files, run by the plugin in a fresh process with a private state directory.

    The result carries ``output`` (stdout and stderr); callers assert that nothing was left behind.
    """
    work = write_work(tmp_path, config=config)
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    if conftest is not None:
        (work / "scenarios" / "conftest.py").write_text(textwrap.dedent(conftest))
    return run_pytest(work, subprocess_env(tmp_path / "state"), "scenarios", *args, timeout=timeout)


def assert_nothing_left_under(tmp_path: Path, output: str = "", *, objects: Callable[[Path], list[str]]) -> None:
    """Nothing the test's runs made is left: no engine object under ``tmp_path`` (``objects``: its libvirt domains,
    Docker objects...), no ledger entry, no machine directory."""
    state = tmp_path / "state"
    assert objects(tmp_path) == [], f"left behind:\n{output[-3000:]}"
    assert ledger_entries(state) == [], "ledger entries left behind"
    assert not list(state.glob("runs/*/machines/*")), "machine directories left behind"


def scenarios_leaving_nothing(
    tmp_path: Path, *args: str, objects: Callable[[Path], list[str]], timeout: float = 900, **files: str | None
) -> subprocess.CompletedProcess:
    """``run_scenarios``, after which nothing may be left: no engine object (``objects``), ledger entry, machine or
    run directory."""
    result = run_scenarios(tmp_path, *args, timeout=timeout, **files)
    assert_nothing_left_under(tmp_path, result.output, objects=objects)
    assert not list((tmp_path / "state").glob("runs/*")), "run directory left behind"
    return result


def failing_test(command: str) -> str:
    """A test file whose one test fails on purpose, after running ``command`` on its instance."""
    return f"""
def test_fails(cernvm):
    assert cernvm.run({command!r}).stdout == "something else", "deliberate failure"
"""


@dataclass
class SuiteReport:
    """A scenario run's outcome as its JUnit report tells it."""

    output: str
    cases: dict[str, ElementTree.Element]
    skipped: dict[str, str]
    """Case name -> the reason it was skipped."""
    properties: dict[str, str]


def run_suite(work: Path, report: Path, env: dict[str, str], timeout: float, args: tuple[str, ...] = ()) -> SuiteReport:
    """Run the scenario suite in ``work`` in a fresh process (with ``args``); it must pass with no failed case."""
    result = run_pytest(work, env, "scenarios", "--junitxml", str(report), *args, timeout=timeout)
    output = result.output
    assert result.returncode == 0, output[-6000:]
    cases = {c.get("name").split("[")[0]: c for c in ElementTree.parse(report).iter("testcase")}
    skipped = {name: c.find("skipped").get("message") for name, c in cases.items() if c.find("skipped") is not None}
    failed = [name for name, c in cases.items() if c.find("failure") is not None or c.find("error") is not None]
    assert not failed and cases, output[-6000:]
    properties = {p.get("name"): p.get("value") for c in cases.values() for p in c.iter("property")}
    return SuiteReport(output, cases, skipped, properties)


def assert_framed(handle: Any, out: bytes, err: bytes, status: int) -> None:
    """A command printing ``out`` and ``err`` (any bytes) and exiting with ``status`` comes back through the
    instance ``handle`` as it was, byte for byte."""
    command = (
        f"printf %s {base64.b64encode(out).decode()} | base64 -d; "
        f"printf %s {base64.b64encode(err).decode()} | base64 -d >&2; exit {status}"
    )
    result = handle.run(command)
    assert (result.stdout_bytes, result.stderr_bytes, result.exit_status) == (out, err, status)


def assert_threads_share(handle: Any, threads: int, commands: int) -> None:
    """``threads`` threads running ``commands`` commands each through the instance ``handle`` at once: every
    command gets its own output and exit status back."""
    import concurrent.futures

    def work(n: int) -> list[Any]:
        return [handle.run(f"echo {n}-{i}; echo e{n}-{i} >&2; exit {i}") for i in range(commands)]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {n: pool.submit(work, n) for n in range(threads)}
    for n, future in futures.items():
        for i, result in enumerate(future.result()):
            assert (result.stdout, result.stderr, result.exit_status) == (f"{n}-{i}\n", f"e{n}-{i}\n", i)


def assert_timeout_leaves_nothing(handle: Any, command: str, pattern: str, why: str) -> None:
    """``command`` through the instance ``handle`` times out after a second, and then no process of the guest
    whose arguments match ``pattern`` is left (``why``, if one is)."""
    from cernvm_fixtures.errors import CommandTimeout

    with pytest.raises(CommandTimeout):
        handle.run(command, timeout=1)
    left = handle.run(f"ps -o args | grep -c '{pattern}'").stdout.strip()
    assert left == "0", why


def default_sigint() -> None:
    """In a child: SIGINT at its default disposition (a non-interactive shell's background job inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_pytest(tmp_path: Path, test: str, *args: str, config: str | None = None) -> subprocess.Popen:
    """One test file run by the plugin in a process of its own (to signal, kill or wait for)."""
    work = write_work(tmp_path, config=config, tests={"test_it.py": test})
    return subprocess.Popen(
        pytest_command("test_it.py", *args),
        cwd=work,
        env=subprocess_env(tmp_path / "state"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


def scenario_ids(*targets: str) -> set[str]:
    """'test_name[target]' of every scenario the plugin collects for these targets (built-in defaults)."""
    listed = subprocess.run(
        pytest_command("--collect-only", "-q", "scenarios", *(f"--cernvm-target={t}" for t in targets)),
        cwd=ROOT,
        env=subprocess_env(ROOT / ".no-state"),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return {line.split("::")[-1] for line in listed.splitlines() if line.startswith("scenarios/")}


def outcomes(output: str) -> dict[str, str]:
    """'test_name[params]' -> PASSED/FAILED/ERROR, from pytest's -rA short summary (skips: skip_reasons)."""
    found = {}
    for status, nodeid in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", output, re.M):
        found[nodeid.split("::")[-1]] = status
    return found


def skip_reasons(output: str) -> list[str]:
    """The reasons of the skipped tests, from pytest's -rA short summary."""
    return re.findall(r"^SKIPPED \[\d+\] \S+:\d+: (.*)$", output, re.M)


def cli(state: Path, *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``cernvm-fixtures ARGS`` with a private state directory."""
    return subprocess.run(
        [sys.executable, "-m", "cernvm_fixtures.cli", *args],
        env=subprocess_env(state),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


KILLED_LAUNCH = """
import sys, time
from pathlib import Path
from cernvm_fixtures import config, providers
from cernvm_fixtures.context import Context
from cernvm_fixtures.run import Run

target = next(iter(config.load(Path(sys.argv[1])).targets.values()))
run = Run()
provider = providers.get(target.provider)(target, run)
machine = provider.machine(run.name(target.name))
provider.launch(machine, Context(hostname=machine.name, ssh_keys=(run.public_key,)))
print(run.id, flush=True)
time.sleep(600)
"""
"""``python -c KILLED_LAUNCH cernvm.toml``: creates the config's first target's machine, prints the run id and
waits, to be SIGKILLed (what sweep must then find from the ledger, or from the platform's labels alone)."""


def write_target(path: Path, name: str, options: dict) -> Path:
    """A cernvm.toml declaring one target; mappings become inline tables."""

    def value(v) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    path.write_text(f"[targets.{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in options.items()))
    return path
