"""The openstack provider's options, ledger fields and teardown order: no cloud, no SDK calls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cernvm_fixtures import config, images
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Resource
from cernvm_fixtures.providers import openstack as osmod
from cernvm_fixtures.providers.base import teardown_rank
from cernvm_fixtures.providers.kit import encode_fields


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
        ({"properties": {"a/b": "v"}}, "key 'a/b' does not match Nova's pattern ^[a-zA-Z0-9-_:. ]{1,255}$"),
        ({"properties": {"cern-services": "false", "ünï": "v"}}, "key 'ünï' does not match Nova's pattern"),
    ],
)
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError) as error:
        target(**options)
    assert message in str(error.value)


def test_property_keys_nova_accepts_load():
    keys = {"cern-services": "false", "a:b.c_d e-f": "v", "x" * 255: ""}
    assert target(properties=keys).options.properties == keys


def test_ssh_cidr_is_required():
    raw = {"provider": "openstack", "image": "x", "profile": "appliance"}
    with pytest.raises(ConfigError, match="ssh_cidr"):
        config.parse({"targets": {"cern": raw}}, "cernvm.toml")


def resource(kind: str = "server", name: str = "cvmfx-0123abcd-cern-1a2b") -> Resource:
    return Resource(provider="openstack", kind=kind, name=name, run="0123abcd", target="cern", data={})


def test_fields_round_trip_and_fit_nova_and_neutron():
    r = resource()
    fields = encode_fields(r)
    back = osmod.from_fields("server", fields, {"id": "x"})
    assert back is not None and back.data == {"id": "x"}
    assert (back.name, back.run, back.target, back.owner, back.created, back.expires, back.kept) == (
        r.name,
        r.run,
        r.target,
        r.owner,
        round(r.created * 1e6) / 1e6,
        round(r.expires * 1e6) / 1e6,
        r.kept,
    )
    tags = osmod.tag_list(fields)
    assert osmod.MARKER in tags, "every resource of ours carries the marker listings filter on"
    assert all("/" not in t and "," not in t and len(t) <= 255 for t in tags)
    assert osmod.tag_fields([*tags, "someone-else", "x=y"]) == fields
    assert osmod.from_fields("server", {"other": "x"}, {}) is None
    assert osmod.from_fields("server", encode_fields(replace(r, provider="gce")), {}) is None


def test_server_tags_are_the_fields_a_listing_filters_on_within_60_characters():
    short = encode_fields(resource())
    assert set(osmod.server_tags(short)) == {osmod.MARKER, "cvmfx-run=0123abcd", "cvmfx-name=cvmfx-0123abcd-cern-1a2b"}
    long = encode_fields(resource(name="cvmfx-0123abcd-a-target-of-24-chars-0123456789abcdef"))
    assert set(osmod.server_tags(long)) == {osmod.MARKER, "cvmfx-run=0123abcd"}, "a tag over 60 characters is left out"
    assert all(len(t) <= osmod.fields.SERVER_TAG_LENGTH for t in osmod.server_tags(long))


def test_teardown_order_is_the_reverse_of_creation():
    kinds = ["image", "keypair", "security-group", "server", "floating-ip"]
    assert list(osmod.CREATION_ORDER) == kinds
    found = [osmod.from_fields(k, encode_fields(resource(k)), {}) for k in reversed(kinds)]
    ordered = sorted(found, key=lambda r: teardown_rank(osmod.CREATION_ORDER, r), reverse=True)
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
    assert images.resolve(target(image=name), osmod.GLANCE) == images.Resolved(platform=name)


def test_a_local_file_of_each_disk_format_is_uploaded(tmp_path):
    for suffix in osmod.DISK_FORMATS:
        path = tmp_path / f"cernvm{suffix}"
        path.write_bytes(bytes(32769) + b"CD001" if suffix == ".iso" else b"disk")  # an ISO 9660 signature
        assert images.resolve(target(image=str(path)), osmod.GLANCE) == images.Resolved(file=path)
