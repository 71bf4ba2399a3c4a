"""The doctor against the real engines: libvirt, dockerd, and moto standing in for EC2 (loopback only)."""

from __future__ import annotations

import grp
import stat
from pathlib import Path

from cernvm_fixtures import config
from cernvm_fixtures.doctor import checks

from ..clouds import options, target_for
from ..fakes.moto_server import Moto


def target(name: str, **raw) -> config.Target:
    return config.parse({"targets": {name: raw}}, "doctor test").targets[name]


def by_what(found) -> dict:
    return {c.what: c for c in found}


def test_kvm_reports_dev_kvm_as_it_is():
    found = by_what(checks(target("kvm", provider="kvm", domain_type="qemu")))
    device = Path("/dev/kvm")
    if not device.exists():
        assert found["/dev/kvm"].severity == "warning"
        return
    st = device.stat()
    documented = (st.st_gid == grp.getgrnam("kvm").gr_gid and st.st_mode & 0o060 == 0o060) or (
        st.st_mode & 0o006 == 0o006
    )
    check = found["/dev/kvm"]
    assert check.severity == ("ok" if documented else "warning"), check
    assert f"{stat.S_IMODE(st.st_mode):04o}" in check.found
    if not documented:
        assert check.fix.startswith("chgrp kvm /dev/kvm && chmod 0660 /dev/kvm")
    assert found["libvirt"].severity == "ok" and "QEMU" in found["libvirt"].found
    assert found["virtlogd"].severity == "ok"


def test_kvm_nat_network_that_does_not_exist_is_a_problem():
    found = by_what(checks(target("kvm", provider="kvm", domain_type="qemu", network="nat", nat_network="cvmfx-none")))
    check = found["network cvmfx-none"]
    assert check.severity == "problem"
    assert "virsh net-define" in check.fix and "net-start cvmfx-none" in check.fix


def test_kvm_libvirt_unreachable_is_a_problem():
    found = by_what(checks(target("kvm", provider="kvm", uri="qemu+unix:///system?socket=/nonexistent/sock")))
    assert found["libvirt"].severity == "problem"
    assert "cannot connect to libvirt" in found["libvirt"].found


def test_docker_daemon_seccomp_and_space():
    found = by_what(checks(target("docker", provider="docker")))
    assert found["daemon"].severity == "ok" and "Docker" in found["daemon"].found
    assert found["seccomp"].severity == "ok"
    assert found["free space"].severity == "ok"


def test_docker_import_bigger_than_the_free_space_is_a_problem(tmp_path):
    tarball = tmp_path / "huge.tar"
    with open(tarball, "wb") as f:
        f.truncate(1 << 42)  # sparse: 4 TiB that take no room
    found = by_what(checks(target("docker", provider="docker", image=str(tarball), profile="appliance")))
    check = found["free space"]
    assert check.severity == "problem" and "importing" in check.found and str(tarball) in check.found


def ec2(moto: Moto, **options) -> config.Target:  # noqa: F811
    return target(
        "ec2",
        provider="ec2",
        region=moto.region,
        endpoint_url=moto.url,
        ssh_cidr="203.0.113.7/32",
        profile="appliance",
        **options,
    )


def test_ec2_credentials_region_and_a_missing_image(moto):  # noqa: F811
    found = by_what(checks(ec2(moto, image="ami-0123456789abcdef0")))
    assert found["credentials"].severity == "ok" and found["credentials"].found == "found by boto3 (env)"
    assert "moto" not in found["credentials"].found.lower() and "AKIA" not in found["credentials"].found
    assert found["region"].severity == "ok"
    assert found["image"].severity == "problem" and "ami-0123456789abcdef0 is not visible" in found["image"].found


def test_ec2_without_credentials_is_a_problem(moto, monkeypatch):  # noqa: F811
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    found = by_what(checks(ec2(moto, image="ami-0123456789abcdef0")))
    assert found["credentials"].severity == "problem"
    assert "image" not in found  # no API call without credentials


def test_ec2_vpc_quota_full_is_a_problem(moto):  # noqa: F811
    client = moto.client()
    image = client.register_image(
        Name="cvmfx-doctor",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 1}}],
    )["ImageId"]
    target_ = ec2(moto, image=image)
    found = by_what(checks(target_))
    assert found["image"].severity == "ok"
    assert found["VPC quota"].severity == "ok"
    created = []
    try:
        while len(client.describe_vpcs()["Vpcs"]) < 5:
            created.append(client.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"])
        check = by_what(checks(target_))["VPC quota"]
        assert check.severity == "problem"
        assert "5 of 5 VPCs used" in check.found and "subnet_id" in check.fix
        assert "VPC quota" not in by_what(checks(ec2(moto, image=image, subnet_id="subnet-12345678")))
    finally:
        for vpc in created:
            client.delete_vpc(VpcId=vpc)
        client.deregister_image(ImageId=image)


# --- issue 26.10: the clouds without an emulator, through their fakes and the SDKs' own credential chains -------


def test_gce_credentials_and_project_from_adc(gce, monkeypatch):
    from cernvm_fixtures.providers.gce import api as gce_api

    for name, value in gce.env.items():
        monkeypatch.setenv(name, value)
    found = by_what(checks(target_for(gce, "cernvm4-micro-2020-07-1")))
    assert found["credentials"].severity == "ok" and "Credentials" in found["credentials"].found
    assert "BEGIN" not in found["credentials"].found, "nothing of the key is printed"
    assert found["project"].severity == "ok"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    monkeypatch.setattr(gce_api, "credentials", gce_api.credentials)  # no cached credentials anywhere
    found = by_what(checks(target_for(gce, "cernvm4-micro-2020-07-1")))
    assert found["credentials"].severity == "problem" and "/nonexistent/key.json" in found["credentials"].found


def test_openstack_cloud_configuration(openstack_cloud, tmp_path):
    image_file = tmp_path / "cernvm.qcow2"
    image_file.write_bytes(b"QFI\xfb" + b"\0" * 4092)
    found = by_what(checks(target_for(openstack_cloud, str(image_file))))
    assert found["cloud configuration"].severity == "ok", found
    assert "http://127.0.0.1:" in found["cloud configuration"].found
    found = by_what(checks(target("os", **{**options(openstack_cloud, str(image_file)), "cloud": "no-such-cloud"})))
    assert found["cloud configuration"].severity == "problem"
    assert "no-such-cloud" in found["cloud configuration"].found


def test_azure_subscription_and_a_token_from_the_credential_chain(azure_cloud, monkeypatch):
    from cernvm_fixtures.providers.azure import clients

    image = "/subscriptions/x/resourceGroups/g/providers/Microsoft.Compute/images/i"
    found = by_what(checks(target_for(azure_cloud, image)))
    assert found["subscription"].severity == "ok" and found["credentials"].severity == "ok", found
    assert "Credential" in found["credentials"].found
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PATH", raising=False)
    monkeypatch.delenv("AZURE_CLIENT_SECRET", raising=False)
    monkeypatch.setattr(clients, "_credentials", clients.ClientCache(clients._new_credential))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    found = by_what(checks(target_for(azure_cloud, image)))
    assert found["credentials"].severity == "problem", found
    assert "not-the-secret" not in found["credentials"].found
