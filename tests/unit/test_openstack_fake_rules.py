"""The OpenStack fake's copies of the services' own rules, without a server: Nova's request schemas per
microversion (tests/fakes/openstack/nova_schemas.py), Neutron's security-group rule checks (neutron_rules.py)."""

from __future__ import annotations

import pytest

from ..fakes.openstack import neutron_rules, nova_schemas, tempest_schemas

NET = "6f1b9bd2-6d4c-4a54-9f6b-6a1d3f0f4f11"
IMAGE = "0b5e1c3a-8d7f-4c2e-9a61-3f2d4e5b6c7d"


def body(**server) -> dict:
    return {"server": {"name": "cvmfx-x", "flavorRef": "1", "imageRef": IMAGE, "networks": [{"uuid": NET}], **server}}


@pytest.mark.parametrize("microversion", [(2, 37), (2, 53), (2, 96), (2, 100)])
def test_a_server_the_provider_would_create_passes(microversion):
    tags = ["cvmfx-provider=openstack"] if microversion >= (2, 52) else []
    extra = {"tags": tags} if tags else {}
    good = body(metadata={"cern-services": "false", "cvmfx-run": "0123abcd"}, config_drive=True, **extra)
    assert nova_schemas.problem(nova_schemas.server_create(microversion), good) is None


@pytest.mark.parametrize(
    "microversion, server, message",
    [
        ((2, 53), {"bogus": 1}, "Additional properties are not allowed ('bogus' was unexpected)"),
        ((2, 51), {"tags": ["a"]}, "Additional properties are not allowed ('tags' was unexpected)"),
        ((2, 57), {"personality": []}, "Additional properties are not allowed ('personality' was unexpected)"),
        ((2, 53), {"networks": None}, "None is not valid under any of the given schemas"),
        ((2, 53), {"metadata": {"a/b": "x"}}, "'a/b' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{1,255}$'"),
        ((2, 53), {"metadata": {"k": "v" * 256}}, "is too long"),
        ((2, 53), {"config_drive": None}, "None is not of type 'boolean', 'string'"),
        ((2, 53), {"tags": ["a/b"]}, "'a/b' does not match '^[^,/]*$'"),
        ((2, 53), {"name": " x"}, "The name must be: printable characters. Can not start or end with whitespace."),
        ((2, 53), {"networks": [{"uuid": "private"}]}, "is not valid under any of the given schemas"),
    ],
)
def test_nova_refuses_with_its_own_message(microversion, server, message):
    found = nova_schemas.problem(nova_schemas.server_create(microversion), body(**server))
    assert found is not None and message in found, found


def test_networks_are_required_from_2_37_on():
    no_networks = body()
    del no_networks["server"]["networks"]
    assert nova_schemas.problem(nova_schemas.server_create((2, 36)), no_networks) is None
    found = nova_schemas.problem(nova_schemas.server_create((2, 37)), no_networks)
    assert found == (
        f"Invalid input for field/attribute server. Value: {no_networks['server']}. 'networks' is a required property"
    )


def test_schema_per_microversion_follows_novas_table():
    assert nova_schemas.server_create((2, 1)) is nova_schemas.create
    assert nova_schemas.server_create((2, 53)) is nova_schemas.create_v252
    assert nova_schemas.server_create((2, 100)) is nova_schemas.create_v294
    assert nova_schemas.server_create((2, 36)) is nova_schemas.create_v233


