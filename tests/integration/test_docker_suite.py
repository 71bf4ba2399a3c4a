"""The scenario suite end to end on Docker (both modes), through the plugin in a separate pytest process.

Positive: the default config runs the appliance's Docker tarball in parrot and
bindmount mode and every scenario passes or is skipped with a reason.
Negative: a broken image or a broken container setting makes its scenarios
fail, with a message naming what is wrong. Afterwards nothing may be left: no
container, image or volume labelled for the test's state directory, no ledger
entry, no run directory.
"""

from __future__ import annotations

import functools
import gzip
import re
import tarfile
from pathlib import Path

from cernvm_fixtures import appliance

from ..helpers import ROOT, docker_objects_under, outcomes, scenario_ids, scenarios_leaving_nothing, skip_reasons

run_suite = functools.partial(scenarios_leaving_nothing, objects=docker_objects_under, timeout=300)
"""The scenario suite in a fresh process; nothing may be left afterwards."""


def test_scenario_suite_passes_on_the_appliance_in_both_modes(tmp_path):
    result = run_suite(tmp_path, "-k", "docker")
    assert result.returncode == 0, result.output[-6000:]
    found = outcomes(result.output)
    for target in ("docker", "docker-bindmount"):
        for test in (
            "test_hostname",
            "test_probe",
            "test_content_readable",
            "test_kernel_release",
            "test_shared_folders_mounted",
            "test_host_to_guest",
            "test_guest_to_host",
        ):
            if (test, target) == ("test_probe", "docker"):
                continue  # parrot mode: no cvmfs2 mount for cvmfs_config probe (skipped, reason below)
            assert found.get(f"{test}[{target}]") == "PASSED", (test, target, found)
    assert found.get("test_repositories_mounted_read_only[docker-bindmount]") == "PASSED"
    assert set(found.values()) == {"PASSED"}, found
    collected = scenario_ids("docker", "docker-bindmount")
    assert set(found) <= collected, set(found) - collected
    reasons = skip_reasons(result.output)
    skipped = re.search(r"(\d+) skipped", result.output)
    assert skipped and int(skipped.group(1)) == len(collected - set(found)), "the others are skipped, with reasons"
    assert reasons and all(r.strip() for r in reasons)
    joined = "\n".join(reasons)
    for phrase in (
        "docker: parrot presents /cvmfs to the processes it runs without a kernel mount",
        "a container has no NIC of its own",
        "a container has no µCernVM scratch disk",
        "CernVM in Docker is not contextualized",
        "a container has no kernel command line of its own",
        "there is no cvmfs2 mount for cvmfs_config probe to find",
    ):
        assert phrase in joined, phrase
    assert "cernvm: target x scenario" in result.output


SECCOMP_BUG = """
    # a provider bug: the parrot-mode container keeps Docker's seccomp filter
    from cernvm_fixtures.providers import docker as provider

    real = provider.container_spec

    def buggy(**kwargs):
        spec = real(**kwargs)
        spec.pop("security_opt", None)
        return spec

    provider.container_spec = buggy
"""


def test_parrot_mode_without_seccomp_relaxation_fails_visibly(tmp_path):
    result = run_suite(
        tmp_path,
        "-k",
        "probe or kernel_release",
        config="""
            [targets.docker]
            provider = "docker"
        """,
        conftest=SECCOMP_BUG,
    )
    found = outcomes(result.output)
    assert found == {"test_probe[docker]": "ERROR", "test_kernel_release[docker]": "ERROR"}, result.output[-4000:]
    waited = float(re.search(r"step 'running' failed after ([\d.]+) s", result.output).group(1))
    assert waited < 5, "an exited container ends readiness at once, not after the 60 s deadline"
    assert "a seccomp filter is active (Seccomp: 2 in /proc/self/status)" in result.output
    assert "start the container with --security-opt seccomp=unconfined" in result.output
    assert result.returncode == 1


