"""The scenario suite end to end on the gce provider: local Compute API + one KVM stand-in per instance.

The instances the local Compute API holds do not run; where the suite needs SSH, the run's endpoint hook
boots the test appliance under KVM from the ``user-data`` metadata the API holds for the instance (only if the
``ssh-keys`` metadata names exactly the keys it will admit, as GCE's guest agent would install them), and copies
the stand-in's serial console to the instance's serial port 1, where the provider reads the host keys from.
"""

from __future__ import annotations

import secrets

from ..clouds import held, suite_through_standins


def test_scenario_suite_end_to_end_with_standins(gce, gce_image, tmp_path):
    case = "e2e-" + secrets.token_hex(4)
    # the stand-in boots inside the reachable step, under TCG, on a shared 2-core machine
    deadlines = {"running": 30, "reachable": 360, "login": 120, "ready": 120}
    labels = {"test-case": case}
    suite_through_standins(
        tmp_path, gce, gce_image, gce.env, poll_interval=0.2, slowdown=1, labels=labels, deadlines=deadlines
    )
    assert held(gce) == {}, "the local Compute API still holds resources of the run"
