"""The scenario suite end to end on the gce provider: local Compute API + one KVM stand-in per instance.

The instances the local Compute API holds do not run; where the suite needs SSH, the run's endpoint hook
boots the test appliance under KVM from the ``user-data`` metadata the API holds for the instance (only if the
``ssh-keys`` metadata names exactly the keys it will admit, as GCE's guest agent would install them), and copies
the stand-in's serial console to the instance's serial port 1, where the provider reads the host keys from.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from ..clouds import config_file, held
from ..helpers import (
    STANDINS,
    assert_through_standins,
    domains_under,
    ledger_entries,
    run_suite,
    subprocess_env,
    suite_work,
)

HERE = Path(__file__).resolve().parent


def test_scenario_suite_end_to_end_with_standins(gce, gce_image, tmp_path):
    work = suite_work(tmp_path)
    case = "e2e-" + secrets.token_hex(4)
    config_file(
        work / "cernvm.toml",
        gce,
        gce_image,
        profile=str(HERE / "gce_standin.toml"),
        poll_interval=0.2,
        slowdown=1,
        labels={"test-case": case},
        # the stand-in boots inside the reachable step, under TCG, on a shared 2-core machine
        deadlines={"running": 30, "reachable": 360, "login": 120, "ready": 120},
    )
    state = tmp_path / "state"
    suite = run_suite(work, tmp_path / "report.xml", {**subprocess_env(state), **gce.env}, timeout=1500, args=STANDINS)
    assert_through_standins(suite, work, instances=2)
    assert domains_under(tmp_path) == [], "stand-in domains left behind"
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    assert held(gce) == {}, "the local Compute API still holds resources of the run"
