"""The gce provider's parts without an API: the ledger entry as GCE labels, options, image resolution, the SDK's
errors, operation waits (cancel checkpoints); the discovery checks of the local Compute API."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cernvm_fixtures import config, images, interrupts
from cernvm_fixtures.errors import ConfigError, ProviderError
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import gce
from cernvm_fixtures.providers.gce import api
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
    assert gce.TARBALL.platform is not None and gce.TARBALL.platform(image)


def test_the_image_is_a_tarball_to_upload_or_an_image_gce_has(tmp_path):
    tarball = tmp_path / "ucernvm-prod.1.18-14.cernvm.x86_64.tar.gz"
    tarball.write_bytes(b"\x1f\x8b")

    def target(image):
        return config.parse({"targets": {"gce": raw(image=image)}}, "test").targets["gce"]

    assert images.resolve(target(str(tarball)), gce.TARBALL).file == tarball
    assert images.resolve(target("family/cernvm4"), gce.TARBALL).platform == "family/cernvm4"
    assert images.resolve(target("projects/c/global/images/x"), gce.TARBALL).platform == "projects/c/global/images/x"
    for image in ("projects/c/zones/z/disks/d", "family/cernvm4/extra"):
        refused = rf"^test: targets.gce.image: '{image}': the gce provider boots an image name, family/FAMILY"
        with pytest.raises(ConfigError, match=refused):
            images.resolve(target(image), gce.TARBALL)


# --- the SDK seam: errors, inserts, waits ---------------------------------------------------------


def raises(error):
    def call(**params):
        raise error

    return call


def test_api_errors_read_code_reason_message_and_in_use_is_busy():
    from google.api_core import exceptions

    in_use = exceptions.Conflict(
        "The image 'x' is being used by 'disk-1'", errors=[{"reason": "resourceInUseByAnotherResource"}]
    )
    clash = exceptions.Conflict("The resource 'x' already exists", errors=[{"reason": "alreadyExists"}])
    assert gce.ERRORS.busy(in_use) and not gce.ERRORS.busy(clash)
    assert gce.ERRORS.busy(exceptions.BadRequest("The network 'default' is already in use by a firewall"))
    assert not gce.ERRORS.busy(exceptions.BadRequest("Invalid value for field 'resource.name'"))
    assert gce.ERRORS.not_found(exceptions.NotFound("gone")) and not gce.ERRORS.not_found(in_use)
    with pytest.raises(ProviderError, match=r"^delete image x: 409 resourceInUseByAnotherResource: The image 'x' is"):
        gce.ERRORS.call("delete image x", raises(in_use))
    with pytest.raises(ProviderError, match=r"^get image x: 403 Forbidden: no access$"):
        gce.ERRORS.call("get image x", raises(exceptions.Forbidden("no access")))
    assert gce.ERRORS.call("get image x", raises(exceptions.NotFound("gone")), missing_ok=True) is None
    assert api.insert("insert firewall x", raises(clash)) is None, "a name taken by someone else's resource"
    with pytest.raises(ProviderError, match=r"^insert firewall x: 403 Forbidden"):
        api.insert("insert firewall x", raises(exceptions.Forbidden("no access")))


def operations(monkeypatch, answer):
    """Replace the Compute API's operations clients by one that answers ``answer()`` to every wait; the queries."""
    queries = []

    class Operations:
        def wait(self, **where):
            queries.append(where)
            return answer()

    monkeypatch.setattr(api, "client", lambda kind, endpoint=None: Operations())
    return queries


def operation(status, errors=()):
    error = SimpleNamespace(errors=[SimpleNamespace(code=c, message=m) for c, m in errors]) if errors else None
    return SimpleNamespace(name="operation-1", status=SimpleNamespace(name=status), error=error)


def test_a_gce_wait_reaches_a_cancel_checkpoint(monkeypatch):
    """Waiting for an operation (insert, delete, label) is the kit's wait: a boot-ahead called off, or Ctrl-C, is
    seen at the next poll, not once the operation's deadline passed."""
    called_off = threading.Event()

    def running():
        if len(queries) == 3:
            called_off.set()
        return operation("RUNNING")

    queries = operations(monkeypatch, running)
    start = time.monotonic()
    with interrupts.cancel_scope(called_off), pytest.raises(interrupts.Cancelled):
        gce.wait_operation("create instance m", operation("PENDING"), "p", "europe-west1-b", None, start + 60)
    assert len(queries) == 3 and time.monotonic() - start < 5
    assert queries[0] == {"project": "p", "operation": "operation-1", "zone": "europe-west1-b"}


def test_a_gce_wait_ends_with_the_operation_its_deadline_or_its_errors(monkeypatch):
    answers = iter([operation("RUNNING"), operation("DONE")])
    queries = operations(monkeypatch, lambda: next(answers))
    gce.wait_operation("create image i", operation("PENDING"), "p", None, None, time.monotonic() + 5)
    assert queries == [{"project": "p", "operation": "operation-1"}] * 2
    operations(monkeypatch, lambda: operation("RUNNING"))
    with pytest.raises(ProviderError, match=r"operation operation-1\): not done by the deadline \(still RUNNING\)"):
        gce.wait_operation("create image i", operation("PENDING"), "p", None, None, time.monotonic() + 0.05)
    failed = operation("DONE", [("QUOTA_EXCEEDED", "injected")])
    with pytest.raises(ProviderError, match=r"^create instance m: QUOTA_EXCEEDED: injected$"):
        gce.wait_operation("create instance m", failed, "p", "europe-west1-b", None, time.monotonic() + 5)


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
        ({"subnetwork": "subnetworks/x"}, "targets.gce.subnetwork.*a subnetwork name .*regions/REGION/subnetworks"),
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


def test_a_long_machine_name_survives_the_labels_so_teardown_recognises_its_instance():
    """Issue 26.7: the old labels cut the machine name at 63 characters after escaping, so teardown of an image
    matrix cell (``gce-eu-nightly-cernvm5``) judged its own instance foreign, left it alone and leaked it. The kit's
    fields continue a long value in ``_2``: the whole name comes back and the ownership check holds."""
    from cernvm_fixtures.ledger import Resource
    from cernvm_fixtures.providers.gce.labels import LABEL_KEY, LABEL_VALUE, ours
    from cernvm_fixtures.providers.kit import decode_fields, encode_fields

    name = "cvmfx-0b973455-gce-eu-nightly-cernvm5-with-a-long-label-e0585fdf03833edd"
    assert len(name) > 63
    entry = Resource(provider="gce", kind="instance", name=name, run="0b973455", target="gce-eu-nightly-cernvm5")
    labels = encode_fields(entry)
    assert all(LABEL_KEY.match(k) and LABEL_VALUE.match(v) for k, v in labels.items()), labels
    decoded = decode_fields(labels)
    assert decoded is not None and decoded.name == name
    assert ours(labels, entry)
