"""The openstack provider through the real openstacksdk against the local OpenStack in tests/fakes/openstack.

The fake holds servers as records: their addresses come from documentation
ranges and are never connected to. Where a test needs SSH, the run's endpoint
hook sends it to the project's test appliance booted under KVM on 127.0.0.1
(the stand-in), as the EC2 tests do.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import pytest
import requests

from cernvm_fixtures.context import Context
from cernvm_fixtures.errors import ConfigError, PermanentError, ProviderError
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers import openstack as osmod
from cernvm_fixtures.providers.kit import decode_fields
from cernvm_fixtures.providers.openstack import OpenStackProvider
from cernvm_fixtures.providers.openstack.fields import keypair_name
from cernvm_fixtures.run import Run

from ..clouds import (
    CIDR,
    assert_launch_fails,
    assert_nothing_left,
    config_file,
    run_for,
    suite_through_standins,
    target_for,
)
from ..fakes.openstack import tempest_schemas
from ..fakes.openstack.cloud import CURRENT_MICROVERSION, MAX_MICROVERSION, FakeOpenStack
from ..fakes.openstack.fixtures import CLOUD
from ..helpers import (
    create_only,
    killed_launch,
    ledger_entries,
    subprocess_env,
    sweep_killed,
)

CERN_IMAGE = "CernVM 4 - Bootloader v2020.04-1 [2020-04-01]"


# --- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A small stand-in for a CernVM ISO to upload (the appliance ISO goes through the same path)."""
    path = tmp_path_factory.mktemp("images") / "ucernvm-prod.2020.04-1.cernvm.x86_64.iso"
    data = bytearray(secrets.token_bytes(64 * 1024))
    data[32769:32774] = b"CD001"  # an ISO 9660 signature: the config's load-time check looks for it
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def cern_image(openstack_session: FakeOpenStack) -> str:
    """An image as CERN's cloud offers it, under its documented kind of name."""
    return openstack_session.add_image(CERN_IMAGE, b"cernvm-bootloader")["id"]


@pytest.fixture(autouse=True)
def _clean(openstack_cloud):
    yield
    openstack_cloud.fail_next_build = None
    openstack_cloud.quota_instances = 10
    openstack_cloud.console_after = 0.0
    openstack_cloud.port_release_seconds = 0.0
    openstack_cloud.hash_algo = "sha512"
    if openstack_cloud.max_microversion != MAX_MICROVERSION:
        openstack_cloud.max_microversion = MAX_MICROVERSION
        osmod.reset_connections()  # the next connection discovers the default maximum again


# --- lifecycle ----------------------------------------------------------------------------------------


