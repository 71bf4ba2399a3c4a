"""The scenario suite end to end on the gce provider: local Compute API + one KVM stand-in per instance.

The instances the local Compute API holds do not run; where the suite needs SSH, the run's endpoint hook
boots the test appliance under KVM from the ``user-data`` metadata the API holds for the instance (only if the
``ssh-keys`` metadata names exactly the keys it will admit, as GCE's guest agent would install them), and copies
the stand-in's serial console to the instance's serial port 1, where the provider reads the host keys from.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from ..helpers import ROOT, domains_under, ledger_entries, pytest_command, subprocess_env
from . import test_gce
from .test_gce import CIDR, ours

pytestmark = pytest.mark.integration

image = test_gce.image  # the uploaded image fixture, shared with the lifecycle tests
HERE = Path(__file__).resolve().parent

STANDIN_CONFTEST = '''
"""Stand-ins for GCE instances that the local Compute API only pretends to run."""
import email
import threading
import time
from dataclasses import dataclass

import yaml
from standin_console import forward_console

from cernvm_fixtures import config
from cernvm_fixtures.context import Context
from cernvm_fixtures.providers.kvm import KvmProvider
from cernvm_fixtures.run import Run

STANDINS = {}
RUN = []
STOP = threading.Event()


@dataclass(frozen=True)
class FromGce(Context):
    blob: bytes = b""

    def render(self):
        return self.blob


def cloud_config(blob):
    message = email.message_from_bytes(blob)
    parts = [p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()]
    for part in parts if message.is_multipart() else [blob]:
        if part.startswith(b"#cloud-config"):
            return yaml.safe_load(part)
    raise AssertionError("the user-data metadata has no cloud-config part")


def boot(machine):
    instance = machine._instances().get(project=machine.project, zone=machine.options.zone, instance=machine.name)
    metadata = {item.key: item.value for item in instance.metadata.items}
    keys = [line.split(":", 1)[1] for line in metadata["ssh-keys"].splitlines() if line.startswith("root:")]
    blob = metadata["user-data"].encode()
    data = cloud_config(blob)
    # The appliance installs keys from the cloud-config only; the user data must stay byte for byte what the
    # instance holds (a scenario compares it), so the stand-in is booted only if it would admit exactly the
    # keys of the instance's ssh-keys metadata, as GCE's guest agent would install them.
    assert keys and keys == data.get("ssh_authorized_keys"), (keys, data.get("ssh_authorized_keys"))
    assert metadata.get("block-project-ssh-keys") == "true"
    hostname = data["hostname"]
    if not RUN:
        RUN.append(Run())
    target = config.parse({"targets": {"standin": {"provider": "kvm"}}}, "gce stand-in").targets["standin"]
    provider = KvmProvider(target, RUN[0])
    standin = provider.machine(RUN[0].name("standin"))
    try:
        provider.launch(standin, FromGce(hostname=hostname, blob=blob))
    except BaseException:
        standin.destroy()
        raise
    url = f"{machine.options.endpoint}/_test/serial/{machine.name}"
    threading.Thread(target=forward_console, args=(standin, url, STOP), daemon=True).start()
    return standin


def pytest_cernvm_endpoint(machine, host, port):
    if machine.provider.name != "gce":
        return None
    if machine.name not in STANDINS:
        STANDINS[machine.name] = boot(machine)
        with open("standins.log", "a") as log:
            print(machine.name, host, "->", STANDINS[machine.name].name, file=log)
    return "127.0.0.1", STANDINS[machine.name].ssh_port


def pytest_sessionfinish(session):
    STOP.set()
    while STANDINS:
        STANDINS.popitem()[1].destroy()
    for run in RUN:
        run.finish()
'''


def test_scenario_suite_end_to_end_with_standins(gce, image, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    (work / "conftest.py").write_text(STANDIN_CONFTEST)
    shutil.copy(HERE / "standin_console.py", work)
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
    result = subprocess.run(
        pytest_command("scenarios", "--junitxml", str(tmp_path / "report.xml")),
        cwd=work,
        env={**subprocess_env(state), **gce.env},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    cases = {c.get("name").split("[")[0]: c for c in ElementTree.parse(tmp_path / "report.xml").iter("testcase")}
    skipped = {name: c.find("skipped").get("message") for name, c in cases.items() if c.find("skipped") is not None}
    failed = [name for name, c in cases.items() if c.find("failure") is not None or c.find("error") is not None]
    assert not failed and cases, output[-6000:]
    assert set(cases) - set(skipped) >= {
        "test_kernel_release",
        "test_kernel_command_line",
        "test_repositories_mounted_read_only",
        "test_os_repository_is_the_root_source",
        "test_probe",
        "test_content_readable",
        "test_scratch_disk_mounted",
        "test_bootloader_version_file",
        "test_hostname",
        "test_user_data_recorded",
        "test_ucernvm_block_delivered",
    }, skipped
    assert "stand-in" in skipped.pop("test_network_driver") and "stand-in" in skipped.pop("test_user_data_source")
    assert set(skipped) == {"test_shared_folders_mounted", "test_host_to_guest", "test_guest_to_host"}
    standins = (work / "standins.log").read_text().splitlines()
    assert len(standins) == 2, "two GCE instances (plain and ucernvm context), each with its own stand-in"
    assert domains_under(tmp_path) == [], "stand-in domains left behind"
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    assert ours(gce) == {}, "the local Compute API still holds resources of the run"
