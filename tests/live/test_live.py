"""The live tier: the provider contract and the scenario suite against the real clouds, for whoever has an account.

``./dev test --live`` runs it (never CI, never this repository's hosts): it reaches each cloud's real API and
guests, so the network rule is lifted for it alone (``--force-enable-socket``), and ``cernvm-fixtures sweep``
runs after it whatever happened. ``CERNVM_FIXTURES_LIVE_CONFIG`` names a cernvm.toml declaring the targets
``ec2``, ``openstack``, ``gce`` and/or ``azure`` (README, "Verifying a target for real"); a cloud with no target
there, or whose credentials its SDK's own chain does not resolve (the doctor's checks), is skipped with the
reason. Without the variable every test here skips: the tier is also a check that the fakes have not drifted from
the real services (the same contract and scenarios pass on both).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cernvm_fixtures import config, providers
from cernvm_fixtures.doctor import checks
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing.contract import Objects, ProviderContract

pytestmark = pytest.mark.live

CONFIG_ENV = "CERNVM_FIXTURES_LIVE_CONFIG"
CLOUDS = ("ec2", "openstack", "gce", "azure")


def live_target(cloud: str) -> config.Target:
    """The live config's target of ``cloud``, once the doctor finds nothing that stops it; else the test skips,
    naming why (no config, no such target, the checks' problems: missing credentials, region, project...)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        pytest.skip(f"{CONFIG_ENV} is not set: no live cloud account is configured (README: verifying for real)")
    loaded = config.load(Path(path).expanduser())
    if cloud not in loaded.targets:
        pytest.skip(f"{path} declares no target named {cloud!r}")
    target = loaded.targets[cloud]
    problems = [c.line(cloud) for c in checks(target) if c.severity == "problem"]
    if problems:
        pytest.skip("; ".join(problems))
    return target


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_scenario_suite_passes_on_the_real_cloud(cloud: str, tmp_path: Path) -> None:
    """The shipped scenario suite on the live target, as a release engineer runs it."""
    live_target(cloud)
    command = [sys.executable, "-m", "pytest", "--pyargs", "cernvm_fixtures.scenarios", "-p", "no:cacheprovider"]
    command += ["-rfEs", f"--cernvm-config={os.environ[CONFIG_ENV]}", f"--cernvm-target={cloud}"]
    command += [f"--junitxml={tmp_path / 'junit.xml'}", "--cernvm-workers=0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


class TestLiveContract(ProviderContract):
    """The provider contract on each live cloud, its objects read back through the provider's own sweep listing."""

    contract_skips = {
        "test_ledger_entry_precedes_every_create": "needs the fake's request hook (run against the fakes)",
        "test_error_halfway_through_create_leaves_nothing": "needs the fake's request hook (run against the fakes)",
        "test_sigkill_then_sweep": "covered by the sweep ./dev test --live runs after the tier",
    }

    @pytest.fixture(scope="class", params=CLOUDS)
    @classmethod
    def contract_target(cls, request: pytest.FixtureRequest) -> config.Target:
        return live_target(request.param)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls, contract_target: config.Target) -> Objects:
        provider = providers.get(contract_target.provider)

        def objects(run: Run) -> set[str]:
            return {f"{r.kind}:{r.name}" for r in provider.leftovers(contract_target, set()) if r.run == run.id}

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Callable[[Callable[[], None]], object]:
        pytest.skip("needs the fake's request hook (run against the fakes)")
