"""Reverse SSHFS shared folders on KVM, proven on the appliance's sshfs variant (no 9p, like CernVM 4).

The shared-folder scenarios run unchanged against a profile saying ``shared.mechanism = "sshfs"``; a
conftest stands in for the harness hook that calls :func:`cernvm_fixtures.shared.mount_shared_folders`
once the instance is ready. On the ok appliance (9p, no sshfs) the same setup fails, naming what is missing.
"""

from __future__ import annotations

from tests.helpers import ROOT, domains_under, ledger_entries, outcomes, run_scenarios

CONFTEST = """
    import pytest

    from cernvm_fixtures.shared import mount_shared_folders

    MOUNTS = {}


    @pytest.fixture(autouse=True)
    def reverse_sshfs(request):
        # stands in for the harness: mount the shared folders once the instance is ready
        if "cernvm" in request.fixturenames:
            instance = request.getfixturevalue("cernvm")
            if instance.name not in MOUNTS:
                try:
                    MOUNTS[instance.name] = mount_shared_folders(instance)
                except Exception as e:
                    MOUNTS[instance.name] = e
            if isinstance(MOUNTS[instance.name], Exception):
                raise MOUNTS[instance.name]


    def pytest_sessionfinish(session):
        for mounts in MOUNTS.values():
            for mount in mounts if isinstance(mounts, list) else []:
                mount.close()
"""


CONFIG = """
    [targets.kvm]
    provider = "kvm"
    slowdown = 15  # TCG on a shared 2-core machine: boots of several minutes are normal there
    shared_folders = { data = "" }
"""


def sshfs_profile(tmp_path):
    text = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    text = text.replace('  { expect = "9p" },', '  { expect = "sshfs" },')
    assert '{ expect = "sshfs" }' in text
    path = tmp_path / "appliance-sshfs.toml"
    path.write_text(text)
    return path


def run_shared(tmp_path, image):
    result = run_scenarios(
        tmp_path,
        "-k",
        "kvm and shared",
        f"--cernvm-image={image}",
        f"--cernvm-profile={sshfs_profile(tmp_path)}",
        config=CONFIG,
        conftest=CONFTEST,
    )
    assert domains_under(tmp_path) == [], f"domains left behind:\n{result.output[-3000:]}"
    assert ledger_entries(tmp_path / "state") == [], "ledger entries left behind"
    return result


def test_reverse_sshfs_on_the_sshfs_variant(tmp_path):
    result = run_shared(tmp_path, "appliance:sshfs")
    assert outcomes(result.output) == {
        "test_shared_folders_mounted[kvm]": "PASSED",
        "test_host_to_guest[kvm]": "PASSED",
        "test_guest_to_host[kvm]": "PASSED",
    }, result.output[-6000:]


def test_reverse_sshfs_without_sshfs_in_the_guest_says_so(tmp_path):
    result = run_shared(tmp_path, "appliance:ok")
    assert set(outcomes(result.output).values()) == {"ERROR"}, result.output[-6000:]
    assert "says shared.mechanism = 'sshfs', but the guest has no sshfs" in result.output
