"""The openstack provider through the real openstacksdk against the local OpenStack in tests/fakes/openstack.

The fake holds servers as records: their addresses come from documentation
ranges and are never connected to. Where a test needs SSH, the run's endpoint
hook sends it to the project's test appliance booted under KVM on 127.0.0.1
(the stand-in), as the EC2 tests do.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cernvm_fixtures import config
from cernvm_fixtures.context import Context
from cernvm_fixtures.errors import ConfigError, PermanentError, ProviderError
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers import openstack as osmod
from cernvm_fixtures.providers.openstack import OpenStackProvider
from cernvm_fixtures.run import Keep, Run

from ..fakes.openstack import CLOUD, openstack_cloud  # noqa: F401 - the fixture
from ..fakes.openstack.cloud import FakeOpenStack
from ..helpers import cli, domains_under, ledger_entries, subprocess_env

pytestmark = pytest.mark.integration

CIDR = "203.0.113.7/32"
CERN_IMAGE = "CernVM 4 - Bootloader v2020.04-1 [2020-04-01]"
HERE = Path(__file__).resolve().parent


# --- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A small stand-in for a CernVM ISO to upload (the appliance ISO goes through the same path)."""
    path = tmp_path_factory.mktemp("images") / "ucernvm-prod.2020.04-1.cernvm.x86_64.iso"
    path.write_bytes(secrets.token_bytes(64 * 1024))
    return path


@pytest.fixture(scope="module")
def cern_image(openstack_cloud: FakeOpenStack) -> str:
    """An image as CERN's cloud offers it, under its documented kind of name."""
    return openstack_cloud.add_image(CERN_IMAGE, b"cernvm-bootloader")["id"]


def target_for(image: str = CERN_IMAGE, name: str = "os", **options) -> config.Target:
    raw = {
        "provider": "openstack",
        "image": image,
        "profile": "appliance",
        "cloud": CLOUD,
        "ssh_cidr": CIDR,
        "poll_interval": 0.05,
        "slowdown": 1,
        "deadlines": {"running": 10, "reachable": 20, "login": 20, "ready": 20},
        **options,
    }
    return config.parse({"targets": {name: raw}}, "test").targets[name]


def run_for(tmp_path: Path, standin=None, *, keep: Keep = Keep.NEVER, endpoint=None) -> Run:
    if endpoint is None and standin is not None:
        port = standin.machine.ssh_port
        endpoint = lambda machine, host, p: ("127.0.0.1", port)  # noqa: E731
    run = Run(state=tmp_path / "state", keep=keep, endpoint=endpoint)
    if standin is not None:
        run.directory.mkdir(parents=True, mode=0o700)
        shutil.copy2(standin.machine.provider.run.key_file, run.directory / "id_ed25519")
    return run


def create_only(target: config.Target, run: Run, name: str | None = None):
    """Provider launch plus wait_running, without readiness (no SSH): returns the machine."""
    provider = OpenStackProvider(target, run)
    machine = provider.machine(name or run.name(target.name))
    context = Context(hostname=machine.name, ssh_keys=(run.public_key,))
    try:
        provider.launch(machine, context)
        machine.wait_running(time.monotonic() + 10)
    except BaseException:
        machine.destroy()
        raise
    return machine, context


def assert_nothing_left(fake: FakeOpenStack, run: Run) -> None:
    assert fake.holds() == {}, "the fake still holds resources of the run"
    assert run.ledger.entries() == []
    assert fake.errors == [], fake.errors


@pytest.fixture(autouse=True)
def _clean(openstack_cloud):
    yield
    openstack_cloud.fail_next_build = None
    openstack_cloud.quota_instances = 10
    openstack_cloud.console_after = 0.0
    openstack_cloud.port_release_seconds = 0.0


# --- lifecycle ----------------------------------------------------------------------------------------


def test_create_labels_and_remove_everything(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    run = run_for(tmp_path)
    machine, context = create_only(target_for(), run)
    try:
        entries = {r.kind: r for r in run.ledger.entries()}
        assert set(entries) == {"keypair", "security-group", "server"}
        assert all(r.data.get("id") and r.data["cloud"] == CLOUD for r in entries.values())
        held = fake.holds()
        assert held.keys() == {"server", "keypair", "security-group", "port"}
        server = fake.servers[machine.server_id]
        body = server.body
        assert body["status"] == "ACTIVE" and body["image"]["id"] == cern_image
        assert server.user_data == context.render(), "the context is the user data, byte for byte"
        assert body["metadata"]["cern-services"] == "false"
        assert body["metadata"]["cernvm-fixtures:run"] == run.id
        assert body["metadata"]["cernvm-fixtures:machine"] == machine.name
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body["metadata"]["cernvm-fixtures:expires"])
        assert body["tags"] == ["cernvm-fixtures", f"run={run.id}", f"machine={machine.name}"]
        assert body["key_name"] == machine.name
        assert fake.keypairs[machine.name]["public_key"] == run.public_key
        # least privilege: one ingress rule, tcp/22 from the configured CIDR
        group = fake.groups[held["security-group"][0]]
        rules = [r for r in fake.rules.values() if r["security_group_id"] == group["id"]]
        ingress = [(r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"])
                   for r in rules if r["direction"] == "ingress"]
        assert ingress == [("tcp", 22, 22, CIDR)]
        assert f"cernvm-fixtures:run={run.id}" in group["tags"]
        port = fake.ports[held["port"][0]]
        assert port["security_groups"] == [group["id"]]
        assert machine.platform_address().startswith("192.0.2.")
    finally:
        machine.destroy()
    assert_nothing_left(fake, run)
    for resource in entries.values():  # again, from the ledger alone: all gone, that is fine
        OpenStackProvider.destroy_resource(resource)
