"""The azure provider's pure parts: options, VHD checks, page runs, tags and teardown order (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Resource
from cernvm_fixtures.providers import azure

from ..fakes.azure.vhd import make_vhd


def parse(**options):
    raw = {
        "provider": "azure",
        "image": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i",
        "profile": "appliance",
        "ssh_cidr": "203.0.113.7/32",
        **options,
    }
    return config.parse({"targets": {"azure": raw}}, "cernvm.toml").targets["azure"]


def test_defaults_and_an_image_id():
    target = parse()
    assert (target.options.location, target.options.vm_size, target.options.address) == (
        "westeurope",
        "Standard_D2s_v3",
        "public",
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ssh_cidr": None}, "targets.azure.ssh_cidr"),
        ({"ssh_cidr": "0.0.0.0/0"}, "not the whole internet"),
        ({"admin_user": "root"}, "that Azure does not reserve"),
        ({"endpoint": "http://127.0.0.1:1"}, "an https:// URL"),
        ({"tags": {"a/b": "x"}}, "without < > % & \\\\ \\? /"),
        ({"tags": {"cernvm-fixtures:run": "x"}}, "is reserved"),
        ({"address": "floating"}, "targets.azure.address"),
        ({"bogus": 1}, "targets.azure.bogus"),
    ],
)
def test_bad_options_name_the_key(options, message):
    raw = {k: v for k, v in options.items() if v is not None}
    if options.get("ssh_cidr", "") is None:
        with pytest.raises(ConfigError, match=message):
            config.parse({"targets": {"azure": {"provider": "azure", "image": "x.vhd", "profile": "appliance"}}}, "t")
        return
    with pytest.raises(ConfigError, match=message):
        parse(**raw)


def test_vhd_checks(tmp_path: Path):
    good = make_vhd(tmp_path / "good.vhd")
    assert azure.check_vhd(good, "w") == 2 * 1024 * 1024 + 512
    with pytest.raises(ConfigError, match="w: .*dynamic VHD"):
        azure.check_vhd(make_vhd(tmp_path / "d.vhd", fixed=False), "w")
    with pytest.raises(ConfigError, match="not a whole number of MiB"):
        azure.check_vhd(make_vhd(tmp_path / "o.vhd", size=1000), "w")
    raw = tmp_path / "raw.vhd"
    raw.write_bytes(b"\1" * (2 * 1024 * 1024 + 512))
    with pytest.raises(ConfigError, match="no VHD footer"):
        azure.check_vhd(raw, "w")


def test_pages_skip_empty_512_byte_pages(tmp_path: Path):
    path = tmp_path / "d"
    data = bytearray(azure.CHUNK + 4096)
    data[512:1024] = b"x" * 512
    data[azure.CHUNK - 512 : azure.CHUNK + 512] = b"y" * 1024  # a run across the chunk boundary: two calls
    path.write_bytes(bytes(data))
    runs = [(offset, len(chunk)) for offset, chunk in azure.pages(path)]
    assert runs == [(512, 512), (azure.CHUNK - 512, 512), (azure.CHUNK, 512)]
    assert all(chunk.strip(b"\0") for _, chunk in azure.pages(path))


def test_tags_round_trip_and_teardown_order():
    resources = []
    for kind in azure.CREATION_ORDER:
        resource = Resource(provider="azure", kind=kind, name="cvmfx-abc-azure-1", run="abc", target="azure")
        tags = azure.tag_dict(resource, {"project": "p"})
        assert len(tags) == 8 + 1 and tags["project"] == "p"
        back = azure.resource_from_tags(kind, tags, {})
        assert (back.kind, back.name, back.run, back.owner) == (kind, resource.name, "abc", resource.owner)
        resources.append(back)
    assert [r.kind for r in azure.teardown_order(resources)] == list(reversed(azure.CREATION_ORDER))
    assert azure.resource_from_tags("vm", {"project": "p"}, {}) is None


def test_split_id():
    rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v"
    assert azure.split_id(rid) == ("g", "v")