SSH = {"security_group_id": "g", "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}


def neutron(req: dict) -> dict:
    rule = neutron_rules.converted(req)
    neutron_rules.validate(rule)
    return rule


@pytest.mark.parametrize(
    "change, kind, message",
    [
        ({"protocol": "bogus"}, "SecurityGroupRuleInvalidProtocol", "protocol bogus not supported"),
        ({"protocol": "256"}, "SecurityGroupRuleInvalidProtocol", "protocol 256 not supported"),
        ({"port_range_min": 23}, "SecurityGroupInvalidPortRange", "port_range_min must be <= port_range_max"),
        ({"port_range_max": 70000}, "SecurityGroupInvalidPortValue", "Invalid value for port 70000"),
        ({"remote_ip_prefix": "::/0"}, "SecurityGroupRuleParameterConflict", "ethertype IPv4 for CIDR ::/0"),
        ({"remote_ip_prefix": "10.0.0.0/33"}, "InvalidCIDR", "Invalid CIDR 10.0.0.0/33 given as IP prefix."),
        ({"ethertype": "IPv5"}, "SecurityGroupRuleInvalidEtherType", "Allowed values are ['IPv4', 'IPv6']"),
        ({"direction": "inward"}, "HTTPBadRequest", "'inward' is not in ['ingress', 'egress']"),
        ({"protocol": "gre"}, "SecurityGroupInvalidProtocolForPort", "Ports are only supported for DCCP, SCTP"),
        ({"protocol": None}, "SecurityGroupProtocolRequiredWithPorts", "Must also specify protocol"),
        ({"protocol": "icmp", "port_range_min": 256}, "SecurityGroupInvalidIcmpValue", "It must be 0 to 255."),
        ({"protocol": "ipv6-icmp", "port_range_min": None, "port_range_max": None}, "SecurityGroupEthertype", "IPv4"),
        ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "g"}, "SecurityGroupMultipleRemote", "Only one of"),
    ],
)
def test_neutron_refuses_a_bad_rule_with_its_own_exception(change, kind, message):
    with pytest.raises(neutron_rules.Refused) as refused:
        neutron(SSH | change)
    assert (refused.value.status, refused.value.kind[: len(kind)]) == (400, kind)
    assert message in refused.value.message, refused.value.message


def test_neutron_conversions_and_duplicates():
    rule = neutron(SSH | {"protocol": "TCP", "ethertype": "ipv4", "remote_ip_prefix": "203.0.113.7"})
    assert (rule["protocol"], rule["ethertype"], rule["remote_ip_prefix"]) == ("tcp", "IPv4", "203.0.113.7/32")
    assert neutron(SSH | {"port_range_min": 1, "port_range_max": 65535})["port_range_min"] is None, "the whole range"
    assert (
        neutron({"security_group_id": "g", "direction": "egress", "ethertype": "IPv6", "protocol": "icmp"})["protocol"]
        == "ipv6-icmp"
    )
    existing = [{**neutron(SSH | {"protocol": "6"}), "id": "r1"}]
    with pytest.raises(neutron_rules.Refused, match="Rule id is r1") as refused:
        neutron_rules.check_duplicate(neutron(SSH), existing)
    assert (refused.value.status, refused.value.kind) == (409, "SecurityGroupRuleExists")
    neutron_rules.check_duplicate(neutron(SSH | {"remote_ip_prefix": "10.0.0.0/8"}), existing)
    any_address = [{**neutron(SSH | {"remote_ip_prefix": "0.0.0.0/0"}), "id": "r2"}]
    with pytest.raises(neutron_rules.Refused, match="r2"):
        neutron_rules.check_duplicate(neutron(SSH), any_address)


# -- tempest's response schemas (tempest_schemas.py)


def test_tempest_schema_per_microversion_follows_tempests_client_tables():
    from tempest.lib.api_schema.response.compute.v2_1 import servers as v21
    from tempest.lib.api_schema.response.compute.v2_2 import keypairs as k22
    from tempest.lib.api_schema.response.compute.v2_51 import servers as v251
    from tempest.lib.api_schema.response.compute.v2_98 import servers as v298
    from tempest.lib.api_schema.response.compute.v2_100 import servers as v2100

    show = tempest_schemas.checked("GET", "/v2.1/servers/0b5e")
    assert show is not None and show.pick((2, 1)) is v21.get_server
    assert show.pick((2, 53)) is v251.get_server and show.pick((2, 104)) is v2100.get_server
    assert tempest_schemas.checked("GET", "/v2.1/servers/detail").name == "list_servers_detail"
    assert tempest_schemas.checked("POST", "/v2.1/os-keypairs").pick((2, 2)) is k22.create_keypair
    # tempest's 2.99/2.100 modules lack the tag schemas: the newest module that has them stands in
    assert tempest_schemas.checked("GET", "/v2.1/servers/0b5e/tags").pick((2, 100)) is v298.list_tags
    assert tempest_schemas.checked("GET", "/v2.1/os-hypervisors") is None


