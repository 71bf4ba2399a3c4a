"""The gce provider's pure parts: the ledger entry as GCE labels, options, image links; the discovery checks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import gce
from cernvm_fixtures.providers.kit import decode_fields, encode_fields

from ..fakes.gce import discovery

ENTRY = Resource(
    provider="gce",
    kind="firewall",
    name="cvmfx-0a1b2c3d-gce-9f9f",
    run="0a1b2c3d",
    target="gce",
    owner=Owner("Build.Host-7", 4242, "98765", "0f3c/pid:[4026531836]"),
    created=1796160000.123456,
)


@given(st.text(max_size=80))
def test_an_entry_keeps_gce_label_rules_whatever_its_names(host):
    labels = encode_fields(replace(ENTRY, owner=Owner(host, 1, None)))
    assert all(gce.LABEL_KEY.match(k) and gce.LABEL_VALUE.match(v) for k, v in labels.items()), labels
    assert len(labels) <= gce.OUR_LABELS
    back = decode_fields(labels)
    assert back is not None and back.owner.host == host


def test_a_ledger_entry_survives_the_trip_through_labels_and_a_firewall_description():
    labels = {"team": "cernvm", **encode_fields(ENTRY)}
    assert len(labels) <= gce.OUR_LABELS + 1 and labels["team"] == "cernvm"
    back = decode_fields(labels)
    assert back is not None
    assert (back.provider, back.kind, back.name, back.run, back.target, back.owner) == (
        "gce",
        "firewall",
        ENTRY.name,
        "0a1b2c3d",
        "gce",
        ENTRY.owner,
    )
    assert back.created == pytest.approx(ENTRY.created, abs=1e-6)
    assert gce.ours(labels, ENTRY)
    assert gce.ours(gce.labels_in_description(gce.description_for(ENTRY)), ENTRY)
    assert gce.labels_in_description("a rule someone wrote") == {}
    other = replace(ENTRY, run="ffffffff")
    assert not gce.ours(labels, other), "another run's resource of the same name is not ours"
    assert decode_fields({"team": "cernvm"}) is None


@pytest.mark.parametrize(
    ("image", "link"),
    [
        ("cernvm4-micro", "projects/p/global/images/cernvm4-micro"),
        ("family/cernvm4", "projects/p/global/images/family/cernvm4"),
        ("projects/cernvm/global/images/x", "projects/cernvm/global/images/x"),
    ],
)
def test_image_links(image, link):
    assert gce.image_link(image, "p") == link


def raw(**options):
    return {
        "provider": "gce",
        "image": "x",
        "profile": "appliance",
        "zone": "europe-west1-b",
        "ssh_cidr": "203.0.113.7/32",
        **options,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ssh_cidr": "0.0.0.0/0"}, "targets.gce.ssh_cidr.*not the whole internet"),
        ({"ssh_cidr": None}, "targets.gce.ssh_cidr"),
        ({"zone": "mars"}, "targets.gce.zone.*a GCE zone such as"),
        ({"labels": {"x" * 64: "v"}}, "targets.gce.labels.*is not a lowercase letter"),
        ({"labels": {"cvmfx-kind": "v"}}, "targets.gce.labels.*cernvm-fixtures sets itself"),
        ({"address": "public"}, "targets.gce.address"),
        ({"endpoint": "127.0.0.1:1"}, "targets.gce.endpoint.*http"),
        ({"endpoint": "http://compute.example.org"}, "targets.gce.endpoint.*plain http would send the bearer token"),
        ({"storage_endpoint": "http://10.0.0.7:4443"}, "targets.gce.storage_endpoint.*plain http.*use https://"),
        ({"bogus": 1}, "targets.gce.bogus"),
    ],
)
def test_bad_options_name_key_and_what_is_valid(options, message):
    target = raw(**options)
    if options.get("ssh_cidr", "") is None:
        del target["ssh_cidr"]
    with pytest.raises(ConfigError, match=message):
        config.parse({"targets": {"gce": target}}, "test")


@pytest.mark.parametrize(
    "endpoint", ["https://compute.googleapis.com", "http://127.0.0.1:8080", "http://[::1]:1", "http://localhost:1"]
)
def test_https_or_a_loopback_emulator_over_http(endpoint):
    target = config.parse({"targets": {"gce": raw(endpoint=endpoint, storage_endpoint=endpoint)}}, "t").targets["gce"]
    assert target.options.endpoint == target.options.storage_endpoint == endpoint


def test_discovery_checks_can_fail():
    problems = discovery.check_body(
        {
            "name": "Bad_Name",
            "labels": {"a": 1},
            "disks": [{"boot": "yes"}],
            "metadata": {"items": [{"key": "k"}]},
            "sourceImage": "x",
        },
        "Instance",
        "compute.instances.insert",
        "Instance",
    )
    assert any("'Bad_Name' does not match" in p for p in problems)
    assert any("labels['a']: expected a string" in p for p in problems)
    assert any("disks[0].boot: expected a boolean" in p for p in problems)
    assert any("required field 'value' missing for compute.instances.insert" in p for p in problems)
    assert any("unknown field 'sourceImage'" in p for p in problems)
    assert len(problems) == 5, problems
    assert discovery.check_body({"name": "ok"}, "Instance", "compute.instances.insert", "Instance") == []
    method, path = discovery.route("GET", "/compute/v1/projects/p/zones/z-1/instances/i/serialPort")
    assert method.id == "compute.instances.getSerialPortOutput"
    assert discovery.check_parameters(method, path, {"start": ["x"], "port": ["9"], "nope": ["1"]}) == [
        "compute.instances.getSerialPortOutput query start: expected an int64 as a decimal string, got 'x'",
        "compute.instances.getSerialPortOutput query port: 9 is outside 1..4",
        "compute.instances.getSerialPortOutput: unknown query parameter 'nope'",
    ]
