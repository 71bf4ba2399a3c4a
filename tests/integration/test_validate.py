"""``cernvm-fixtures validate`` from a wheel installed in a fresh virtual environment outside the repository: the
scenario suite, the profiles and the appliance travel in the package, one command validates the appliance on KVM
and Docker and writes the three reports, and a failing scenario makes it exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from ..helpers import ROOT, domains_under, ledger_entries


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the project's wheel (its dependencies seen through a .pth file pointing at
    this environment's site-packages: no download); returns its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next((work / "dist").glob("cernvm_fixtures-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        env=outside_env(work),  # else pip finds the checkout on PYTHONPATH and calls the package installed
    )
    where = subprocess.run(
        [venv / "bin/python", "-c", "import cernvm_fixtures.scenarios as s; print(s.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=outside_env(work),
    ).stdout.strip()
    assert where.startswith(str(site)), f"the scenarios must come from the wheel, not the checkout: {where}"
    return venv / "bin"


def outside_env(work: Path) -> dict[str, str]:
    """This environment without a way back into the checkout (the test session puts it on PYTHONPATH for its own
    child runs), with a state directory of its own, and the network rule for the scenario run validate starts (its
    pytest-socket comes with the dependencies)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["CERNVM_FIXTURES_STATE"] = str(work / "state")
    env["PYTEST_ADDOPTS"] = "--allow-hosts=127.0.0.1,::1 --allow-unix-socket"
    return env


def validate(bin_dir: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = outside_env(work)
    outside = work / "elsewhere"
    outside.mkdir(exist_ok=True)
    result = subprocess.run(
        [bin_dir / "cernvm-fixtures", "validate", *args, "--report", str(work / "report")],
        cwd=outside,  # no checkout, no config file, no conftest here
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(result.stdout[-6000:], result.stderr[-3000:])
    assert domains_under(work) == [] and ledger_entries(work / "state") == [], "validate left something behind"
    return result


def cells(report: Path) -> dict[str, str]:
    """``name[target]`` -> passed / failed / skipped, from the JUnit report."""
    found = {}
    for case in ElementTree.parse(report / "junit.xml").iter("testcase"):
        status = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        found[case.get("name", "")] = {"error": "failed", "failure": "failed"}.get(status, status)
    return found


SHARED_ONLY = "not power and not reboot and not cable and not small_scratch and not large_scratch and not upgrade"
SHARED_ONLY += " and not context_users"
"""The scenarios on each target's shared instance: those that boot instances of their own (the checklist's power
button, reboot, cable, scratch sizes, upgrade, context users) run in the KVM suite (test_kvm_suite.py), not again
here, where the point is the installed wheel."""


def test_validate_the_appliance_on_kvm_and_docker_from_a_wheel(installed, tmp_path):
    result = validate(installed, tmp_path, "appliance", "--target", "kvm", "--target", "docker", "-k", SHARED_ONLY)
    assert result.returncode == 0, result.stdout[-6000:]
    found = cells(tmp_path / "report")
    assert {name.partition("[")[2] for name in found} == {"kvm]", "docker]"}, found
    assert found["test_kernel_release[kvm]"] == "passed" and found["test_profile_workloads_succeed[docker]"] == "passed"
    assert "failed" not in found.values(), found
    markdown = (tmp_path / "report/report.md").read_text()
    assert "kvm" in markdown and "docker" in markdown
    assert "<html" in (tmp_path / "report/report.html").read_text().lower()


def test_validate_exits_non_zero_and_names_the_failure(installed, tmp_path):
    """A profile that expects a CernVM kernel on the Docker host's: the kernel scenario fails, validate says so."""
    profile = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    rule = (
        '{ kind = "container", expect = \'^${host_kernel}$\', why = "a container runs on the Docker host\'s kernel" }'
    )
    assert rule in profile
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(profile.replace(rule, "{ kind = \"container\", expect = '^\\d+\\.cernvm\\.x86_64$' }"))
    result = validate(installed, tmp_path, "appliance", "--target", "docker", "--profile", str(wrong), "-k", "kernel")
    assert result.returncode == 1, result.stdout[-4000:]
    assert cells(tmp_path / "report")["test_kernel_release[docker]"] == "failed"
    assert "test_kernel_release" in result.stdout and "1 failed" in result.stdout
    assert (tmp_path / "report/report.html").is_file() and (tmp_path / "report/report.md").is_file()
