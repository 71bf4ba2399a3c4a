"""Context rendering and the NoCloud seed."""

import email

import pycdlib
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


def test_seed_is_a_cidata_iso_with_user_and_meta_data(tmp_path):
    context = Context("vm-3", ("ssh-ed25519 AAAA k1",), UserData(ucernvm={"a": "b"}))
    path = write_seed(context, tmp_path / "seed.iso")
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        found = {}
        for name in ("user-data", "meta-data"):
            data = bytearray()

            class Sink:
                def write(self, chunk):
                    data.extend(chunk)

            iso.get_file_from_iso_fp(Sink(), rr_path="/" + name)
            found[name] = bytes(data)
    finally:
        iso.close()
    assert found["user-data"] == context.render()
    assert yaml.safe_load(found["meta-data"]) == {"instance-id": "vm-3", "local-hostname": "vm-3"}