def without_mounts(prefix: str) -> str:
    """A conftest standing in for a provider bug: the container lacks its bind mounts under ``prefix``."""
    return f"""
        from cernvm_fixtures.providers import docker as provider

        real = provider.container_spec

        def buggy(**kwargs):
            spec = real(**kwargs)
            spec["mounts"] = [m for m in spec["mounts"] if not m["Target"].startswith({prefix!r})]
            return spec

        provider.container_spec = buggy
    """


def test_bindmount_without_the_repository_mount_fails_visibly(tmp_path):
    """Without its /cvmfs bind mount, /init falls back to parrot (as CernVM's does), which the filter stops."""
    result = run_suite(
        tmp_path,
        "-k",
        "docker-bindmount and probe",
        config="""
            [targets.docker-bindmount]
            provider = "docker"
            mode = "bindmount"
            repositories = { "cernvm-prod.cern.ch" = "" }
            deadlines = { running = 3 }
        """,
        conftest=without_mounts("/cvmfs/"),
    )
    assert outcomes(result.output) == {"test_probe[docker-bindmount]": "ERROR"}, result.output[-4000:]
    assert "a seccomp filter is active" in result.output


def tarball_without_repository(tmp_path: Path) -> Path:
    """The appliance's Docker tarball minus the repository its parrot (stand-in) would present."""
    source = appliance.build().docker_tarball
    broken = tmp_path / "cvm-docker-no-repository.tar.gz"
    with tarfile.open(source) as src, gzip.open(broken, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as dst:
        for member in src:
            if member.name.startswith("UCVM/parrot-preload/"):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return broken


def test_tarball_without_its_repository_fails_the_cvmfs_scenario(tmp_path):
    """CernVM takes the OS from the repository too, so nothing runs: every scenario says why, cvmfs included."""
    image = tarball_without_repository(tmp_path)
    result = run_suite(
        tmp_path,
        "-k",
        "cvmfs",
        config=f"""
            [targets.docker]
            provider = "docker"
            image = "{image}"
            profile = "appliance"
            deadlines = {{ running = 3 }}
        """,
    )
    found = outcomes(result.output)
    assert found and set(found.values()) == {"ERROR"}, result.output[-4000:]
    assert {"test_probe[docker]", "test_content_readable[docker]"} <= set(found)
    assert (
        "cannot access CERNVM_ROOT=/cvmfs/cernvm-prod.cern.ch/cvm4: repository cernvm-prod.cern.ch is not in "
        "the parrot preload of this image"
    ) in result.output
    assert result.returncode == 1


def test_wrong_kernel_expectation_fails_the_kernel_scenario(tmp_path):
    profile = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    broken = tmp_path / "appliance-cernvm-kernel.toml"
    broken.write_text(
        profile.replace("expect = '^${host_kernel}$'", "expect = '^\\d+\\.\\d+\\.\\d+-\\d+\\.cernvm\\.x86_64$'")
    )
    assert broken.read_text() != profile
    result = run_suite(tmp_path, "-k", "docker and kernel_release", f"--cernvm-profile={broken}")
    assert outcomes(result.output) == {
        "test_kernel_release[docker]": "FAILED",
        "test_kernel_release[docker-bindmount]": "FAILED",
    }, result.output[-4000:]
    assert re.search(
        r"kernel release is '[^']+', but profile 'appliance' expects one matching '.*cernvm.*' "
        r"\(a container runs on the Docker host's kernel\)",
        result.output,
    )


def test_missing_bind_mount_fails_the_shared_folder_scenario(tmp_path):
    result = run_suite(
        tmp_path,
        "-k",
        "docker and shared",
        conftest=without_mounts("/mnt/shared/"),  # a provider bug: the shared folders are not bind-mounted
    )
    found = outcomes(result.output)
    expected = {
        f"{test}[{target}]": "FAILED"
        for target in ("docker", "docker-bindmount")
        for test in ("test_shared_folders_mounted", "test_host_to_guest", "test_guest_to_host")
    }
    assert found == expected, result.output[-4000:]
    assert "shared folder 'data' is not mounted at /mnt/shared/data (expected a bind mount)" in result.output
    assert result.returncode == 1
