"""The azure provider's pure parts: options, VHD checks, page runs, tags, blob metadata, teardown order."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import azure
from cernvm_fixtures.providers.azure.tags import from_metadata
from cernvm_fixtures.providers.base import teardown_rank
from cernvm_fixtures.providers.kit import FIELD_BUDGET, encode_fields

from ..fakes.azure.certificate import make_certificate
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
        ({"tags": {"cvmfx-run": "x"}}, "is reserved"),
        ({"tags": {"CVMFX-Run": "x"}}, "is reserved"),  # Azure's tag names are case-insensitive
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
    damaged = bytearray(good.read_bytes())
    damaged[-512 + 100] ^= 0xFF  # a reserved byte: only the checksum tells
    raw.write_bytes(bytes(damaged))
    with pytest.raises(ConfigError, match=r"raw.vhd has footer checksum 0x[0-9a-f]{8}, not 0x[0-9a-f]{8}"):
        azure.check_vhd(raw, "w")


def test_footer_problem_names_the_kind():
    from cernvm_fixtures.providers.azure.vhd import footer_problem

    footer = bytearray(512)
    footer[0:8], footer[60:64], footer[48:56] = b"conectix", (2).to_bytes(4, "big"), (1 << 20).to_bytes(8, "big")
    footer[64:68] = (~sum(footer) & 0xFFFFFFFF).to_bytes(4, "big")
    assert footer_problem(bytes(footer), 1 << 20) is None
    assert footer_problem(bytes(footer), (1 << 20) + 512)[0] == "size"
    assert footer_problem(b"conectix"[:7], 1 << 20)[0] == "cookie"
    assert footer_problem(bytes(footer[:60]) + (3).to_bytes(4, "big") + bytes(footer[64:]), 1 << 20) == (
        "type",
        "is a dynamic VHD",
    )


def test_pages_skip_empty_512_byte_pages(tmp_path: Path):
    path = tmp_path / "d"
    data = bytearray(azure.CHUNK + 4096)
    data[512:1024] = b"x" * 512
    data[azure.CHUNK - 512 : azure.CHUNK + 512] = b"y" * 1024  # a run across the chunk boundary: two calls
    path.write_bytes(bytes(data))
    runs = [(offset, len(chunk)) for offset, chunk in azure.pages(path)]
    assert runs == [(512, 512), (azure.CHUNK - 512, 512), (azure.CHUNK, 512)]
    assert all(chunk.strip(b"\0") for _, chunk in azure.pages(path))


def test_tags_round_trip_within_azures_limits_and_teardown_order():
    resources = []
    for kind in azure.CREATION_ORDER:
        resource = Resource(provider="azure", kind=kind, name="cvmfx-abc-azure-1", run="abc", target="azure")
        tags = azure.tag_dict(resource, {"project": "p"})
        assert tags["project"] == "p" and all(name.startswith("cvmfx-") for name in tags if name != "project")
        assert len(tags) <= 1 + FIELD_BUDGET <= 50 - 20, "room for the user's tags in Azure's 50"
        assert not [n for n, v in tags.items() if re.search(r"[<>%&\\?/]", n) or len(n) > 512 or len(v) > 256]
        back = azure.resource_from_tags(kind, tags, {"id": "x"})
        assert (back.created, back.expires) == pytest.approx((resource.created, resource.expires), abs=1e-6)
        assert replace(back, created=resource.created, expires=resource.expires) == replace(resource, data={"id": "x"})
        resources.append(back)
    order = sorted(resources, key=lambda r: teardown_rank(azure.AzureProvider.creation_order, r), reverse=True)
    assert [r.kind for r in order] == list(reversed(azure.CREATION_ORDER))
    assert azure.resource_from_tags("vm", {"project": "p"}, {}) is None
    assert azure.resource_from_tags("vm", {**tags, "cvmfx-provider": "gce"}, {}) is None


def test_blob_metadata_names_are_identifiers_and_read_back_as_tags():
    owner = Owner("a-long-host-name-" * 5, 4242, "123456", "f" * 32)  # long: its field continues in _2, _3
    resource = Resource(provider="azure", kind="blob", name="cvmfx-abc-azure-1", run="abc", target="t", owner=owner)
    metadata = azure.blob_metadata(resource, "0" * 64, complete=True)
    assert all(name.isidentifier() for name in metadata), metadata
    assert {"cvmfx_owner_host_2", "cvmfx_sha256", "cvmfx_complete"} <= set(metadata)
    tags = from_metadata(metadata)
    assert tags == {**encode_fields(resource), azure.DIGEST_TAG: "0" * 64, "cvmfx-complete": "true"}
    assert azure.resource_from_tags("blob", tags, {}).owner == owner
    assert from_metadata({"sha256": "x", "project_name": "p"}) == {"sha256": "x", "project_name": "p"}


def test_split_id():
    rid = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v"
    assert azure.split_id(rid) == ("g", "v")


# --- an X.509 certificate as the SSH key's source ------------------------------------------------------


def test_the_certificates_public_key_is_the_vms_key(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert, key = make_certificate(tmp_path)
    target = parse(ssh_certificate=str(cert), ssh_key=str(key))
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    expected = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert azure.certificate_public_key(target.options.ssh_certificate, target.options.ssh_key) == expected
    assert expected.startswith("ssh-rsa ")


def test_the_runs_admin_key_is_rsa_3072_made_once(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    from cernvm_fixtures.providers.azure.options import run_admin_key

    path, line = run_admin_key(tmp_path / "run", "cernvm-fixtures-x")
    assert path.stat().st_mode & 0o777 == 0o600 and line.startswith("ssh-rsa ") and line.endswith(" cernvm-fixtures-x")
    assert load_ssh_public_key(line.encode()).key_size == 3072
    assert load_ssh_private_key(path.read_bytes(), None).public_key().public_numbers() == (
        load_ssh_public_key(line.encode()).public_numbers()
    )
    assert run_admin_key(tmp_path / "run", "cernvm-fixtures-x") == (path, line), "made once, then read"


def _other_key(tmp_path: Path) -> Path:
    return make_certificate(tmp_path / "other")[1]


def _encrypted_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(make_certificate(tmp_path / "enc")[1].read_bytes(), None)
    path = tmp_path / "encrypted"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no key", "targets.azure.ssh_key: expected the private key ssh_certificate was made from"),
        ("no certificate", "targets.azure.ssh_key: expected no ssh_key without ssh_certificate"),
        ("other key", r"ssh_key: expected the private key .*cert.pem was made from \(their public keys differ\)"),
        ("small key", r"ssh_certificate: expected a certificate of an RSA key of 2048 bits .*\(1024-bit RSA key\)"),
        (
            "ed25519 key",
            r"ssh_certificate: expected .*'at least 2048-bit and in ssh-rsa format' \(Ed25519PublicKey key\)",
        ),
        ("not a certificate", r"ssh_certificate: expected an X.509 certificate .*openssl req -x509"),
        ("encrypted key", r"ssh_key: expected an unencrypted private key \(.*encrypted is encrypted"),
        ("missing certificate", r"ssh_certificate: expected a readable certificate file \(.*nothing.pem: No such"),
    ],
)
def test_certificate_problems_are_clear_config_errors(tmp_path, case, message):
    cert, key = make_certificate(tmp_path, 1024 if case == "small key" else 2048, ed25519=case == "ed25519 key")
    options = {"ssh_certificate": str(cert), "ssh_key": str(key)}
    if case == "no key":
        del options["ssh_key"]
    elif case == "no certificate":
        del options["ssh_certificate"]
    elif case == "other key":
        options["ssh_key"] = str(_other_key(tmp_path))
    elif case == "not a certificate":
        options["ssh_certificate"] = str(key)
    elif case == "encrypted key":
        options["ssh_key"] = str(_encrypted_key(tmp_path))
    elif case == "missing certificate":
        options["ssh_certificate"] = str(tmp_path / "nothing.pem")
    with pytest.raises(ConfigError, match=message):
        parse(**options)
