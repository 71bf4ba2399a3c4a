"""The scenario suite end to end on the gce provider: local Compute API + one KVM stand-in per instance.

The instances the local Compute API holds do not run; where the suite needs SSH, the run's endpoint hook
boots the test appliance under KVM from the ``user-data`` metadata the API holds for the instance (only if the
``ssh-keys`` metadata names exactly the keys it will admit, as GCE's guest agent would install them), and copies
the stand-in's serial console to the instance's serial port 1, where the provider reads the host keys from.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from ..helpers import assert_through_standins, domains_under, ledger_entries, run_suite, standin_work, subprocess_env
from . import test_gce
from .test_gce import CIDR, ours

image = test_gce.image  # the uploaded image fixture, shared with the lifecycle tests
HERE = Path(__file__).resolve().parent

STANDIN_CONFTEST = '''
"""Stand-ins for GCE instances that the local Compute API only pretends to run."""
from standins import StandIns, cloud_config


def user_data(machine, host):
    instance = machine._instances().get(project=machine.project, zone=machine.options.zone, instance=machine.name)
    metadata = {item.key: item.value for item in instance.metadata.items}
    keys = [line.split(":", 1)[1] for line in metadata["ssh-keys"].splitlines() if line.startswith("root:")]
    blob = metadata["user-data"].encode()
    # The appliance installs keys from the cloud-config only; the user data must stay byte for byte what the
    # instance holds (a scenario compares it), so the stand-in is booted only if it would admit exactly the
    # keys of the instance's ssh-keys metadata, as GCE's guest agent would install them.
    assert keys and keys == cloud_config(blob).get("ssh_authorized_keys"), keys
    assert metadata.get("block-project-ssh-keys") == "true"
    return blob


def booted(machine, standin):
    STANDINS.forward_console(standin, f"{machine.options.endpoint}/_test/console/{machine.name}")
    STANDINS.name_screen(standin, f"{machine.options.endpoint}/_test/screen/{machine.name}")


STANDINS = StandIns("gce", user_data, booted)


def pytest_cernvm_endpoint(machine, host, port):
    return STANDINS.endpoint(machine, host)


def pytest_sessionfinish(session):
    STANDINS.finish()
'''


def test_scenario_suite_end_to_end_with_standins(gce, image, tmp_path):
    work = standin_work(tmp_path, STANDIN_CONFTEST)
    case = "e2e-" + secrets.token_hex(4)
    options = {
        "provider": "gce",
        "image": image,
        "profile": str(HERE / "gce_standin.toml"),
        "zone": gce.zone,
        "endpoint": gce.api.url,
        "storage_endpoint": gce.storage,
        "ssh_cidr": CIDR,
        "poll_interval": 0.2,
        "slowdown": 1,
        "labels": {"test-case": case},
    }
    # the stand-in boots inside the reachable step, under TCG, on a shared 2-core machine
    deadlines = {"running": 30, "reachable": 360, "login": 120, "ready": 120}
    (work / "cernvm.toml").write_text(
        "[targets.gce]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items() if k != "labels")
        + f'labels = {{ "test-case" = "{case}" }}\n'
        + "deadlines = { "
        + ", ".join(f"{k} = {v}" for k, v in deadlines.items())
        + " }\n"
    )
    state = tmp_path / "state"
    suite = run_suite(work, tmp_path / "report.xml", {**subprocess_env(state), **gce.env}, timeout=1500)
    assert_through_standins(suite, work, instances=2)
    assert domains_under(tmp_path) == [], "stand-in domains left behind"
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    assert ours(gce) == {}, "the local Compute API still holds resources of the run"
