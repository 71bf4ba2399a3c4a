"""The scenario suite end to end on KVM, through the plugin in a separate pytest process.

Positive: the default config boots the appliance and every scenario passes.
Negative: each broken appliance variant (or wrong profile / NIC) makes exactly
its scenario fail, with a message naming what is wrong.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import ROOT, domains_under, ledger_entries, subprocess_env

pytestmark = pytest.mark.integration

LOOPBACK = ["--allow-hosts=127.0.0.1,::1", "--allow-unix-socket"]


def run_suite(tmp_path: Path, *args: str, config: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real scenario files with the plugin in a fresh process; nothing may be left afterwards."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    if config is not None:
        (work / "cernvm.toml").write_text(textwrap.dedent(config))
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "-rA", *LOOPBACK, *args],
        cwd=work,
        env=subprocess_env(state),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result.output = result.stdout + result.stderr
    assert domains_under(tmp_path) == [], f"domains left behind:\n{result.output[-3000:]}"
    assert ledger_entries(state) == [], "ledger entries left behind"
    assert not list(state.glob("runs/*")), "run directory left behind"
    return result


def outcomes(output: str) -> dict[str, str]:
    """test name -> PASSED/FAILED/SKIPPED/ERROR from pytest's -rA short summary."""
    found = {}
    for status, nodeid in re.findall(r"^(PASSED|FAILED|SKIPPED|ERROR) (\S+)", output, re.M):
        found[nodeid.split("::")[-1].split("[")[0]] = status
    for nodeid in re.findall(r"^SKIPPED \[\d+\] (\S+?):\d+:", output, re.M):
        found.setdefault(nodeid, "SKIPPED")
    return found


def test_scenario_suite_passes_on_the_appliance(tmp_path):
    result = run_suite(tmp_path, "-k", "kvm")
    assert result.returncode == 0, result.output[-6000:]
    found = outcomes(result.output)
    assert found and all(status == "PASSED" for status in found.values()), found
    assert len(found) == 16
    assert "cernvm: target x scenario" in result.output


NEGATIVE = [
    # (variant or config, -k selection, failing tests, a phrase of the message)
    ("appliance:no-cvmfs", "cvmfs", {"test_repositories_mounted_read_only", "test_probe", "test_content_readable"},
     "/cvmfs/cernvm-prod.cern.ch is not mounted"),
    ("appliance:no-scratch", "scratch", {"test_scratch_disk_mounted", "test_bootloader_version_file"},
     "/mnt/.rw is a tmpfs mount of tmpfs, expected the ext4 scratch disk"),
    ("appliance:no-shared", "shared", {"test_shared_folders_mounted", "test_host_to_guest", "test_guest_to_host"},
     "shared folder 'data' is not mounted at /mnt/shared/data"),
    ("appliance:bad-cmdline", "kernel", {"test_kernel_command_line"},
     "kernel command line lacks cvmfs_repos=cernvm-prod.cern.ch cernvm_path=cvm4"),
    ("appliance:no-context", "context and not ucernvm", {"test_hostname", "test_user_data_source", "test_user_data_recorded"},
     "no record of where the user data came from"),
]


@pytest.mark.parametrize("image,selection,failing,message", NEGATIVE, ids=[n[0].split(":")[1] for n in NEGATIVE])
def test_broken_variant_fails_its_scenario(tmp_path, image, selection, failing, message):
    result = run_suite(tmp_path, "-k", f"kvm and ({selection})", f"--cernvm-image={image}")
    found = outcomes(result.output)
    assert {name for name, status in found.items() if status == "FAILED"} == failing, result.output[-6000:]
    assert message in result.output
    assert result.returncode == 1


def test_wrong_nic_fails_the_network_scenario(tmp_path):
    result = run_suite(
        tmp_path,
        "-k", "network",
        config="""
            [targets.kvm-e1000]
            provider = "kvm"
            nic_model = "e1000"
        """,
    )
    assert outcomes(result.output) == {"test_network_driver": "FAILED"}, result.output[-4000:]
    assert "eth0 is driven by e1000, expected virtio_net" in result.output


def test_wrong_profile_fails_the_kernel_scenario(tmp_path):
    profile = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    broken = tmp_path / "cernvm-kernel.toml"
    broken.write_text(profile.replace("{ expect = '^\\d+\\.\\d+\\.\\d+-\\d+-amd64$' }", "{ expect = '^\\d+\\.\\d+\\.\\d+-\\d+\\.cernvm\\.x86_64$' }"))
    assert broken.read_text() != profile
    result = run_suite(tmp_path, "-k", "kvm and kernel_release", f"--cernvm-profile={broken}")
    assert outcomes(result.output) == {"test_kernel_release": "FAILED"}, result.output[-4000:]
    assert re.search(r"kernel release is '\d+\.\d+\.\d+-\d+-amd64', but profile 'appliance' expects", result.output)
