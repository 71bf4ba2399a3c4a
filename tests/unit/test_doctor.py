"""The doctor without an engine: line format, device access, process lookup, the CLI, the plugin's stop."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.doctor import Check, blocking, device_access, report, running
from tests.helpers import cli, run_pytest, subprocess_env, write_work

UNREACHABLE = """
[targets.box]
provider = "docker"
url = "unix:///nonexistent/cernvm-fixtures-doctor.sock"
"""


def test_a_line_names_target_status_check_and_fix():
    line = Check.problem("/dev/kvm", "root:root 0600", "chmod 0660 /dev/kvm").line("kvm", 5)
    assert line == "kvm    problem  /dev/kvm: root:root 0600; fix: chmod 0660 /dev/kvm"
    assert Check.ok("daemon", "up").line("docker") == "docker  ok       daemon: up"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group to kvm needs root")
@pytest.mark.parametrize(
    ("group", "mode", "usable"),
    [("root", 0o600, False), ("kvm", 0o600, False), ("kvm", 0o640, False), ("kvm", 0o660, True), ("root", 0o666, True)],
)
def test_device_access_follows_the_documented_rule(tmp_path, group, mode, usable):
    device = tmp_path / "kvm"
    device.touch()
    os.chown(device, 0, grp.getgrnam(group).gr_gid)
    device.chmod(mode)
    assert device_access(device, "kvm") == (f"root:{group} {mode:04o}", usable)


def test_running_finds_a_process_by_its_command_name():
    me = Path("/proc/self/comm").read_text().strip()
    assert running("no-such-daemon-cvmfx", me) == me
    assert running("no-such-daemon-cvmfx") is None


def test_an_unreachable_daemon_is_a_problem_that_names_the_fix():
    raw = {"targets": {"box": {"provider": "docker", "url": "unix:///nonexistent/x.sock"}}}
    target = config.parse(raw, "t").targets["box"]
    lines, broken = report([target])
    assert broken
    assert lines[0].startswith("box  problem  daemon: cannot reach the Docker daemon at unix:///nonexistent/x.sock")
    assert "fix: start dockerd" in lines[0]
    stop, _ = blocking([target])
    assert "cannot work on this host" in stop and "unix:///nonexistent/x.sock" in stop


def test_doctor_command_exits_1_on_a_problem(tmp_path):
    work = write_work(tmp_path, config=UNREACHABLE)
    result = cli(tmp_path / "state", "doctor", cwd=work)
    assert result.returncode == 1, result.stderr
    assert "box  problem  daemon:" in result.stdout


def test_doctor_command_rejects_an_unknown_target(tmp_path):
    work = write_work(tmp_path, config=UNREACHABLE)
    result = cli(tmp_path / "state", "doctor", "nope", cwd=work)
    assert result.returncode == 2
    assert "unknown target(s) nope" in result.stderr


def test_the_plugin_stops_the_session_with_the_doctors_message(tmp_path):
    work = write_work(
        tmp_path, config=UNREACHABLE, tests={"test_it.py": "def test_a(cernvm): pass\ndef test_b(cernvm): pass\n"}
    )
    result = run_pytest(work, subprocess_env(tmp_path / "state"), "test_it.py")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "box  problem  daemon: cannot reach the Docker daemon" in result.stderr
    assert "test_a" not in result.stdout


def test_the_plugin_runs_no_checks_when_no_test_uses_an_instance(tmp_path):
    work = write_work(tmp_path, config=UNREACHABLE, tests={"test_it.py": "def test_plain(): pass\n"})
    result = run_pytest(work, subprocess_env(tmp_path / "state"), "test_it.py")
    assert result.returncode == 0, result.stdout + result.stderr
