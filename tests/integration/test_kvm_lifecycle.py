"""Nothing leaks: readiness failures, Ctrl-C, SIGTERM, SIGKILL, keep policies and bad config on KVM."""

from __future__ import annotations

import functools
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ReadinessError
from cernvm_fixtures.instance import launch
from cernvm_fixtures.run import Run

from ..helpers import assert_nothing_left_under, cli, domains_under, failing_test, ledger_entries, start_pytest

A_TEST = """
def test_uname(cernvm):
    assert cernvm.run("uname -s").stdout.strip() == "Linux"
"""

FAILING_TEST = failing_test("cat /etc/hostname")


def pytest_process(tmp_path: Path, test: str, *args: str, config_text: str | None = None) -> subprocess.Popen:
    # the built-in defaults also declare docker targets: these tests are about kvm
    return start_pytest(tmp_path, test, "--cernvm-target=kvm", *args, config=config_text)


def wait_for_domain(tmp_path: Path, process: subprocess.Popen, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        names = domains_under(tmp_path)
        if names:
            return names[0]
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.2)
    raise AssertionError("the domain never appeared")


assert_nothing_left = functools.partial(assert_nothing_left_under, objects=domains_under)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_boot_destroys_everything(tmp_path, signum):
    process = pytest_process(tmp_path, A_TEST)
    wait_for_domain(tmp_path, process)
    time.sleep(1)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output
    assert_nothing_left(tmp_path)


def test_ctrl_c_during_libvirt_create_answers_within_two_seconds(tmp_path):
    """SIGINT while libvirt's createXML blocks (seconds to a minute on a host whose /dev/kvm is not set up):
    pytest ends within 2 s, and once libvirt returns nothing is left (no domain, no qemu, no run directory).

    Hypothesis's pytest plugin is left out of the child: it imports hypothesis when a session ends (about a second
    on this host), which is our test dependency's cost, not the harness's."""
    process = pytest_process(tmp_path, A_TEST, "-p", "no:hypothesispytest")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "state").glob("runs/*/machines/*/seed.iso")):
        assert time.monotonic() < deadline and process.poll() is None, "the launch never reached createXML"
        time.sleep(0.05)
    time.sleep(0.3)  # inside createXML now (writing the seed is the last step before it)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    answered = time.monotonic() - sent
    assert process.returncode != 0, output
    assert answered <= 2.0, f"pytest took {answered:.1f} s to end after Ctrl-C:\n{output}"
    deadline = time.monotonic() + 180
    while domains_under(tmp_path) or qemu_processes_under(tmp_path):
        assert time.monotonic() < deadline, "a domain started after the interrupt was not destroyed"
        time.sleep(0.5)
    assert_nothing_left(tmp_path)
    assert not list((tmp_path / "state").glob("runs/*")), "the run directory is left"


