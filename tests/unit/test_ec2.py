"""The ec2 provider without any engine: options, tags, teardown order, and VM Import on botocore's Stubber."""

from __future__ import annotations

import base64
import functools
import random
import re
import subprocess
import sys
import time

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cernvm_fixtures import config, marks, sweep
from cernvm_fixtures import profile as profiles
from cernvm_fixtures.errors import ConfigError, PermanentError, ProviderError
from cernvm_fixtures.images import Resolved
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import ec2
from cernvm_fixtures.providers.base import teardown_rank
from cernvm_fixtures.providers.ec2 import Ec2Provider, network
from cernvm_fixtures.providers.ec2 import image as ec2_image
from cernvm_fixtures.providers.ec2 import tags as ec2_tags
from cernvm_fixtures.run import Run

BASE = {
    "provider": "ec2",
    "image": "ami-0123456789abcdef0",
    "profile": "cernvm4",
    "region": "eu-west-1",
    "ssh_cidr": "203.0.113.7/32",
}


def target(**options):
    raw = {**BASE, **options}
    return config.parse({"targets": {"ec2": {k: v for k, v in raw.items() if v is not None}}}, "cernvm.toml").targets[
        "ec2"
    ]


def error(**options) -> str:
    with pytest.raises(ConfigError) as e:
        target(**options)
    return str(e.value)


def stubbed_ec2():
    client = boto3.client("ec2", region_name="eu-west-1", aws_access_key_id="AKIAUNIT", aws_secret_access_key="unit")
    return client, Stubber(client)


# --- options --------------------------------------------------------------------------------------


def test_defaults():
    o = target().options
    assert (o.instance_type, o.scratch_size, o.user, o.address, o.metadata_tokens) == (
        "m5.large",
        25,
        "root",
        "public",
        "optional",
    )
    assert o.subnet_id is None and o.security_group_id is None and o.key_name is None


def test_module_and_options_work_without_boto3():
    code = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "from cernvm_fixtures import config\n"
        f"t = config.parse({{'targets': {{'ec2': {BASE!r}}}}}, 'x').targets['ec2']\n"
        "from cernvm_fixtures.providers.ec2 import Ec2Provider\n"
        "from cernvm_fixtures.run import Run\n"
        "try:\n"
        "    Ec2Provider(t, Run(state=__import__('pathlib').Path('/nonexistent'))).ec2()\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ConfigError the ec2 provider needs boto3 (boto3 did not import): pip install 'cernvm-fixtures[ec2]'" in (
        result.stdout
    )


def test_unknown_region_names_the_valid_ones():
    message = error(region="mars-east-1")
    assert "cernvm.toml: targets.ec2.region: expected one of the EC2 regions boto3 knows:" in message
    assert "eu-west-1" in message and "us-east-1" in message and "(got 'mars-east-1')" in message


def test_region_from_boto3_chain(monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert ec2.resolve_region(None, "where.region") == "ap-south-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "moon-1")
    with pytest.raises(ConfigError, match="boto3's default region 'moon-1' is not an EC2 region boto3 knows"):
        ec2.resolve_region(None, "where.region")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match=r"where.region: not set, and boto3 found no default region"):
        ec2.resolve_region(None, "where.region")


def test_unknown_key_is_rejected_with_the_valid_ones():
    message = error(instance_typ="t3.micro")
    assert "targets.ec2.instance_typ: unknown key; valid keys are" in message and "instance_type" in message


@pytest.mark.parametrize(
    "tags,problem",
    [
        ({"aws:owner": "me"}, "key 'aws:owner' uses the prefix 'aws:', which AWS reserves"),
        ({"AWS:owner": "me"}, "uses the prefix 'aws:'"),
        ({"k" * 129: "v"}, "is 129 characters, AWS allows 1-128"),
        ({"": "v"}, "is 0 characters, AWS allows 1-128"),
        ({"team": "v" * 257}, "value of 'team' is 257 characters, AWS allows 256"),
        ({"Name": "mine"}, "key 'Name' is set by cernvm-fixtures itself"),
        ({"cvmfx-run": "x"}, "is set by cernvm-fixtures itself"),
        ({"team": "a;b"}, "has characters AWS does not allow"),
        ({f"t{i}": "v" for i in range(30)}, "30 tags, at most 29"),
    ],
)
def test_malformed_tags(tags, problem):
    message = error(tags=tags)
    assert "targets.ec2.tags: expected valid AWS tags" in message and problem in message