@pytest.mark.parametrize(
    "call, microversion, status, body, headers, message",
    [
        (("POST", "/v2.1/os-keypairs"), (2, 2), 200, None, {}, "Unexpected http success status code 200"),
        (("PUT", "/v2.1/servers/s/tags/t"), (2, 53), 201, None, {}, "'location' is a required property"),
        (("GET", "/v2.1/flavors/1/os-extra_specs"), (2, 53), 200, {"extra_specs": {"k": 1}}, {}, "is not of type"),
        (("DELETE", "/v2.1/servers/s"), (2, 53), 204, {"x": 1}, {}, "HTTP response body should not exist"),
    ],
)
def test_tempest_refuses_a_drifted_response_with_its_own_message(call, microversion, status, body, headers, message):
    found = tempest_schemas.problem(*call, microversion, status, body, headers)
    assert found is not None and message in found and found.startswith("tempest's schema for "), found


def test_tempest_checks_successes_of_calls_it_has_schemas_for_only():
    assert tempest_schemas.problem("GET", "/v2.1/servers/s", (2, 53), 404, {"itemNotFound": {}}, {}) is None
    assert tempest_schemas.problem("GET", "/v2.1/os-hypervisors", (2, 53), 200, {"anything": 1}, {}) is None
    location = {"Location": "http://127.0.0.1/compute/v2.1/servers/s/tags/t"}
    assert tempest_schemas.problem("PUT", "/v2.1/servers/s/tags/t", (2, 53), 204, None, location) is None


@pytest.mark.parametrize("microversion", [(2, 1), (2, 9), (2, 37), (2, 53), (2, 61), (2, 96), (2, 100), (2, 104)])
def test_the_fakes_nova_views_pass_tempests_schemas(microversion):
    from ..fakes.openstack.cloud import FakeOpenStack

    fake = FakeOpenStack(build_seconds=0).start()
    try:
        image = fake.add_image("cvm", b"x")["id"]
        fake.default_group()
        network = next(n["id"] for n in fake.networks.values() if not n["router:external"])
        req = body(imageRef=image, metadata={"a": "b"}, networks=[{"uuid": network}])
        server = fake.create_server(req, (2, 53))
        fake._settle()
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        public = ed25519.Ed25519PrivateKey.generate().public_key()
        key = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        keypair = fake.create_keypair({"name": "k", "public_key": key})
        listed = fake.keypair_view(keypair, microversion, "index")
        views = [
            ("GET", f"/v2.1/servers/{server.id}", {"server": fake.server_view(server, microversion)}),
            ("GET", "/v2.1/servers/detail", {"servers": [fake.server_view(server, microversion, detail=True)]}),
            ("GET", "/v2.1/flavors/1", {"flavor": fake.flavor_view(fake.flavors["1"], microversion)}),
            ("GET", "/v2.1/flavors", {"flavors": [fake.flavor_view(fake.flavors["1"], microversion, detail=False)]}),
            ("GET", "/v2.1/limits", {"limits": {"rate": [], "absolute": fake.absolute_limits(microversion)}}),
            ("GET", "/v2.1/os-keypairs/k", {"keypair": fake.keypair_view(keypair, microversion)}),
            ("GET", "/v2.1/os-keypairs", {"keypairs": [{"keypair": listed}]}),
        ]
        for method, path, view in views:
            assert tempest_schemas.problem(method, path, microversion, 200, view, {}) is None, path
    finally:
        fake.stop()
