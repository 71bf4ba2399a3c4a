"""The openstack provider's options, labels and teardown order: no cloud, no SDK calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Resource
from cernvm_fixtures.providers import openstack as osmod


def target(**options) -> config.Target:
    raw = {
        "provider": "openstack",
        "image": "CernVM 4 - Bootloader v2020.04-1 [2020-04-01]",
        "profile": "appliance",
        "ssh_cidr": "203.0.113.7/32",
        **options,
    }
    return config.parse({"targets": {"cern": raw}}, "cernvm.toml").targets["cern"]


def test_defaults_follow_the_documentation():
    options = target().options
    assert options.properties == {"cern-services": "false"}
    assert options.flavor == "cvm.medium" and options.address == "fixed" and options.cloud is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ssh_cidr": "0.0.0.0/0"}, "targets.cern.ssh_cidr"),
        ({"ssh_cidr": "203.0.113.7/24"}, "203.0.113.7/24"),
        ({"address": "public"}, "targets.cern.address"),
        ({"address": "floating"}, "needs floating_ip_pool"),
        ({"password": "secret"}, "targets.cern.password"),
        ({"properties": {"x" * 256: "v"}}, "1-255"),
    ],
)
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError) as error:
        target(**options)
    assert message in str(error.value)


def test_ssh_cidr_is_required():
    raw = {"provider": "openstack", "image": "x", "profile": "appliance"}
    with pytest.raises(ConfigError, match="ssh_cidr"):
        config.parse({"targets": {"cern": raw}}, "cernvm.toml")


def resource(kind: str = "server", name: str = "cvmfx-0123abcd-cern-1a2b") -> Resource:
    return Resource(provider="openstack", kind=kind, name=name, run="0123abcd", target="cern", data={})


def test_labels_round_trip_and_fit_nova_and_neutron():
    r = resource()
    fields = osmod.labels(r)
    back = osmod.resource_from_labels("server", fields, {"id": "x"})
    assert back is not None
    assert (back.name, back.run, back.target, back.owner.host, back.owner.pid) == (
        r.name,
        r.run,
        r.target,
        r.owner.host,
        r.owner.pid,
    )
    assert abs(back.expires - r.expires) < 1
    assert all("/" not in t and "," not in t and len(t) <= 255 for t in osmod.tags(r))
    assert osmod.labels_from_tags(osmod.tags(r)) == fields
    assert all(len(t) <= osmod.SERVER_TAG_LENGTH for t in osmod.server_tags(r))
    assert osmod.resource_from_labels("server", {"other": "x"}, {}) is None


def test_teardown_order_is_the_reverse_of_creation():
    kinds = ["image", "keypair", "security-group", "server", "floating-ip"]
    assert list(osmod.CREATION_ORDER) == kinds
    found = [osmod.resource_from_labels(k, osmod.labels(resource(k)), {}) for k in kinds]
    ordered = sorted(found, key=lambda r: (osmod.RANK[r.kind], r.created), reverse=True)
    assert [r.kind for r in ordered] == kinds[::-1]


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("ucernvm-prod.2020.04-1.cernvm.x86_64.iso", "iso"),
        ("cernvm4.qcow2", "qcow2"),
        ("ucernvm.hvm", "raw"),
        ("disk.raw", "raw"),
    ],
)
def test_disk_formats(name, fmt):
    assert osmod.disk_format(Path(name)) == fmt


def test_missing_local_image_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"targets.cern.image: .*nope.iso' does not exist"):
        target(image=str(tmp_path / "nope.iso"))
    name = "CernVM 4 - Bootloader v2020.04-1 [2020-04-01]"
    found = osmod.OpenStackProvider(target(image=name), run=None).image_source()  # type: ignore[arg-type]
    assert found == ("glance", name)