def test_good_tags():
    tags = {"team": "cernvm", "cost-center": "it/sft 42", "contact": "a.b@cern.ch", "ü": "ok"}
    assert target(tags=tags).options.tags == tags


@pytest.mark.parametrize(
    "cidr,expected",
    [("203.0.113.7", "203.0.113.7/32"), ("203.0.113.0/24", "203.0.113.0/24"), ("2001:db8::1", "2001:db8::1/128")],
)
def test_ssh_cidr_normalised(cidr, expected):
    assert target(ssh_cidr=cidr).options.ssh_cidr == expected


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_ssh_cidr_never_the_whole_internet(cidr):
    assert "targets.ec2.ssh_cidr: expected the runner's own address range, not the whole internet" in error(
        ssh_cidr=cidr
    )


def test_ssh_cidr_required_when_we_create_the_group():
    message = error(ssh_cidr=None)
    assert "targets.ec2.ssh_cidr: expected the runner's own public address as a CIDR, e.g. '203.0.113.7/32'" in message
    assert target(ssh_cidr=None, subnet_id="subnet-1", security_group_id="sg-1").options.ssh_cidr is None


def test_ssh_cidr_garbage():
    assert "expected an IPv4/IPv6 address or network" in error(ssh_cidr="my laptop")
    assert "has host bits set" in error(ssh_cidr="203.0.113.7/24")


def test_group_needs_its_subnet():
    assert "targets.ec2.security_group_id: expected a group together with subnet_id" in error(security_group_id="sg-1")


@pytest.mark.parametrize("bad", ["a@b@c", "host:0", "host:99999", "user@", "has space"])
def test_jump_host_format(bad):
    assert "targets.ec2.jump_host: expected [user@]host[:port]" in error(jump_host=bad)


def test_jump_host_parsing():
    assert ec2.parse_jump("bastion.cern.ch") == (None, "bastion.cern.ch", 22)
    assert ec2.parse_jump("ec2-user@10.0.0.5:2222") == ("ec2-user", "10.0.0.5", 2222)
    assert ec2.parse_jump("me@[2001:db8::1]:22") == ("me", "2001:db8::1", 22)


@pytest.mark.parametrize("bad", ["10.0.0.0/8", "10.0.0.0/29", "10.0.0.1/16", "fd00::/48"])
def test_vpc_cidr(bad):
    assert "targets.ec2.vpc_cidr: expected an IPv4 network between /16 and /28" in error(vpc_cidr=bad)


def test_endpoint_url():
    assert "targets.ec2.endpoint_url: expected an http:// or https:// URL" in error(endpoint_url="127.0.0.1:5000")
    assert target(endpoint_url="http://127.0.0.1:5000").options.endpoint_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "image,problem",
    [
        ("ami-12", "'ami-12' is not a valid AMI id"),
        ("appliance", "the ec2 provider boots an AMI id (ami-...) or imports a raw HVM image file"),
        ("ubuntu-22.04", "the ec2 provider boots an AMI id (ami-...) or imports a raw HVM image file"),
    ],
)
def test_image_errors(tmp_path, image, problem):
    provider = Ec2Provider(target(image=image), Run(state=tmp_path))
    with pytest.raises(ConfigError, match=".*") as e:
        provider.image()
    assert problem in str(e.value) and "cernvm.toml: targets.ec2." in str(e.value)


def test_image_file_needs_a_bucket(tmp_path):
    hvm = tmp_path / "ucernvm.hvm"
    hvm.write_bytes(b"\0")
    with pytest.raises(ConfigError, match="targets.ec2.import_bucket: required to import ucernvm.hvm"):
        Ec2Provider(target(image=str(hvm)), Run(state=tmp_path)).image()
    provider = Ec2Provider(target(image=str(hvm), import_bucket="b"), Run(state=tmp_path))
    assert provider.image() == Resolved(file=hvm.resolve())
    assert Ec2Provider(target(), Run(state=tmp_path)).image() == Resolved(platform="ami-0123456789abcdef0")


# --- traits and the profile's EC2 rules ------------------------------------------------------------


