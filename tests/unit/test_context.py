"""Context rendering and the context ISO (config drive + NoCloud files)."""

import email
import io
import json

import pycdlib
import pytest
import yaml

from cernvm_fixtures.context import Context, UserData
from cernvm_fixtures.context.nocloud import write_seed


def test_plain_cloud_config_carries_keys_and_hostname():
    blob = Context("vm-1", ("ssh-ed25519 AAAA k1",)).render().decode()
    assert blob.startswith("#cloud-config\n")
    parsed = yaml.safe_load(blob)
    assert parsed == {"hostname": "vm-1", "ssh_authorized_keys": ["ssh-ed25519 AAAA k1"]}
    assert "\n  - ssh-ed25519 AAAA k1\n" in blob


def test_more_parts_become_7bit_mime_multipart_in_order():
    user_data = UserData(
        cloud_config={"runcmd": ["true"]},
        ucernvm={"cvmfs_branch": "x", "resize_rootfs": "on"},
        amiconfig="[cernvm]\nrepositories=sft\n",
        raw="#!/bin/sh\necho hi\n",
    )
    blob = Context("vm-2", ("ssh-ed25519 AAAA k1",), user_data).render()
    message = email.message_from_bytes(blob)
    assert message.is_multipart()
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/cloud-config",
        "text/ucernvm",
        "text/amiconfig-user-data",
        "text/plain",
    ]
    assert all(p["Content-Transfer-Encoding"] == "7bit" for p in parts)
    assert yaml.safe_load(parts[0].get_payload())["runcmd"] == ["true"]
    assert parts[1].get_payload() == "[ucernvm-begin]\ncvmfs_branch=x\nresize_rootfs=on\n[ucernvm-end]\n"
    assert b"[ucernvm-begin]\ncvmfs_branch=x" in blob


def test_rendering_is_deterministic():
    user_data = UserData(ucernvm={"a": "b"})
    assert Context("h", ("k",), user_data).render() == Context("h", ("k",), user_data).render()


def test_user_data_key_identifies_equal_requests():
    assert UserData(ucernvm={"a": "1"}).key == UserData(ucernvm={"a": "1"}).key
    assert UserData(ucernvm={"a": "1"}).key != UserData(ucernvm={"a": "2"}).key
    assert UserData().key != UserData(raw="x").key
    assert not UserData() and UserData(raw="x")


def _read_iso(path, names):
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    found = {}
    try:
        for name in names:
            sink = io.BytesIO()
            iso.get_file_from_iso_fp(sink, rr_path="/" + name)
            found[name] = sink.getvalue()
        label = iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()
    return label, found


def test_seed_carries_the_config_drive_layout_and_the_nocloud_files(tmp_path):
    context = Context("vm-3", ("ssh-ed25519 AAAA k1",), UserData(ucernvm={"a": "b"}))
    path = write_seed(context, tmp_path / "seed.iso")
    names = [
        "openstack/latest/user_data",
        "openstack/latest/meta_data.json",
        "ec2/latest/user-data",
        "ec2/latest/meta-data.json",
        "user-data",
        "meta-data",
    ]
    label, found = _read_iso(path, names)
    assert label == "config-2", "cloud-init's ConfigDrive datasource looks for label config-2"
    for name in ("openstack/latest/user_data", "ec2/latest/user-data", "user-data"):
        assert found[name] == context.render(), f"{name} is not the rendered user data"
    assert b"[ucernvm-begin]\na=b\n[ucernvm-end]" in found["openstack/latest/user_data"]
    assert json.loads(found["openstack/latest/meta_data.json"]) == {"uuid": "vm-3", "hostname": "vm-3", "name": "vm-3"}
    assert json.loads(found["ec2/latest/meta-data.json"]) == {"instance-id": "vm-3", "local-hostname": "vm-3"}
    assert yaml.safe_load(found["meta-data"]) == {"instance-id": "vm-3", "local-hostname": "vm-3"}


def test_seed_without_a_file_is_noticed(tmp_path):
    path = write_seed(Context("vm-4"), tmp_path / "seed.iso")
    with pytest.raises(pycdlib.pycdlibexception.PyCdlibInvalidInput):
        _read_iso(path, ["openstack/latest/userdata"])


def test_host_key_goes_to_ssh_keys_as_cloud_init_reads_it():
    """cloud-init's cc_ssh installs ssh_keys.ed25519_private/_public as the host key: a YAML block scalar."""
    import yaml

    from cernvm_fixtures.context import HostKey

    key = HostKey.generate()
    text = Context("vm", ("ssh-ed25519 AAAA run",), host_key=key).render().decode()
    assert "ed25519_private: |" in text
    parsed = yaml.safe_load(text)
    assert parsed["ssh_keys"] == {"ed25519_private": key.private, "ed25519_public": key.public}
    assert key.private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and key.public.startswith("ssh-ed25519 ")
    assert key.private not in repr(key), "the private half never shows in a repr (logs, reports)"
    assert "ssh_keys" not in Context("vm").cloud_config()