def test_create_labels_and_remove_everything(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    run = run_for(tmp_path)
    machine, context = create_only(target_for(openstack_cloud, CERN_IMAGE), run, running=10)
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
        fields = decode_fields(body["metadata"])
        assert fields is not None and (fields.kind, fields.run, fields.name) == ("server", run.id, machine.name)
        assert abs(fields.expires - entries["server"].expires) < 1e-3
        assert set(body["tags"]) == {"cvmfx-provider=openstack", f"cvmfx-run={run.id}", f"cvmfx-name={machine.name}"}
        assert body["key_name"] == keypair_name(machine.name) != machine.name, "the key pair's name carries its mark"
        assert fake.keypairs[keypair_name(machine.name)]["public_key"] == run.public_key
        # least privilege: one ingress rule, tcp/22 from the configured CIDR
        group = fake.groups[held["security-group"][0]]
        rules = [r for r in fake.rules.values() if r["security_group_id"] == group["id"]]
        ingress = [
            (r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"])
            for r in rules
            if r["direction"] == "ingress"
        ]
        assert ingress == [("tcp", 22, 22, CIDR)]
        assert f"cvmfx-run={run.id}" in group["tags"]
        port = fake.ports[held["port"][0]]
        assert port["security_groups"] == [group["id"]]
        assert machine.platform_address().startswith("192.0.2.")
    finally:
        machine.destroy()
    assert_nothing_left(fake, run)
    for resource in entries.values():  # again, from the ledger alone: all gone, that is fine
        OpenStackProvider.destroy_resource(resource)


# --- the fake is held to upstream's shapes --------------------------------------------------------------


def upstream(module: str, name: str, *args) -> dict:
    """An example body from openstacksdk's own unit tests (shipped in its wheel), read without importing them."""
    import ast
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("openstack")
    path = Path(spec.origin).parent / "tests" / "unit" / module
    tree = ast.parse(path.read_text())
    namespace = {
        "json": json,
        "hashlib": hashlib,
        "PROJECT_ID": "p",
        "IDENTIFIER": "i",
        "COMPUTE_ENDPOINT": "c",
        "FAKE_PUBLIC_KEY": "k",
        "NO_MD5": "m",
        "NO_SHA256": "s",
        "Any": object,
        "datetime": __import__("datetime"),
        "fakes": type("fakes", (), {"PROJECT_ID": "p"}),
    }
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
            return namespace[name](*args)
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and target.id == name:
                return eval(compile(ast.Expression(node.value), str(path), "eval"), namespace)
    raise AssertionError(f"{name} not found in {path}")


NEUTRON_EXTENSION_ONLY = {
    "binding:host_id": "binding",
    "binding:profile": "binding",
    "binding:vif_details": "binding",
    "binding:vif_type": "binding",
    "binding:vnic_type": "binding",
    "data_plane_status": "data-plane-status",
    "device_profile": "port-device-profile",
    "dns_assignment": "dns-integration",
    "dns_domain": "dns-domain-ports",
    "dns_name": "dns-integration",
    "hardware_offload_type": "port-hardware-offload-type",
    "numa_affinity_policy": "port-numa-affinity-policy",
    "pvlan_type": "port-pvlan",
    "pvlan_community": "port-pvlan",
    "qos_network_policy_id": "qos-port-network-policy",
    "qos_policy_id": "qos",
    "propagate_uplink_status": "uplink-status-propagation",
    "resource_request": "port-resource-request",
    "trunk_details": "trunk-details",
    "trusted": "port-trusted-vif",
    "extra_dhcp_opts": "extra_dhcp_opt",
}
"""Keys of upstream's example port that only a Neutron extension adds; the fake does not list those extensions."""


def test_fake_serves_upstream_documents_and_shapes(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    conn = osmod.connection(CLOUD)
    fixtures = Path(osmod.openstacksdk().__file__).parent / "tests" / "unit" / "fixtures"
    served = requests.get(f"{fake.url}/compute", timeout=10).json()
    upstream_doc = json.loads((fixtures / "compute-version.json").read_text())
    assert json.dumps(served).replace(fake.url + "/compute", "https://compute.example.com") == json.dumps(upstream_doc)
    assert requests.get(f"{fake.url}/image", timeout=10).status_code == 300
    assert conn.compute.get_endpoint_data().max_microversion.__str__() == "(2, 53)"

    run = run_for(tmp_path)
    first = len(fake.requests)
    machine, _ = create_only(target_for(openstack_cloud, CERN_IMAGE), run, running=10)
    try:
        # Nova's bodies are held to tempest's schemas by the fake itself (tempest_schemas), on every call: here,
        # that every Nova call the provider made is one tempest has a schema for (else nothing checked it)
        session = conn.compute
        for path in (f"/servers/{machine.server_id}", f"/os-keypairs/{keypair_name(machine.name)}", "/flavors/1"):
            assert session.get(path, microversion="2.53").status_code == 200
        nova = {(m, p.rstrip("/")) for m, p in fake.requests[first:] if p.startswith("/compute")}
        unchecked = sorted(c for c in nova if tempest_schemas.checked(c[0], c[1][len("/compute") :]) is None)
        assert unchecked == [], f"Nova calls tempest has no response schema for (the fake checks nothing): {unchecked}"
        # Neutron's and Glance's: tempest has no response schemas, so upstream's example bodies
        network = conn.network
        group = network.get(f"/security-groups/{run.ledger.entries()[1].data['id']}").json()["security_group"]
        assert not set(
            upstream("cloud/test_security_groups.py", "make_fake_neutron_security_group", "1", "n", "d", [])
        ) - set(group)
        port = network.get("/ports").json()["ports"][0]
        expected = set(upstream("network/v2/test_port.py", "EXAMPLE")) - set(NEUTRON_EXTENSION_ONLY)
        assert not expected - set(port), expected - set(port)
        listed = {e["alias"] for e in network.get("/extensions").json()["extensions"]}
        assert not listed & set(NEUTRON_EXTENSION_ONLY.values()), "the fake lists an extension it does not implement"
        image = conn.image.get(f"/images/{cern_image}").json()
        wanted = set(upstream("cloud/fakes.py", "make_fake_image", "i"))
        sdk_only = {
            "image_state",
            "image_type",
            "ramdisk_id",
            "owner_specified.openstack.md5",
            "owner_specified.openstack.sha256",
            "owner_specified.openstack.object",
        }
        assert not wanted - sdk_only - set(image), wanted - sdk_only - set(image)
    finally:
        machine.destroy()
    assert_nothing_left(fake, run)


def test_fake_errors_come_in_the_services_shapes(openstack_cloud):
    conn = osmod.connection(CLOUD)
    nova = conn.compute.get("/servers/00000000-0000-0000-0000-000000000000")
    assert nova.status_code == 404 and set(nova.json()) == {"itemNotFound"}
    assert nova.json()["itemNotFound"]["code"] == 404
    neutron = conn.network.get("/security-groups/nope")
    assert neutron.status_code == 404 and neutron.json()["NeutronError"]["type"] == "SecurityGroupNotFound"
    from openstack import exceptions

    with pytest.raises(exceptions.NotFoundException, match="could not be found"):
        conn.compute.get_server("00000000-0000-0000-0000-000000000000")
    too_new = conn.compute.get("/servers", microversion="2.99")
    assert too_new.status_code == 406


def drift_flavor(fake: FakeOpenStack, conn, image: str) -> None:
    """A flavor whose ``ram`` the fake sends as a string (Nova: an integer); the SDK reads it."""
    fake.flavors["1"]["ram"] = str(fake.flavors["1"]["ram"])
    conn.compute.get_flavor("1")


def drift_server(fake: FakeOpenStack, conn, image: str) -> None:
    """A server the fake shows without ``hostId`` (required by every microversion's schema); the SDK reads it."""
    with fake.lock:
        fake.default_group()
        server = fake.create_server(server_body(fake, image), (2, 53))
        del server.body["hostId"]
    conn.compute.get_server(server.id)


@pytest.mark.parametrize(
    "drift, client, message",
    [
        (drift_flavor, "FlavorsClient.show_flavor", "'4096' is not of type 'integer'"),
        (drift_server, "ServersClient.show_server", "'hostId' is a required property"),
    ],
    ids=["flavor-ram-a-string", "server-without-hostId"],
)
def test_a_nova_response_outside_tempests_schema_fails_the_test(openstack_cloud, cern_image, drift, client, message):
    """The fake checks its own Nova responses against tempest's schemas: a drifted one reaches the SDK as a 500
    carrying tempest's message, and is recorded as a violation (which fails the test that caused it)."""
    from openstack import exceptions

    fake = openstack_cloud
    conn = osmod.connection(CLOUD)
    flavor, before = dict(fake.flavors["1"]), set(fake.servers)
    try:
        with pytest.raises(exceptions.HttpException) as caught:
            drift(fake, conn, cern_image)
        assert caught.value.status_code == 500
        assert f"tempest's schema for {client} at 2." in str(caught.value) and message in str(caught.value)
        assert fake.violations and all(message in v for v in fake.violations), fake.violations
        fake.violations.clear()  # seen: this test caused it on purpose
    finally:
        fake.flavors["1"] = flavor
        with fake.lock:
            for sid in set(fake.servers) - before:
                fake.servers[sid].deleting_since = time.monotonic()
        deadline = time.monotonic() + 10
        while set(fake.servers) - before and time.monotonic() < deadline:
            time.sleep(0.1)
            with fake.lock:
                fake._settle()
    assert not set(fake.servers) - before


# --- the services' own rules ----------------------------------------------------------------------------


def server_body(fake: FakeOpenStack, image: str, **server) -> dict:
    """A server-create body Nova accepts at any microversion from 2.37 on, with ``server`` keys changed."""
    network = next(n["id"] for n in fake.networks.values() if not n["router:external"])
    return {
        "server": {"name": "cvmfx-x", "flavorRef": "1", "imageRef": image, "networks": [{"uuid": network}], **server}
    }


def delete_server(fake: FakeOpenStack, sid: str) -> None:
    """Delete a server made by a raw call, and wait until Nova (and Neutron, its port) have let it go."""
    osmod.connection(CLOUD).compute.delete(f"/servers/{sid}")
    deadline = time.monotonic() + 10
    while sid in fake.holds().get("server", []) or any(p["device_id"] == sid for p in fake.ports.values()):
        assert time.monotonic() < deadline, f"server {sid} is not gone"
        time.sleep(0.05)


def nova_refusal(message: str) -> dict:
    return {"badRequest": {"code": 400, "message": message}}


@pytest.mark.parametrize("microversion", ["2.53", "2.100"])
def test_nova_refuses_what_its_own_schema_refuses(openstack_cloud, cern_image, microversion):
    """Nova's request schema of the microversion (tests/fakes/openstack/nova_schemas.py), with Nova's 400."""
    fake = openstack_cloud
    fake.max_microversion = CURRENT_MICROVERSION
    compute = osmod.connection(CLOUD).compute
    before = set(fake.servers)
    unknown = server_body(fake, cern_image, bogus=1)
    answer = compute.post("/servers", json=unknown, microversion=microversion)
    assert answer.status_code == 400
    assert answer.json() == nova_refusal(
        f"Invalid input for field/attribute server. Value: {unknown['server']}. "
        "Additional properties are not allowed ('bogus' was unexpected)"
    )
    no_networks = server_body(fake, cern_image)
    del no_networks["server"]["networks"]
    answer = compute.post("/servers", json=no_networks, microversion=microversion)
    assert answer.status_code == 400
    assert answer.json() == nova_refusal(
        f"Invalid input for field/attribute server. Value: {no_networks['server']}. 'networks' is a required property"
    )
    slash = server_body(fake, cern_image, metadata={"a/b": "x"})
    answer = compute.post("/servers", json=slash, microversion=microversion)
    assert answer.status_code == 400
    assert answer.json() == nova_refusal(
        "Invalid input for field/attribute metadata. Value: {'a/b': 'x'}. "
        "'a/b' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"
    )
    assert set(fake.servers) == before, "nothing refused was created"
    made = compute.post(
        "/servers", json=server_body(fake, cern_image, metadata={"a:b": "x"}), microversion=microversion
    )
    assert made.status_code == 202, made.text
    sid = made.json()["server"]["id"]
    try:
        assert fake.servers[sid].microversion == tuple(int(x) for x in microversion.split("."))
        answer = compute.post(f"/servers/{sid}/metadata", json={"metadata": {"a/b": "x"}}, microversion=microversion)
        assert (
            answer.status_code == 400
            and "'a/b' does not match any of the regexes" in answer.json()["badRequest"]["message"]
        )
    finally:
        delete_server(fake, sid)


def test_before_2_37_a_server_without_networks_gets_one(openstack_cloud, cern_image):
    """The rule is the microversion's: Nova allocates a network itself for a 2.36 request without ``networks``."""
    body = server_body(openstack_cloud, cern_image)
    del body["server"]["networks"]
    compute = osmod.connection(CLOUD).compute
    made = compute.post("/servers", json=body, microversion="2.36")
    assert made.status_code == 202, made.text
    delete_server(openstack_cloud, made.json()["server"]["id"])


@pytest.mark.parametrize("announced", [MAX_MICROVERSION, CURRENT_MICROVERSION])
def test_the_provider_works_with_the_old_and_a_current_microversion(openstack_cloud, cern_image, tmp_path, announced):
    """The fake announces 2.53 (upstream's fixture) or current Nova's maximum; the SDK negotiates the lower of it
    and its own maximum for servers, and the whole launch, wait, console and teardown work at either."""
    from openstack.compute.v2.server import Server as SdkServer

    fake = openstack_cloud
    fake.max_microversion = announced
    osmod.reset_connections()
    versions = requests.get(f"{fake.url}/compute", timeout=10).json()["versions"]
    assert [v["version"] for v in versions if v["id"] == "v2.1"] == [announced]
    expected = min(
        (tuple(int(x) for x in v.split(".")) for v in (announced, SdkServer._max_microversion)),
    )
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(fake, CERN_IMAGE), run, running=10)
    try:
        server = fake.servers[machine.server_id]
        assert server.microversion == expected, f"created at {server.microversion}, the SDK should use {expected}"
        assert machine.platform_address().startswith("192.0.2.")
        fake.set_console(machine.server_id, "Linux version 6.1\r\n")
        assert "Linux version" in machine.console_log()
    finally:
        machine.destroy()
    assert_nothing_left(fake, run)


def neutron_refusal(kind: str, message: str) -> dict:
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


def test_neutron_refuses_bad_and_duplicate_security_group_rules(openstack_cloud):
    """Neutron's own rule checks (tests/fakes/openstack/neutron_rules.py), with its status, type and message."""
    from openstack import exceptions

    network = osmod.connection(CLOUD).network
    group = network.create_security_group(name="cvmfx-rules", description="rule checks")
    try:
        ssh = {"security_group_id": group.id, "direction": "ingress", "protocol": "tcp"}
        ssh |= {"port_range_min": 22, "port_range_max": 22, "ethertype": "IPv4"}
        supported = (None, "any", "ah", "dccp", "egp", "esp", "gre", "hopopt", "icmp", "igmp", "ip", "ipip")
        supported += ("ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts", "ipv6-route")
        supported += ("ospf", "pgm", "rsvp", "sctp", "tcp", "udp", "udplite", "vrrp")
        cases = [
            (
                {"protocol": "bogus"},
                "SecurityGroupRuleInvalidProtocol",
                f"Security group rule protocol bogus not supported. Only protocol values {supported} and integer "
                "representations [0 to 255] are supported.",
            ),
            (
                {"port_range_min": 23, "port_range_max": 22},
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            ),
            (
                {"remote_ip_prefix": "2001:db8::/32"},
                "SecurityGroupRuleParameterConflict",
                "Conflicting value ethertype IPv4 for CIDR 2001:db8::/32",
            ),
            (
                {"remote_ip_prefix": "ssh-from-anywhere"},
                "InvalidCIDR",
                "Invalid CIDR ssh-from-anywhere given as IP prefix.",
            ),
        ]
        for change, kind, message in cases:
            answer = network.post("/security-group-rules", json={"security_group_rule": ssh | change})
            assert (answer.status_code, answer.json()) == (400, neutron_refusal(kind, message)), change
        first = network.create_security_group_rule(**ssh, remote_ip_prefix="203.0.113.7/32")
        assert first.remote_ip_prefix == "203.0.113.7/32"
        answer = network.post(
            "/security-group-rules", json={"security_group_rule": ssh | {"remote_ip_prefix": "203.0.113.7"}}
        )
        assert (answer.status_code, answer.json()) == (
            409,
            neutron_refusal("SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {first.id}."),
        ), "203.0.113.7 is 203.0.113.7/32: the same rule"
        with pytest.raises(exceptions.ConflictException, match="Security group rule already exists"):
            network.create_security_group_rule(**ssh, remote_ip_prefix="203.0.113.7/32")
        with pytest.raises(exceptions.BadRequestException, match="port_range_min must be <= port_range_max"):
            network.create_security_group_rule(**(ssh | {"port_range_min": 8080, "port_range_max": 80}))
    finally:
        network.delete_security_group(group)


@pytest.mark.parametrize("drive", [True, False], ids=["config-drive", "metadata-service"])
def test_config_drive_is_asked_for_only_when_configured(openstack_cloud, cern_image, tmp_path, drive):
    """``config_drive = true`` asks Nova for a config drive (Nova shows "True"); without it the request has no
    config_drive at all (Nova's schema refuses null), and the context reaches the server as user data either way."""
    fake = openstack_cloud
    sent: list[dict] = []
    fake.hooks.append(lambda call: sent.append(call.body) if (call.method, call.path) == SERVERS else None)
    run = run_for(tmp_path)
    machine, context = create_only(target_for(fake, CERN_IMAGE, config_drive=drive), run, running=10)
    try:
        [body] = sent
        assert body["server"].get("config_drive", "absent") == (True if drive else "absent")
        server = fake.servers[machine.server_id]
        assert server.body["config_drive"] == ("True" if drive else "")
        assert server.user_data == context.render()
    finally:
        machine.destroy()
    assert_nothing_left(fake, run)


SERVERS = ("POST", "/compute/v2.1/servers")


def test_an_iso_image_boots_as_nova_boots_one(openstack_cloud, cern_image, tmp_path):
    """Nova's libvirt mapping (tests/fakes/openstack/cloud.py disk_mapping): CERN's ISO image is the root device as
    a cdrom on IDE in a disk of the flavor's size, the flavor's ephemeral disk the first virtio disk (CernVM's
    scratch), the config drive the next cdrom; a qcow2 image is a virtio root disk instead."""
    fake = openstack_cloud
    run = run_for(tmp_path)
    iso, _ = create_only(target_for(fake, CERN_IMAGE, config_drive=True), run, running=10)
    qcow2 = fake.add_image("CernVM 4 qcow2", b"qcow2", disk_format="qcow2")
    disk = None
    try:
        server = fake.servers[iso.server_id]
        root = {"type": "cdrom", "bus": "ide", "dev": "hda", "boot_index": "1", "image": cern_image, "size_gb": 20}
        assert server.disks == {
            "root": root,
            "disk": root,
            "disk.local": {"type": "disk", "bus": "virtio", "dev": "vda", "size_gb": 20},
            "disk.config": {"type": "cdrom", "bus": "ide", "dev": "hdb"},
        }
        assert server.body["OS-EXT-SRV-ATTR:root_device_name"] == "/dev/hda"
        disk, _ = create_only(target_for(fake, qcow2["id"], flavor="m1.small"), run, running=10)
        server = fake.servers[disk.server_id]
        root = {"type": "disk", "bus": "virtio", "dev": "vda", "boot_index": "1", "image": qcow2["id"], "size_gb": 20}
        assert server.disks == {"root": root, "disk": root}, "m1.small has no ephemeral disk, no config drive asked"
    finally:
        if disk is not None:
            disk.destroy()
        iso.destroy()
        del fake.images[qcow2["id"]]
    assert_nothing_left(fake, run)


def test_the_flavor_disk_must_hold_the_image(openstack_cloud, cern_image, tmp_path):
    """Nova's checks of an image-backed server's flavor: a zero-disk flavor is refused (403, volume-backed servers
    only), and so is an image whose min_disk exceeds the flavor's disk (400); the provider finds the latter itself
    before it creates anything."""
    fake = openstack_cloud
    fake.flavor("zero.disk", vcpus=1, ram=2048, disk=0, ephemeral=20)
    big = fake.add_image("CernVM 4 min 40 GB", b"x", min_disk=40)
    try:
        zero = target_for(fake, CERN_IMAGE, flavor="zero.disk")
        refused = r"create server: HTTP 403: Only volume-backed servers are allowed for flavors with zero disk\."
        assert_launch_fails(tmp_path, fake, zero, ProviderError, refused, running=10)
        small = target_for(fake, big["id"], flavor="m1.small")
        refused = (
            r"targets.os.flavor: flavor 'm1.small' has a 20 GB root disk, image 'CernVM 4 min 40 GB' \(.*\) needs "
            rf"{40 * 1024**3} bytes \(size 1, min_disk 40 GB\): Nova would refuse the server"
        )
        before = len(fake.requests)
        assert_launch_fails(tmp_path, fake, small, ConfigError, refused, running=10)
        assert not [r for r in fake.requests[before:] if r[0] == "POST"], "nothing was created"
        body = server_body(fake, big["id"])
        answer = osmod.connection(CLOUD).compute.post("/servers", json=body, microversion="2.53")
        assert answer.json() == {
            "badRequest": {
                "code": 400,
                "message": "Flavor's disk is smaller than the minimum size specified in image metadata. "
                f"Flavor disk is {20 * 1024**3} bytes, minimum size is {40 * 1024**3} bytes.",
            }
        }
        tiny = fake.flavor("tiny.disk", vcpus=1, ram=2048, disk=1)
        raw = tmp_path / "cernvm.raw"
        with raw.open("wb") as f:  # sparse: one byte over 1 GiB
            f.truncate(1024**3 + 1)
        refused = rf"targets.os.flavor: flavor 'tiny.disk' has a 1 GB root disk, {raw} needs {1024**3 + 1} bytes"
        assert_launch_fails(tmp_path, fake, target_for(fake, str(raw), flavor=tiny["name"]), ConfigError, refused)
    finally:
        for fid in [f for f, v in fake.flavors.items() if v["name"] in ("zero.disk", "tiny.disk")]:
            del fake.flavors[fid]
        del fake.images[big["id"]]


# --- the ledger is written first ------------------------------------------------------------------------


CREATES = {
    ("POST", "/compute/v2.1/os-keypairs"): "keypair",
    ("POST", "/network/v2.0/security-groups"): "security-group",
    ("POST", "/compute/v2.1/servers"): "server",
    ("POST", "/image/v2/images"): "image",
}


def test_every_create_call_finds_its_ledger_entry_already_written(openstack_cloud, image_file, tmp_path, monkeypatch):
    """An interceptor on the SDK's own HTTP (requests under keystoneauth) looks at the ledger on disk."""
    run = run_for(tmp_path)
    seen: dict[str, list[tuple[str, bool]]] = {}
    original = requests.Session.send

    def send(session, request, **kwargs):
        path = re.sub(r"^https?://[^/]+", "", request.url).split("?")[0].rstrip("/")
        kind = CREATES.get((request.method, path))
        if kind is not None:
            on_disk = [json.loads(p.read_text()) for p in (run.directory / "ledger").glob("*.json")]
            seen[kind] = [(e["kind"], bool(e["data"].get("id"))) for e in on_disk]
            if kind == "server":
                raise RuntimeError("injected failure of the server create")
        return original(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", send)
    with pytest.raises(RuntimeError, match="injected"):
        create_only(target_for(openstack_cloud, str(image_file)), run, running=10)
    monkeypatch.undo()
    assert set(seen) == set(CREATES.values())
    for kind, entries in seen.items():
        assert (kind, False) in entries, f"no ledger entry for the {kind} before its create call"
    assert_nothing_left(openstack_cloud, run)


@pytest.mark.parametrize(
    "create", ["/compute/v2.1/os-keypairs", "/network/v2.0/security-groups", "/compute/v2.1/servers"]
)
def test_interrupted_between_create_and_ledger_update(openstack_cloud, cern_image, tmp_path, monkeypatch, create):
    """Ctrl-C right after the cloud created something, before its id reached the ledger: found, removed."""
    run = run_for(tmp_path)
    original = requests.Session.send

    def send(session, request, **kwargs):
        response = original(session, request, **kwargs)
        if request.method == "POST" and request.url.split("?")[0].rstrip("/").endswith(create):
            raise KeyboardInterrupt
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    with pytest.raises(KeyboardInterrupt):
        create_only(target_for(openstack_cloud, CERN_IMAGE), run, running=10)
    monkeypatch.undo()
    assert_nothing_left(openstack_cloud, run)


# --- image upload ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["sha512", "sha256"])
def test_local_image_is_uploaded_reused_by_checksum_and_deleted(openstack_cloud, image_file, tmp_path, algo):
    """Glance hashes with its ``hashing_algorithm`` (sha512 by default, sha256 on some clouds): the provider checks
    the upload and finds the image again by the digest in the image's own algorithm."""
    import hashlib

    fake = openstack_cloud
    fake.hash_algo = algo
    run = run_for(tmp_path)
    first, _ = create_only(target_for(openstack_cloud, str(image_file)), run, running=10)
    second = None
    try:
        uploaded = [i for i in fake.images.values() if not i.get("seeded")]
        assert len(uploaded) == 1
        image = uploaded[0]
        assert (image["disk_format"], image["container_format"], image["status"]) == ("iso", "bare", "active")
        assert image["os_hash_algo"] == algo
        assert image["os_hash_value"] == hashlib.new(algo, image_file.read_bytes()).hexdigest()
        assert fake.image_data[image["id"]] == image_file.read_bytes()
        assert f"cvmfx-name={first.name}" in image["tags"]
        assert fake.servers[first.server_id].body["image"]["id"] == image["id"]
        second, _ = create_only(target_for(openstack_cloud, str(image_file)), run, running=10)
        assert fake.servers[second.server_id].body["image"]["id"] == image["id"], "reused by checksum"
        assert "image" not in {r.kind for r in second.resources}
    finally:
        if second is not None:
            second.destroy()
        first.destroy()
    assert_nothing_left(fake, run)


@pytest.mark.attack_row("a planted upload", "openstack")
def test_an_image_of_the_same_content_not_made_by_us_is_not_reused(openstack_cloud, image_file, tmp_path):
    """Issue 26.4: Glance's digest proves the bytes, not the properties that choose what boots (kernel_id,
    os_command_line, hw_*); an image of the same content planted in the project without our mark (or shared by
    another project) is passed over and the file uploaded as our own image."""
    import hashlib

    fake = openstack_cloud
    conn = osmod.connection(CLOUD)
    planted = conn.image.create_image(
        "planted", disk_format="iso", container_format="bare", tags=["cvmfx-provider=openstack"], data=b"x"
    )
    planted = conn.image.get_image(planted.id)
    fake.images[planted.id]["os_hash_value"] = hashlib.new(fake.hash_algo, image_file.read_bytes()).hexdigest()
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(openstack_cloud, str(image_file)), run, running=10)
    try:
        used = fake.servers[machine.server_id].body["image"]["id"]
        assert used != planted.id and "image" in {r.kind for r in machine.resources}, "uploaded, not the planted one"
    finally:
        machine.destroy()
        conn.image.delete_image(planted.id)
    assert_nothing_left(fake, run)


def test_an_upload_glance_hashed_otherwise_is_refused_and_removed(openstack_cloud, image_file, tmp_path, monkeypatch):
    """Glance's digest of the upload differs from the file's (data corrupted on the way): the launch fails naming
    both digests and the algorithm, and the uploaded image is deleted."""
    fake = openstack_cloud
    fake.hash_algo = "sha256"
    store = fake._store_image

    def corrupted(iid: str, data: bytes) -> None:
        store(iid, data[:-1])

    monkeypatch.setattr(fake, "_store_image", corrupted)
    target = target_for(fake, str(image_file))
    match = rf"Glance computed sha256 [0-9a-f]{{64}} for {image_file.name}, expected [0-9a-f]{{64}}"
    assert_launch_fails(tmp_path, fake, target, ProviderError, match, running=10)


def test_glance_refuses_data_for_an_image_without_disk_format(openstack_cloud):
    """Glance accepts an image record without disk_format, but not its data (the image stays queued)."""
    image = osmod.connection(CLOUD).image
    made = image.post("/images", json={"name": "cvmfx-no-format", "container_format": "bare"})
    assert made.status_code == 201, made.text
    iid = made.json()["id"]
    try:
        answer = image.put(f"/images/{iid}/file", data=b"disk", headers={"Content-Type": "application/octet-stream"})
        assert answer.status_code == 400
        assert answer.json()["message"] == "Property disk_format must be set prior to saving data."
        assert image.get(f"/images/{iid}").json()["status"] == "queued"
    finally:
        image.delete(f"/images/{iid}")


# --- failures -------------------------------------------------------------------------------------------


FLOATING = {"address": "floating", "floating_ip_pool": "public"}


@pytest.mark.parametrize("address", [{}, FLOATING], ids=["fixed", "floating"])
def test_server_going_to_error_reports_the_fault(openstack_cloud, cern_image, tmp_path, address):
    """With a floating IP, the launch waits for the server's port: a build failing before it has one ends that wait."""
    openstack_cloud.fail_next_build = "No valid host was found. There are not enough hosts available."
    fault = r"is ERROR: No valid host was found"
    target = target_for(openstack_cloud, CERN_IMAGE, **address)
    assert_launch_fails(tmp_path, openstack_cloud, target, PermanentError, fault, running=10)


def test_quota_exceeded_on_create(openstack_cloud, cern_image, tmp_path):
    openstack_cloud.quota_instances = 0
    quota = r"create server: HTTP 403: Quota exceeded for instances"
    target = target_for(openstack_cloud, CERN_IMAGE)
    assert_launch_fails(tmp_path, openstack_cloud, target, ProviderError, quota, running=10)


def test_image_not_found_or_ambiguous_lists_what_exists(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    run = run_for(tmp_path)
    with pytest.raises(ConfigError) as error:
        create_only(target_for(openstack_cloud, "CernVM 4 - Bootloader v2020.04-1"), run, running=10)
    assert "targets.os.image: no image named 'CernVM 4 - Bootloader v2020.04-1' (exact match" in str(error.value)
    assert repr(CERN_IMAGE) in str(error.value)
    twin = "CernVM 3 [twin]"
    a, b = fake.add_image(twin, b"a"), fake.add_image(twin, b"b")
    try:
        with pytest.raises(ConfigError, match=rf"2 images are named 'CernVM 3 \[twin\]': .*{a['id']}.*use the id"):
            create_only(target_for(openstack_cloud, twin), run, running=10)
        machine, _ = create_only(target_for(openstack_cloud, b["id"]), run, running=10)
        assert fake.servers[machine.server_id].body["image"]["id"] == b["id"]
        machine.destroy()
    finally:
        del fake.images[a["id"]], fake.images[b["id"]]
    assert_nothing_left(fake, run)


def test_keypair_name_clash_is_an_error_and_leaves_the_other_key(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    run = run_for(tmp_path)
    name = run.name("os")
    key = keypair_name(name)
    conn = osmod.connection(CLOUD)
    conn.compute.create_keypair(name=key, public_key=run.public_key)
    try:
        with pytest.raises(ProviderError, match=rf"create key pair: HTTP 409: Key pair '{key}' already exists"):
            create_only(target_for(openstack_cloud, CERN_IMAGE), run, name=name, running=10)
        assert key in fake.keypairs, "the clashing key pair is not ours: left alone"
        assert run.ledger.entries() == []
    finally:
        conn.compute.delete_keypair(key)
    assert_nothing_left(fake, run)


def test_console_output_empty_for_a_while(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    fake.console_after = 0.5
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(openstack_cloud, CERN_IMAGE), run, running=10)
    try:
        keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnn1W3ivGTtDKBYHd8J3C6i3hGmBJxcCwmz8HUE0GDp root@cvm"
        fake.set_console(
            machine.server_id,
            f"Linux version 6.1\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n{keys}\r\n-----END SSH HOST KEY KEYS-----\r\n",
        )
        assert machine.console_log() == "" and machine.host_keys() is None
        time.sleep(0.6)
        assert "Linux version 6.1" in machine.console_log()
        assert machine.host_keys() == [keys]
    finally:
        machine.destroy()
    assert machine.console_log().startswith("Linux version"), "the console is kept after the server is gone"
    assert_nothing_left(fake, run)


def test_security_group_delete_409_then_success(openstack_cloud, cern_image, tmp_path):
    openstack_cloud.port_release_seconds = 1.5
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(openstack_cloud, CERN_IMAGE), run, running=10)
    conflicts = []
    original = requests.Session.send

    def send(session, request, **kwargs):
        response = original(session, request, **kwargs)
        if request.method == "DELETE" and "/security-groups/" in request.url and response.status_code == 409:
            conflicts.append(response.json()["NeutronError"]["type"])
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests.Session, "send", send)
        machine.destroy()
    assert conflicts and set(conflicts) == {"SecurityGroupInUse"}
    assert_nothing_left(openstack_cloud, run)


def test_bad_options_are_one_clear_error(openstack_cloud):
    cases = [
        ({"ssh_cidr": "0.0.0.0/0"}, "not the whole internet"),
        ({"address": "floating"}, "needs floating_ip_pool"),
        ({"properties": {"cvmfx-run": "x"}}, "set by cernvm-fixtures itself"),
        ({"password": "hunter2"}, "password"),
        ({"jump_host": "a b"}, "[user@]host[:port]"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError) as error:
            target_for(openstack_cloud, CERN_IMAGE, **options)
        assert message in str(error.value) and "targets.os" in str(error.value), str(error.value)
    target = target_for(openstack_cloud, CERN_IMAGE, flavor="m9.huge")
    with pytest.raises(ConfigError, match=r"targets.os.flavor: 0 flavors match 'm9.huge'; flavors: cvm.medium"):
        OpenStackProvider(target, Run()).find_flavor()


# --- a floating IP --------------------------------------------------------------------------------------


def test_floating_address_is_allocated_tagged_and_released_first(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    run = run_for(tmp_path)
    order: list[str] = []
    original = requests.Session.send

    def send(session, request, **kwargs):
        if request.method == "DELETE":
            order.append(re.sub(r"^https?://[^/]+/(\w+)/[^/]+/([\w-]+)/.*$", r"\2", request.url))
        return original(session, request, **kwargs)

    machine, _ = create_only(
        target_for(openstack_cloud, CERN_IMAGE, address="floating", floating_ip_pool="public"), run, running=10
    )
    try:
        held = fake.holds()
        assert len(held["floating-ip"]) == 1
        ip = fake.floating_ips[held["floating-ip"][0]]
        assert machine.platform_address() == ip["floating_ip_address"] and ip["port_id"] == held["port"][0]
        router = fake.routers[ip["router_id"]]
        assert router["external_gateway_info"]["network_id"] == ip["floating_network_id"], "through the router"
        assert f"cvmfx-run={run.id}" in ip["tags"]
        assert [r.kind for r in run.ledger.entries()][-1] == "floating-ip"
    finally:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(requests.Session, "send", send)
            machine.destroy()
    assert order[:2] == ["floatingips", "servers"] and order.index("security-groups") > 1
    assert order[-1] == "os-keypairs", order
    assert_nothing_left(fake, run)


def test_a_floating_ip_needs_a_router_from_the_servers_subnet(openstack_cloud, cern_image, tmp_path):
    """Without a router joining the private subnet to the pool's network, Neutron refuses the association (404
    ExternalGatewayForFloatingIPNotFound): the launch fails with its message and leaves nothing."""
    fake = openstack_cloud
    routers = dict(fake.routers)
    fake.routers.clear()
    try:
        listed = osmod.connection(CLOUD).network.get("/routers").json()["routers"]
        assert listed == []
        target = target_for(fake, CERN_IMAGE, **FLOATING)
        match = (
            r"create floating ip: not found: HTTP 404: External network [\w-]+ is not reachable from subnet [\w-]+\."
        )
        assert_launch_fails(tmp_path, fake, target, ProviderError, match, running=10)
    finally:
        fake.routers.update(routers)
    [router] = osmod.connection(CLOUD).network.routers()
    assert router.name == "router1" and router.external_gateway_info["network_id"] in fake.networks


def test_the_floating_ip_is_attached_in_the_launch_and_the_wait_creates_nothing(openstack_cloud, cern_image, tmp_path):
    fake = openstack_cloud
    fake.build_seconds = 2.0  # the port comes after network_seconds, long before the server is ACTIVE
    run = run_for(tmp_path)
    provider = OpenStackProvider(target_for(fake, CERN_IMAGE, address="floating", floating_ip_pool="public"), run)
    machine = provider.machine(run.name("os"))
    try:
        provider.launch(machine, Context(hostname=machine.name, ssh_keys=(run.public_key,)))
        held = fake.holds()
        ip = fake.floating_ips[held["floating-ip"][0]]
        assert ip["port_id"] == held["port"][0] and fake.servers[machine.server_id].body["status"] == "BUILD"
        asked = len(fake.requests)
        machine.wait_running(time.monotonic() + 10)
        changes = [r for r in fake.requests[asked:] if r[0] != "GET"]
        assert changes == [], "waiting for the server to run changes nothing"
        assert machine.platform_address() == ip["floating_ip_address"]
    finally:
        fake.build_seconds = 0.3
        machine.destroy()
    assert_nothing_left(fake, run)


def test_keep_marks_every_tagged_resource_so_a_sweep_from_the_platform_leaves_them(
    openstack_cloud, image_file, tmp_path
):
    run = run_for(tmp_path)
    target = target_for(openstack_cloud, str(image_file), address="floating", floating_ip_pool="public")
    machine, _ = create_only(target, run)
    try:
        machine.keep()
        found = [r for r in OpenStackProvider.leftovers(target, set()) if r.name == machine.name]
        assert sorted(r.kind for r in found) == sorted(osmod.CREATION_ORDER), found
        assert all(r.kept and r.expires > time.time() + 23 * 3600 for r in found), found
    finally:
        machine.destroy()
    assert_nothing_left(openstack_cloud, run)


@pytest.mark.attack_row("forged tags on a foreign resource", "openstack")
@pytest.mark.attack_row("a foreign resource with our name pattern", "openstack")
def test_sweep_leaves_foreign_resources_that_carry_our_tags(openstack_cloud, image_file, tmp_path):
    """Issue 26.2: our security group's tags copied onto a foreign group, or invented without our mark, get nothing
    listed for sweep; the machine's real resources still are."""
    run = run_for(tmp_path)
    target = target_for(openstack_cloud, str(image_file))
    machine, _ = create_only(target, run)
    conn = osmod.connection(CLOUD)
    ours = next(g for g in conn.network.security_groups(name=machine.name))
    invented = [t for t in ours.tags if not t.startswith("cvmfx-mark=")]
    made, made_keys = [], []
    try:
        for name, tags in (("their-web", ours.tags), (machine.name[:-4] + "0000", invented)):
            group = conn.network.create_security_group(name=name)
            made.append(group)
            conn.network.set_tags(group, list(tags))
        found = [r for r in OpenStackProvider.leftovers(target, set()) if r.kind == "security-group"]
        assert [r.data["id"] for r in found if r.run == run.id] == [ours.id]
        assert not [r for r in found if r.data["id"] in {g.id for g in made}]
        lookalike = f"{machine.name[:-4]}0000-k{'0' * 16}"  # our name pattern, not our mark: a key pair has no tags
        conn.compute.create_keypair(name=lookalike, public_key=run.public_key)
        made_keys.append(lookalike)
        keys = [r.data["key_name"] for r in OpenStackProvider.leftovers(target, set()) if r.kind == "keypair"]
        assert keypair_name(machine.name) in keys and lookalike not in keys
    finally:
        for group in made:
            conn.network.delete_security_group(group)
        for name in made_keys:
            conn.compute.delete_keypair(name)
        machine.destroy()
    assert_nothing_left(openstack_cloud, run)


# --- sweep after SIGKILL --------------------------------------------------------------------------------


@pytest.mark.parametrize("ledger", ["kept", "lost"])
def test_sweep_removes_what_a_killed_run_left(openstack_cloud, image_file, tmp_path, ledger):
    fake = openstack_cloud
    state = tmp_path / "state"
    cfg = config_file(tmp_path / "cernvm.toml", openstack_cloud, str(image_file))
    killed_launch(cfg, subprocess_env(state))
    held = fake.holds()
    assert held.keys() >= {"server", "security-group", "keypair", "image"}
    assert len(ledger_entries(state)) == 4
    sweep = sweep_killed(cfg, state, lose_ledger=ledger == "lost")
    assert fake.holds() == {}, sweep.stdout + sweep.stderr
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    order = re.findall(r"destroyed openstack (\S+)", sweep.stdout)
    assert order.index("server") < order.index("security-group") < order.index("image"), order
    assert order.index("server") < order.index("keypair"), order
    assert fake.violations == []


# --- with SSH: a KVM stand-in reached through the endpoint hook -----------------------------------------


def test_lifecycle_through_ssh_and_the_console_keys(openstack_cloud, cern_image, standin, tmp_path):
    """Readiness end to end; the fake's console carries the stand-in's host-key block, so the keys are checked."""
    fake = openstack_cloud
    fake.build_seconds = 0.3

    def endpoint(machine, host, port):
        assert host.startswith("192.0.2."), "the platform address is the fake's, and is never connected to"
        fake.set_console(machine.server_id, standin.console_log())
        return "127.0.0.1", standin.machine.ssh_port

    run = run_for(tmp_path, standin, endpoint=endpoint)
    instance = launch(target_for(openstack_cloud, CERN_IMAGE), run)
    try:
        assert instance.run("hostname").stdout.strip() == standin.name
        key = [" ".join(k.split()[:2]) for k in instance.machine.host_keys() or []]
        assert key == standin.machine.host_keys(), "the key block the stand-in printed, without its comment"
        assert "127.0.0.1" in instance.login_command and "UserKnownHostsFile" in instance.login_command
    finally:
        instance.destroy()
    assert_nothing_left(fake, run)


def test_forged_host_key_on_the_console_is_refused(openstack_cloud, cern_image, standin, tmp_path):
    from ..clouds import assert_forged_host_key_refused

    deadlines = {"running": 10, "reachable": 5, "login": 5, "ready": 5}
    target = target_for(openstack_cloud, CERN_IMAGE, deadlines=deadlines)
    assert_forged_host_key_refused(tmp_path, openstack_cloud, standin, target)


# --- the scenario suite end to end: the fake + one stand-in per server, booted from the fake's user data


def test_scenario_suite_end_to_end_against_the_fake_with_standins(openstack_cloud, image_file, tmp_path):
    fake = openstack_cloud
    deadlines = {"running": 30, "reachable": 300, "login": 60, "ready": 120}
    suite = suite_through_standins(tmp_path, fake, str(image_file), deadlines=deadlines)
    assert "fake-openstack-password" not in suite.output
    assert fake.holds() == {}, "the fake still holds resources of the run"
    assert fake.violations == []


def test_image_lookup_follows_glance_pages(openstack_cloud, tmp_path):
    """More images than one Glance page: the SDK follows ``next`` and the exact name on the last page is found."""
    fake = openstack_cloud
    seeded = [
        fake.add_image(f"CernVM 4 - Bootloader v2019.{i:02d}-1 [2019-{i:02d}-01]", b"x")["id"] for i in range(1, 31)
    ]
    pages = []
    original = requests.Session.send

    def send(session, request, **kwargs):
        if request.method == "GET" and "/image/v2/images" in request.url:
            pages.append(request.url)
        return original(session, request, **kwargs)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(requests.Session, "send", send)
            found = OpenStackProvider(target_for(openstack_cloud, CERN_IMAGE), run_for(tmp_path)).find_image(
                "CernVM 4 - Bootloader v2019.30-1 [2019-30-01]"
            )
        assert found.id == seeded[-1]
        assert len(pages) >= 2 and "marker=" in pages[-1], pages
    finally:
        for image_id in seeded:
            del fake.images[image_id]