@pytest.mark.parametrize(
    "instance_type,driver",
    [
        ("t2.micro", "vif"),
        ("m3.medium", "vif"),
        ("c4.large", "ixgbevf"),
        ("m4.xlarge", "ixgbevf"),
        ("c3.large", "ixgbevf"),
        ("r3.large", "ixgbevf"),
        ("m5.large", "ena"),
        ("c5n.large", "ena"),
        ("t3.micro", "ena"),
        ("m6i.large", "ena"),
        ("x1.16xlarge", "ena"),
        ("p2.xlarge", "ena"),
        ("g2.2xlarge", "vif"),
        ("cc2.8xlarge", "vif"),
        ("m4.16xlarge", "ena"),
        ("i2.xlarge", "ixgbevf"),
        ("d2.xlarge", "ixgbevf"),
    ],
)
def test_traits_select_the_cernvm4_network_driver(tmp_path, instance_type, driver):
    provider = Ec2Provider(target(instance_type=instance_type), Run(state=tmp_path))
    machine = provider.machine("cvmfx-x-ec2-0000")
    assert {k: machine.traits[k] for k in ("provider", "kind", "instance_type", "region")} == {
        "provider": "ec2",
        "kind": "vm",
        "instance_type": instance_type,
        "region": "eu-west-1",
    }
    profile = profiles.load("cernvm4")
    assert profile.expect("network.driver", machine.traits).value == driver
    assert profile.expect("context.source", machine.traits).value == "EC2"


@pytest.mark.parametrize("instance_type", ["m5.large", "c5.xlarge", "t3.micro", "p3dn.24xlarge", "i3.metal"])
def test_a_nitro_type_is_refused_for_a_kernel_without_nvme(instance_type):
    with pytest.raises(
        ConfigError,
        match=rf"targets.ec2.instance_type: '{re.escape(instance_type)}' is a Nitro type.*"
        r"'cernvm4' says its kernel has no NVMe driver.*m4.large",
    ):
        target(instance_type=instance_type).load_profile()


@pytest.mark.parametrize(
    ("instance_type", "profile"),
    [("m4.large", "cernvm4"), ("t2.medium", "cernvm4"), ("i3.large", "cernvm4"), ("m5.large", "appliance")],
)
def test_xen_types_or_an_nvme_kernel_are_fine(instance_type, profile):
    assert target(instance_type=instance_type, profile=profile).load_profile().name == profile


# --- tags -----------------------------------------------------------------------------------------


def resource(kind="vpc", created=1_700_000_000.0, **data) -> Resource:
    return Resource(
        provider="ec2",
        kind=kind,
        name="cvmfx-ab12cd34-ec2-beef",
        run="ab12cd34",
        target="ec2",
        data=data,
        owner=Owner("runner-1", 4242, "987654"),
        created=created,
    )


def test_tags_carry_run_owner_expiry_and_cannot_be_overridden():
    r = resource()
    tags = ec2.tag_dict(r, extra={"team": "sft", "Name": "sneaky", "cvmfx-run": "other"})
    assert tags == {
        "team": "sft",
        "Name": "cvmfx-ab12cd34-ec2-beef-vpc",
        "cvmfx-provider": "ec2",
        "cvmfx-run": "ab12cd34",
        "cvmfx-name": "cvmfx-ab12cd34-ec2-beef",
        "cvmfx-target": "ec2",
        "cvmfx-kind": "vpc",
        "cvmfx-owner-host": "runner-1",
        "cvmfx-owner-pid": "4242",
        "cvmfx-owner-start": "987654",
        "cvmfx-created": "1700000000000000",
        "cvmfx-expires": "1700021600000000",
        "cvmfx-kept": "false",
        "cvmfx-mark": marks.mark(r),
    }
    kept = resource()
    kept.kept = True
    assert len(ec2.tag_dict(kept)) <= ec2_tags.OUR_TAGS and ec2.tag_dict(kept)["cvmfx-kept"] == "true"
    assert ec2.tag_dict(resource("instance"))["Name"] == "cvmfx-ab12cd34-ec2-beef"
    assert ec2.tag_problems({k: v for k, v in tags.items() if k != "team"}, reserved=0) != []