def qemu_processes_under(directory: Path) -> list[str]:
    """QEMU command lines that name a file under ``directory``."""
    found = subprocess.run(["pgrep", "-a", "qemu-system"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if str(directory) in line]


def test_sigkill_leaves_only_what_sweep_removes(tmp_path):
    process = pytest_process(tmp_path, A_TEST)
    name = wait_for_domain(tmp_path, process)
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while domains_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert domains_under(tmp_path) == [], "libvirt auto-destroys the domain of a killed run"
    left = ledger_entries(tmp_path / "state")
    assert {e["name"] for e in left} == {name}, "the ledger still knows what the killed run made"
    sweep = cli(tmp_path / "state", "sweep", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    assert f"destroyed kvm directory {name}" in sweep.stdout
    assert_nothing_left(tmp_path)


def test_keep_on_failure_keeps_and_explains(tmp_path):
    process = pytest_process(tmp_path, FAILING_TEST, "--cernvm-keep=on-failure")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1, output
    kept = domains_under(tmp_path)
    try:
        assert len(kept) == 1, output
        assert "cernvm: kept instances" in output and f"cernvm-fixtures down {kept[0]}" in output
        assert "log in:  ssh -i" in output and "deliberate failure" in output
        assert "console (tail)" in output, "the failing test's report carries the console log"
        entries = ledger_entries(tmp_path / "state")
        assert entries and all(e["kept"] for e in entries)
    finally:
        for name in kept:
            down = cli(tmp_path / "state", "down", name)
            assert down.returncode == 0, down.stderr
    assert_nothing_left(tmp_path)


def test_passing_run_with_keep_on_failure_keeps_nothing(tmp_path):
    process = pytest_process(tmp_path, A_TEST, "--cernvm-keep=on-failure")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "kept instances" not in output
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize(
    "variant,step",
    [("no-ssh", "reachable"), ("no-ready", "ready")],
)
def test_readiness_failure_names_the_step_and_cleans_up(tmp_path, monkeypatch, variant, step):
    state = tmp_path / "state"
    target = config.parse(
        {
            "targets": {
                "kvm": {
                    "provider": "kvm",
                    "image": f"appliance:{variant}",
                    "deadlines": {"reachable": 8, "ready": 3},
                    # the ISO prints nothing on serial: booted directly with console=ttyS0 to read the tail
                    "boot": "kernel",
                    "kernel_args": "console=ttyS0",
                }
            }
        },
        "test",
    ).targets["kvm"]
    run = Run(state=state)
    with pytest.raises(ReadinessError) as error:
        launch(target, run)
    assert error.value.step == step
    assert f"step '{step}' failed" in str(error.value)
    assert "console log (tail)" in str(error.value) and "cernvm-fixtures" in error.value.console_tail
    assert_nothing_left(tmp_path)


BAD_CONFIGS = {
    "unknown key": ("[targets.kvm]\nprovider = 'kvm'\nmemroy = 1\n", "targets.kvm.memroy: unknown key; valid keys are"),
    "bad choice": (
        "[targets.kvm]\nprovider = 'kvm'\nnetwork = 'bridge'\n",
        "targets.kvm.network: expected 'user' or 'nat'",
    ),
    "bad toml": ("[targets.kvm\n", "invalid TOML"),
    "missing image": (
        "[targets.kvm]\nprovider = 'kvm'\nimage = '/nonexistent/ucernvm.iso'\nprofile = 'cernvm4'\n",
        "targets.kvm.image: '/nonexistent/ucernvm.iso' does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_a_clear_error_and_starts_nothing(tmp_path, case):
    text, message = BAD_CONFIGS[case]
    process = pytest_process(tmp_path, A_TEST, config_text=text)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert message in output, output
    assert "Traceback" not in output and "site-packages" not in output, output
    assert_nothing_left(tmp_path)


def test_unknown_target_selection(tmp_path):
    process = pytest_process(tmp_path, A_TEST, "--cernvm-target=kvm,nope")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 4
    assert "--cernvm-target: unknown target(s) nope; built-in defaults declares kvm" in output


def test_up_list_login_down(tmp_path):
    state = tmp_path / "state"
    up = cli(state, "up", "kvm", timeout=600, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    name = up.stdout.split()[0]
    try:
        listing = cli(state, "list").stdout
        assert name in listing and "kept" in listing
        data = json.loads(next((tmp_path / "state").glob("runs/*/ledger/*domain*.json")).read_text())["data"]
        result = subprocess.run(  # the ledger keeps the argv: a display string is never re-split
            [*data["login_argv"], "-o", "BatchMode=yes", "hostname"], capture_output=True, text=True, timeout=60
        )
        assert result.stdout.strip() == name, result.stderr
    finally:
        down = cli(state, "down", name)
    assert down.returncode == 0, down.stderr
    assert_nothing_left(tmp_path)


def test_sweep_finds_a_domain_from_its_metadata_when_the_ledger_is_lost(tmp_path):
    process = pytest_process(tmp_path, A_TEST, "--cernvm-keep=always")
    name = wait_for_domain(tmp_path, process)
    process.kill()
    process.wait(timeout=30)
    assert domains_under(tmp_path) == [name], "a kept run's domain is not auto-destroyed"
    for ledger in (tmp_path / "state").glob("runs/*/ledger"):
        shutil.rmtree(ledger)
    dry = cli(tmp_path / "state", "sweep", "--dry-run", cwd=tmp_path)
    assert f"would destroy kvm domain {name}" in dry.stdout, dry.stdout + dry.stderr
    assert domains_under(tmp_path) == [name], "--dry-run destroys nothing"
    sweep = cli(tmp_path / "state", "sweep", cwd=tmp_path)
    assert sweep.returncode == 0 and f"destroyed kvm domain {name}" in sweep.stdout, sweep.stdout + sweep.stderr
    assert domains_under(tmp_path) == []
    assert not list((tmp_path / "state").glob("runs/*/machines/*"))


def test_keep_always_keeps_passing_instances(tmp_path):
    process = pytest_process(tmp_path, A_TEST, "--cernvm-keep=always")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    kept = domains_under(tmp_path)
    assert len(kept) == 1 and f"cernvm-fixtures down {kept[0]}" in output
    down = cli(tmp_path / "state", "down", kept[0])
    assert down.returncode == 0, down.stderr
    assert_nothing_left(tmp_path)


FIXTURES_TEST = """
import pytest

NAMES = {}

def test_shared_a(cernvm):
    NAMES["shared"] = cernvm.name

def test_shared_b(cernvm):
    assert cernvm.name == NAMES["shared"], "the session instance is shared"

@pytest.mark.cernvm_context(ucernvm={"x": "1"})
def test_marked_a(cernvm):
    assert cernvm.name != NAMES["shared"]
    NAMES["marked"] = cernvm.name
    assert "x=1" in cernvm.run("cat /mnt/.rw/context/user-data").stdout

@pytest.mark.cernvm_context(ucernvm={"x": "1"})
def test_marked_b(cernvm):
    assert cernvm.name == NAMES["marked"], "same user data, same instance"

def test_fresh(cernvm_fresh, cernvm_host):
    assert cernvm_fresh.name not in NAMES.values()
    NAMES["fresh"] = cernvm_fresh.name
    assert cernvm_host.run("true").rc == 0

def test_fresh_was_destroyed(cernvm):
    import subprocess
    names = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--name"], capture_output=True, text=True).stdout
    assert NAMES["fresh"] not in names.split()

@pytest.mark.cernvm_targets("elsewhere")
def test_not_for_this_target(cernvm):
    raise AssertionError("must be skipped")
"""


def test_fixture_scopes_markers_and_skips(tmp_path):
    process = pytest_process(tmp_path, FIXTURES_TEST, "-p", "no:randomly")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    assert "7 passed" not in output and "6 passed, 1 skipped" in output, output
    assert "applies to targets elsewhere, not kvm" in output
    assert_nothing_left(tmp_path)


def test_auto_domain_type_falls_back_to_tcg_when_a_probe_guest_stays_silent(tmp_path, monkeypatch, caplog):
    from cernvm_fixtures import appliance
    from cernvm_fixtures.providers import kvm

    kernel = appliance.build().kernel
    monkeypatch.setenv("CERNVM_FIXTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kvm, "probe_kernel", lambda: kernel)
    conn = kvm.connect("qemu:///system")
    # wait=0: the guest starts, but cannot have printed anything yet, whatever the host's KVM can do
    assert kvm.choose_domain_type(conn, "qemu:///system", wait=0) == "qemu"
    assert "a probe guest printed nothing" in caplog.text and "failed to start" not in caplog.text
    record = json.loads((tmp_path / "cache" / "kvm-probe.json").read_text())
    assert record["domain_type"] == "qemu" and record["boot_id"] == kvm._boot_id()
    monkeypatch.setattr(kvm, "probe_kernel", lambda: pytest.fail("a cached decision must not probe again"))
    assert kvm.choose_domain_type(conn, "qemu:///system") == "qemu"
    assert not list((tmp_path / "cache").glob("kvm-probe-*")), "probe files are removed"
    names = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True)
    assert not [n for n in names.stdout.split() if n.startswith("cvmfx-probe-")], "the probe guest is destroyed"


def test_host_key_mismatch_stops_readiness_at_once(tmp_path, monkeypatch):
    from cernvm_fixtures.providers.kvm import KvmMachine

    forged = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOzWbSb0ugYWqPr0JvTqZqKq3c7Pq0Bx5GUcaKLBfmdH forged"
    monkeypatch.setattr(KvmMachine, "host_keys", lambda self: [forged])
    target = config.parse({"targets": {"kvm": {"provider": "kvm", "deadlines": {"login": 120}}}}, "test").targets["kvm"]
    started = time.monotonic()
    with pytest.raises(ReadinessError) as error:
        launch(target, Run(state=tmp_path / "state"))
    assert error.value.step == "login" and "not among the 1 key(s) the instance was given or announced" in str(
        error.value
    )
    assert time.monotonic() - started < 60, "a forged host key is not retried until the deadline"
    assert_nothing_left(tmp_path)