def test_a_resource_is_rebuilt_from_its_tags_alone():
    r = resource("security-group")
    r.kept = True
    back = ec2.resource_from_tags("security-group", ec2.tag_dict(r), {"ids": ["sg-1"]})
    assert (back.name, back.run, back.target, back.owner, back.kept, back.data) == (
        r.name,
        r.run,
        r.target,
        r.owner,
        True,
        {"ids": ["sg-1"]},
    )
    assert back.expires == r.expires and abs(back.created - r.created) <= 1e-6
    assert ec2.resource_from_tags("vpc", {"Name": "someone-elses"}, {}) is None
    mangled = {**ec2.tag_dict(r), "cvmfx-owner-pid": "??", "cvmfx-expires": "soon"}
    assert ec2.resource_from_tags("vpc", mangled, {}) is None, "unreadable fields: not provably ours, left alone"


def test_found_by_tag_sorts_by_dependency_for_sweep():
    created = 1_700_000_000.0
    instance = ec2.resource_from_tags("instance", ec2.tag_dict(resource("instance", created)), {})
    volume = ec2.resource_from_tags("volume", ec2.tag_dict(resource("instance", created), "volume"), {})
    assert instance.created == volume.created == created, "one machine's resources carry its creation time"
    ordered = sorted([volume, instance], key=sweep.teardown_key, reverse=True)
    assert [r.kind for r in ordered] == ["instance", "volume"], "sweep terminates before deleting volumes"


# --- teardown order ---------------------------------------------------------------------------------


DESTROY_ORDER = [
    "instance",
    "volume",
    "security-group",
    "route-table",
    "subnet",
    "internet-gateway",
    "vpc",
    "key-pair",
    "image",
    "snapshot",
    "s3-object",
]


def test_teardown_order_is_the_reverse_of_the_dependencies():
    resources = [resource(kind, created=1000.0 + i) for i, kind in enumerate(reversed(DESTROY_ORDER))]
    random.Random(7).shuffle(resources)
    ordered = sorted(resources, key=lambda r: teardown_rank(Ec2Provider.creation_order, r), reverse=True)
    assert [r.kind for r in ordered] == DESTROY_ORDER


def test_machine_destroys_in_dependency_order_and_finishes_past_errors(tmp_path, monkeypatch):
    run = Run(state=tmp_path)
    provider = Ec2Provider(target(), run)
    machine = provider.machine("cvmfx-ab12cd34-ec2-beef")
    kinds = list(DESTROY_ORDER)
    random.Random(3).shuffle(kinds)
    for kind in kinds:
        provider.record(machine, kind, machine.name, region="eu-west-1")
    calls = []

    def destroy(cls, r):
        calls.append(r.kind)
        if r.kind == "subnet":
            raise ProviderError("DependencyViolation: still in use")

    monkeypatch.setattr(Ec2Provider, "destroy_resource", classmethod(destroy))
    with pytest.raises(ProviderError, match="could not destroy: subnet"):
        machine.destroy()
    assert calls == DESTROY_ORDER
    assert [r.kind for r in run.ledger.entries()] == ["subnet"], "what could not be destroyed stays in the ledger"


def test_destroy_unknown_kind_and_missing_region():
    with pytest.raises(ProviderError, match="unknown resource kind 'bucket'"):
        Ec2Provider.destroy_resource(resource("bucket", region="eu-west-1"))
    with pytest.raises(ProviderError, match="has no region"):
        Ec2Provider.destroy_resource(resource("vpc"))


# --- small pure helpers -----------------------------------------------------------------------------


def test_security_group_rule_is_ssh_from_one_address():
    assert network.ssh_permission("203.0.113.7/32") == {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "cernvm-fixtures: SSH from the test runner"}],
    }
    assert network.ssh_permission("2001:db8::1/128")["Ipv6Ranges"][0]["CidrIpv6"] == "2001:db8::1/128"


def test_scratch_mapping():
    root_only = {"RootDeviceName": "/dev/xvda", "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {}}]}
    assert ec2.scratch_mapping(root_only, 25) == {
        "DeviceName": "/dev/sdb",
        "Ebs": {"VolumeSize": 25, "VolumeType": "gp3", "DeleteOnTermination": True},
    }
    assert ec2.scratch_mapping(root_only, 0) is None
    with_scratch = {
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {}}, {"DeviceName": "/dev/sdb", "Ebs": {}}],
    }
    assert ec2.scratch_mapping(with_scratch, 25) is None
    root_on_b = {
        "RootDeviceName": "/dev/xvdb",
        "BlockDeviceMappings": [
            {"DeviceName": "/dev/xvdb", "Ebs": {}},
            {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral0"},
        ],
    }
    assert ec2.scratch_mapping(root_on_b, 25)["DeviceName"] == "/dev/sdd"


def test_console_output_decoding():
    text = "Linux version 4.14.232-19.cernvm.x86_64\r\n\x1b[32mOK\x1b[0m\r\n"
    assert (
        ec2.decode_console(base64.b64encode(text.encode()).decode()) == "Linux version 4.14.232-19.cernvm.x86_64\nOK\n"
    )
    assert ec2.decode_console("plain text, as moto returns it") == "plain text, as moto returns it"


def test_gone_codes():
    assert all(
        ec2.gone(c)
        for c in [
            "InvalidInstanceID.NotFound",
            "InvalidGroup.NotFound",
            "InvalidAMIID.Unavailable",
            "Gateway.NotAttached",
            "NoSuchKey",
            "InvalidKeyPair.NotFound",
        ]
    )
    assert not any(ec2.gone(c) for c in ["DependencyViolation", "UnauthorizedOperation", "InvalidAMIID.Malformed"])


def test_aws_errors_become_provider_errors_without_secrets():
    client, stub = stubbed_ec2()
    stub.add_client_error("delete_vpc", "UnauthorizedOperation", "You are not authorized to perform this operation.")
    stub.add_client_error("delete_vpc", "InvalidVpcID.NotFound", "The vpc ID 'vpc-1' does not exist")
    with stub:
        with pytest.raises(ProviderError) as e:
            ec2.AWS.call("delete vpc vpc-1", client.delete_vpc, VpcId="vpc-1")
        assert (
            str(e.value) == "delete vpc vpc-1: UnauthorizedOperation: You are not authorized to perform this operation."
        )
        assert "unit" not in str(e.value).split(":")[0]
        assert ec2.AWS.call("delete vpc vpc-1", client.delete_vpc, missing_ok=True, VpcId="vpc-1") is None


def test_busy_resources_are_retried_until_free():
    client, stub = stubbed_ec2()
    delete = functools.partial(client.delete_security_group, GroupId="sg-1")
    stub.add_client_error("delete_security_group", "DependencyViolation", "resource sg-1 has a dependent object")
    stub.add_client_error("delete_security_group", "InvalidGroup.InUse", "resource sg-1 has a dependent object")
    stub.add_response("delete_security_group", {}, {"GroupId": "sg-1"})
    with stub:
        ec2.AWS.delete_until_free("delete sg-1", delete, timeout=60, interval=0)
        stub.assert_no_pending_responses()
    stub.add_client_error("delete_security_group", "InvalidGroup.NotFound", "gone already")
    with stub:
        ec2.AWS.delete_until_free("delete sg-1", delete, timeout=60, interval=0)
        stub.assert_no_pending_responses()
    stub.add_client_error("delete_security_group", "DependencyViolation", "still")
    with stub, pytest.raises(ProviderError, match="delete sg-1: still in use .*DependencyViolation: still"):
        ec2.AWS.delete_until_free("delete sg-1", delete, timeout=-1, interval=0)
    stub.add_client_error("delete_security_group", "UnauthorizedOperation", "no")
    with stub, pytest.raises(ProviderError, match="^delete sg-1: UnauthorizedOperation: no$"):
        ec2.AWS.delete_until_free("delete sg-1", delete, timeout=60, interval=0)


# --- readiness on the Stubber: running, then status checks --------------------------------------------


def test_wait_running_then_status_checks(tmp_path, monkeypatch):
    client, stub = stubbed_ec2()
    provider = Ec2Provider(target(poll_interval=0.01), Run(state=tmp_path))
    monkeypatch.setattr(provider, "ec2", lambda: client)
    machine = provider.machine("cvmfx-ab12cd34-ec2-beef")
    machine.instance_id = "i-0123456789abcdef0"
    ids = {"InstanceIds": [machine.instance_id]}
    stub.add_client_error(
        "describe_instances", "InvalidInstanceID.NotFound", "eventual consistency", expected_params=ids
    )
    for state in ("pending", "running"):
        stub.add_response(
            "describe_instances",
            {
                "Reservations": [
                    {"Instances": [{"InstanceId": machine.instance_id, "State": {"Name": state, "Code": 0}}]}
                ]
            },
            ids,
        )
    status = {**ids, "IncludeAllInstances": True}
    for system, instance in (("initializing", "initializing"), ("ok", "initializing"), ("ok", "ok")):
        stub.add_response(
            "describe_instance_status",
            {
                "InstanceStatuses": [
                    {
                        "InstanceId": machine.instance_id,
                        "SystemStatus": {"Status": system},
                        "InstanceStatus": {"Status": instance},
                    }
                ]
            },
            status,
        )
    with stub:
        machine.wait_running(time.monotonic() + 10)
        stub.assert_no_pending_responses()

    stub.add_response(
        "describe_instances",
        {
            "Reservations": [
                {"Instances": [{"InstanceId": machine.instance_id, "State": {"Name": "running", "Code": 16}}]}
            ]
        },
        ids,
    )
    stub.add_response(
        "describe_instance_status",
        {
            "InstanceStatuses": [
                {
                    "InstanceId": machine.instance_id,
                    "SystemStatus": {"Status": "ok"},
                    "InstanceStatus": {"Status": "impaired"},
                }
            ]
        },
        status,
    )
    with stub, pytest.raises(ProviderError, match="failed its status checks .system ok, instance impaired"):
        machine.wait_running(time.monotonic() + 10)

    stub.add_response(
        "describe_instances",
        {
            "Reservations": [
                {"Instances": [{"InstanceId": machine.instance_id, "State": {"Name": "pending", "Code": 0}}]}
            ]
        },
        ids,
    )
    with stub, pytest.raises(ProviderError, match="still pending"):
        machine.wait_running(time.monotonic() - 1)

    stub.add_response(
        "describe_instances",
        {
            "Reservations": [
                {
                    "Instances": [
                        {
                            "InstanceId": machine.instance_id,
                            "State": {"Name": "terminated", "Code": 48},
                            "StateReason": {
                                "Code": "Server.InsufficientInstanceCapacity",
                                "Message": "Insufficient capacity.",
                            },
                        }
                    ]
                }
            ]
        },
        ids,
    )
    with stub, pytest.raises(PermanentError, match="is terminated: Insufficient capacity."):
        machine.wait_running(time.monotonic() + 10)  # permanent: the readiness step stops at once


# --- VM Import: import_snapshot is not implemented by moto, so its exact calls run on the Stubber --------


TASK = "import-snap-0123456789abcdef0"


def test_import_snapshot_call_is_exactly_what_vm_import_expects():
    client, stub = stubbed_ec2()
    tags = [{"Key": "cernvm-fixtures:run", "Value": "ab12cd34"}]
    stub.add_response(
        "import_snapshot",
        {"ImportTaskId": TASK, "SnapshotTaskDetail": {"Status": "active"}},
        expected_params={
            "ClientToken": "cvmfx-ab12cd34-ec2-beef-import",
            "Description": "cernvm-fixtures: ucernvm.hvm",
            "DiskContainer": {
                "Description": "cernvm-fixtures: ucernvm.hvm",
                "Format": "RAW",
                "UserBucket": {"S3Bucket": "my-bucket", "S3Key": "cernvm-fixtures/cvmfx-ab12cd34-ec2-beef/ucernvm.hvm"},
            },
            "RoleName": "vmimport-cernvm",
            "TagSpecifications": [{"ResourceType": "import-snapshot-task", "Tags": tags}],
        },
    )
    with stub:
        task = ec2_image.start_import(
            client,
            bucket="my-bucket",
            key="cernvm-fixtures/cvmfx-ab12cd34-ec2-beef/ucernvm.hvm",
            client_token="cvmfx-ab12cd34-ec2-beef-import",
            role="vmimport-cernvm",
            tags=tags,
            description="cernvm-fixtures: ucernvm.hvm",
        )
        stub.assert_no_pending_responses()
    assert task == TASK


def task_state(**detail):
    return {"ImportSnapshotTasks": [{"ImportTaskId": TASK, "SnapshotTaskDetail": detail}]}


def test_wait_import_until_completed():
    client, stub = stubbed_ec2()
    ids = {"ImportTaskIds": [TASK]}
    stub.add_response("describe_import_snapshot_tasks", task_state(Status="active", Progress="10"), ids)
    stub.add_response("describe_import_snapshot_tasks", task_state(Status="active", Progress="80"), ids)
    stub.add_response(
        "describe_import_snapshot_tasks", task_state(Status="completed", SnapshotId="snap-0123456789abcdef0"), ids
    )
    with stub:
        assert ec2_image.wait_import(client, TASK, deadline=time.monotonic() + 10, poll=0) == "snap-0123456789abcdef0"


def test_wait_import_failure_and_timeout():
    client, stub = stubbed_ec2()
    stub.add_response(
        "describe_import_snapshot_tasks",
        task_state(Status="deleted", StatusMessage="ClientError: Unsupported kernel version"),
    )
    with (
        stub,
        pytest.raises(ProviderError, match=f"import task {TASK} deleted: ClientError: Unsupported kernel version"),
    ):
        ec2_image.wait_import(client, TASK, deadline=time.monotonic() + 10, poll=0)
    stub.add_response("describe_import_snapshot_tasks", task_state(Status="active", Progress="42"))
    with stub, pytest.raises(ProviderError, match=r"import_timeout.*still active \(42%\)"):
        ec2_image.wait_import(client, TASK, deadline=time.monotonic() - 1, poll=0)


def test_registration_is_hvm_with_sriov_ena_and_scratch():
    params = ec2_image.registration("cvmfx-x", "snap-1", "x86_64", 25, [])
    assert {
        k: params[k] for k in ("VirtualizationType", "SriovNetSupport", "EnaSupport", "Architecture", "RootDeviceName")
    } == {
        "VirtualizationType": "hvm",
        "SriovNetSupport": "simple",
        "EnaSupport": True,
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/xvda",
    }
    assert params["BlockDeviceMappings"][1] == {
        "DeviceName": "/dev/sdb",
        "Ebs": {"VolumeSize": 25, "VolumeType": "gp3", "DeleteOnTermination": True},
    }
    assert ec2_image.registration("x", "snap-1", "aarch64", 0, [])["Architecture"] == "arm64"
    assert len(ec2_image.registration("x", "snap-1", "x86_64", 0, [])["BlockDeviceMappings"]) == 1
    client, stub = stubbed_ec2()
    stub.add_response("register_image", {"ImageId": "ami-0123456789abcdef0"}, params)
    with stub:
        client.register_image(**params)  # botocore accepts exactly these parameters


def test_an_interrupted_import_is_cancelled_on_teardown():
    client, stub = stubbed_ec2()
    r = resource("snapshot", region="eu-west-1", import_task_id=TASK)
    stub.add_response("describe_import_snapshot_tasks", task_state(Status="active"), {"ImportTaskIds": [TASK]})
    stub.add_response("cancel_import_task", {"ImportTaskId": TASK}, {"ImportTaskId": TASK})
    stub.add_response(
        "describe_snapshots", {"Snapshots": []}, {"OwnerIds": ["self"], "Filters": ec2_tags.tag_filters(r)}
    )
    with stub:
        ec2_image.remove_snapshot(r, client)
        stub.assert_no_pending_responses()


def test_uploads_in_the_import_bucket_are_found_for_sweep():
    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="AKIAUNIT", aws_secret_access_key="unit")
    stub = Stubber(s3)
    key = "cernvm-fixtures/cvmfx-ab12cd34-ec2-beef/ucernvm.hvm"
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": key}], "IsTruncated": False},
        {"Bucket": "my-bucket", "Prefix": "cernvm-fixtures/"},
    )
    tags = ec2.tag_dict(resource("s3-object"))
    stub.add_response("head_object", {"Metadata": tags}, {"Bucket": "my-bucket", "Key": key})
    with stub:
        assert ec2_image.uploaded_objects(s3, "my-bucket") == [(key, tags)]
    found = ec2.resource_from_tags("s3-object", tags, {"bucket": "my-bucket", "key": key})
    assert (found.kind, found.name, found.run) == ("s3-object", "cvmfx-ab12cd34-ec2-beef", "ab12cd34")


@pytest.fixture
def moto_credentials(monkeypatch):
    """In-process moto with test credentials only, and without moto's thousands of default AMIs (seconds to load,
    and nothing here looks for them)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAUNIT",
        "AWS_SECRET_ACCESS_KEY": "unit",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)


def test_include_kept_touches_only_resources_of_the_callers_own_principal(moto_credentials):
    ec2.reset_clients()
    try:
        with mock_aws():
            arn = boto3.client("sts", region_name="eu-west-1").get_caller_identity()["Arn"]
            mine = resource("vpc", region="eu-west-1", principal=ec2_tags.principal_digest(arn))
            assert Ec2Provider.owned_by_caller(mine)
            assert ec2.tag_dict(mine)["cvmfx-principal"] == ec2_tags.principal_digest(arn)
            back = ec2.resource_from_tags("vpc", ec2.tag_dict(mine), {"region": "eu-west-1"})
            assert Ec2Provider.owned_by_caller(back), "found by its tags alone, still provably the caller's"
            theirs = resource(
                "vpc",
                region="eu-west-1",
                principal=ec2_tags.principal_digest("arn:aws:iam::999999999999:user/someone-else"),
            )
            assert not Ec2Provider.owned_by_caller(theirs)
            assert not Ec2Provider.owned_by_caller(resource("vpc", region="eu-west-1")), "no principal: not provable"
    finally:
        ec2.reset_clients()


def test_leftovers_finds_only_whole_entries_by_their_tags(moto_credentials):
    ec2.reset_clients()
    try:
        with mock_aws():
            client = boto3.client("ec2", region_name="eu-west-1")
            ours = resource("vpc", region="eu-west-1")
            vpc = client.create_vpc(
                CidrBlock="10.9.0.0/16",
                TagSpecifications=[{"ResourceType": "vpc", "Tags": ec2.tag_list(ec2.tag_dict(ours))}],
            )["Vpc"]["VpcId"]
            forged = {**ec2.tag_dict(resource("subnet")), "cvmfx-owner-pid": "not-a-pid"}
            client.create_vpc(
                CidrBlock="10.8.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": ec2.tag_list(forged)}]
            )
            found = Ec2Provider.leftovers(target(), set())
            assert [(r.kind, r.name, r.data["ids"]) for r in found] == [("vpc", ours.name, [vpc])]
            assert Ec2Provider.leftovers(target(), {ours.name}) == [], "a machine the ledger covers is not a leftover"
    finally:
        ec2.reset_clients()


@pytest.mark.attack_row("forged tags on a foreign resource", "ec2")
def test_leftovers_take_only_marked_tags_on_the_resource_they_were_written_for(moto_credentials, monkeypatch):
    """Issue 26.2: forged tags (no mark, another key's mark) and our real tags copied onto a foreign security group
    or instance get nothing listed for sweep; the real ones still are."""
    ec2.reset_clients()
    try:
        with mock_aws():
            client = boto3.client("ec2", region_name="eu-west-1")
            vpc = client.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
            ours = resource("security-group", region="eu-west-1")
            tags = ec2.tag_dict(ours)

            def group(name: str, with_tags: dict[str, str]) -> str:
                spec = [{"ResourceType": "security-group", "Tags": ec2.tag_list(with_tags)}]
                made = client.create_security_group(GroupName=name, Description="x", VpcId=vpc, TagSpecifications=spec)
                return made["GroupId"]

            real = group(ours.name, tags)
            group("their-database", tags)  # a verbatim copy onto a foreign group
            unmarked = resource("security-group", region="eu-west-1")
            unmarked.name = "cvmfx-ab12cd34-ec2-f00d"
            group(unmarked.name, {k: v for k, v in ec2.tag_dict(unmarked).items() if k != "cvmfx-mark"})
            monkeypatch.setenv(marks.KEY_ENV, "someone else's key")
            elsewhere = resource("security-group", region="eu-west-1")
            elsewhere.name = "cvmfx-ab12cd34-ec2-cafe"
            group(elsewhere.name, ec2.tag_dict(elsewhere))  # marked with a key this sweep does not hold
            monkeypatch.delenv(marks.KEY_ENV)
            found = Ec2Provider.leftovers(target(), set())
            assert [(r.kind, r.name, r.data["ids"]) for r in found] == [("security-group", ours.name, [real])]
            monkeypatch.setenv(marks.KEY_ENV, "someone else's key")
            assert [r.name for r in Ec2Provider.leftovers(target(), set())] == [elsewhere.name], "a shared key"
    finally:
        ec2.reset_clients()
