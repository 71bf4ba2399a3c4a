"""The ec2 provider against a moto server on 127.0.0.1, with SSH going to a local stand-in.

moto emulates the EC2 and S3 APIs (server mode, over HTTP, through boto3's
``endpoint_url``), but its instances do not exist: their addresses are made up
and must never be connected to. Where a test needs SSH, the run's endpoint hook
sends the connection to a test appliance booted under KVM on 127.0.0.1 (the
"stand-in"). VM Import (``import_snapshot``) is not implemented by moto: those
two calls go to botocore's Stubber, everything else to the moto server.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path

import pytest
from botocore.stub import ANY, Stubber

from cernvm_fixtures.errors import ConfigError, ProviderError, ReadinessError, ScreenUnavailable
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers import ec2 as ec2mod
from cernvm_fixtures.providers.ec2 import Ec2Provider
from cernvm_fixtures.run import Keep, Run

from ..clouds import CIDR, assert_nothing_left, config_file, run_for, suite_through_standins, target_for
from ..fakes.moto_server import CONSOLES_ENV, SCREENS, Moto
from ..helpers import (
    create_only,
    killed_launch,
    ledger_entries,
    run_pytest,
    subprocess_env,
    sweep_killed,
)

# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ami(moto: Moto) -> str:
    """A "CernVM" HVM image registered in moto, as the EC2 guide registers one."""
    return moto.client().register_image(
        Name=f"ucernvm-test-{secrets.token_hex(3)}",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        SriovNetSupport="simple",
        EnaSupport=True,
    )["ImageId"]


def tags_of(item: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


# --- lifecycle ------------------------------------------------------------------------------------


def test_lifecycle_creates_the_documented_vpc_and_removes_everything(moto, ami, standin, tmp_path):
    run = run_for(tmp_path, standin, cloud=moto)
    target = target_for(moto, ami)
    instance = launch(target, run)
    ec2 = moto.client()
    try:
        machine = instance.machine
        assert {k: machine.traits[k] for k in ("provider", "kind", "instance_type", "region")} == {
            "provider": "ec2",
            "kind": "vm",
            "instance_type": "m5.large",
            "region": moto.region,
        }
        assert instance.run("hostname").stdout.strip() == standin.name, "SSH went through the endpoint hook"
        assert instance.transport.verified is True, "the host key matched the block in the console output"

        entries = {r.kind: r for r in run.ledger.entries()}
        assert set(entries) == {
            "key-pair",
            "vpc",
            "internet-gateway",
            "subnet",
            "route-table",
            "security-group",
            "instance",
        }
        assert all(
            r.data.get("id") and r.data["region"] == moto.region and r.name == machine.name for r in entries.values()
        )

        held = moto.tagged(value=run.id)
        assert {kind: len(ids) for kind, ids in held.items()} == {
            "instance": 1,
            "vpc": 1,
            "subnet": 1,
            "route-table": 1,
            "internet-gateway": 1,
            "security-group": 1,
            "key-pair": 1,
            "volume": 1,
        }
        described = [
            *[i for r in ec2.describe_instances(InstanceIds=held["instance"])["Reservations"] for i in r["Instances"]],
            *ec2.describe_vpcs(VpcIds=held["vpc"])["Vpcs"],
            *ec2.describe_subnets(SubnetIds=held["subnet"])["Subnets"],
            *ec2.describe_route_tables(RouteTableIds=held["route-table"])["RouteTables"],
            *ec2.describe_internet_gateways(InternetGatewayIds=held["internet-gateway"])["InternetGateways"],
            *ec2.describe_security_groups(GroupIds=held["security-group"])["SecurityGroups"],
            *ec2.describe_key_pairs(KeyNames=held["key-pair"])["KeyPairs"],
            *ec2.describe_volumes(VolumeIds=held["volume"])["Volumes"],
        ]
        for item in described:
            tags = tags_of(item)
            assert tags["cvmfx-run"] == run.id and tags["cvmfx-name"] == machine.name
            assert tags["Name"].startswith(machine.name) and tags["project"] == "cernvm-fixtures-tests"
            assert re.match(r"^\d+$", tags["cvmfx-owner-pid"]) and tags["cvmfx-owner-host"]
            assert int(tags["cvmfx-expires"]) > int(tags["cvmfx-created"]) > 0

        # the documented network: default route through the gateway, which is attached to the VPC
        vpc_id, igw_id = held["vpc"][0], held["internet-gateway"][0]
        table = ec2.describe_route_tables(RouteTableIds=held["route-table"])["RouteTables"][0]
        assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw_id} in [
            {k: r[k] for k in ("DestinationCidrBlock", "GatewayId") if k in r} for r in table["Routes"]
        ]
        assert [a["SubnetId"] for a in table["Associations"] if not a.get("Main")] == held["subnet"]
        gateway = ec2.describe_internet_gateways(InternetGatewayIds=[igw_id])["InternetGateways"][0]
        assert [a["VpcId"] for a in gateway["Attachments"]] == [vpc_id]

        # least privilege: exactly one ingress rule, tcp/22 from the configured /32
        group = ec2.describe_security_groups(GroupIds=held["security-group"])["SecurityGroups"][0]
        assert group["VpcId"] == vpc_id
        assert [
            (
                p["IpProtocol"],
                p.get("FromPort"),
                p.get("ToPort"),
                [r["CidrIp"] for r in p["IpRanges"]],
                p.get("Ipv6Ranges"),
                p.get("UserIdGroupPairs"),
                p.get("PrefixListIds"),
            )
            for p in group["IpPermissions"]
        ] == [("tcp", 22, 22, [CIDR], [], [], [])]

        # the context is the user data, byte for byte
        user_data = ec2.describe_instance_attribute(InstanceId=machine.instance_id, Attribute="userData")
        assert base64.b64decode(user_data["UserData"]["Value"]) == instance.context.render()

        assert "Linux version" in instance.console_log(), "get_console_output is the console log"
        assert str(run.key_file) in instance.login_command and "127.0.0.1" in instance.login_command
    finally:
        instance.destroy()
    assert_nothing_left(moto, run)
    state = ec2.describe_instances(InstanceIds=[machine.instance_id])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] == "terminated"


@pytest.mark.parametrize("given", ["subnet and group", "subnet"])
def test_lifecycle_in_an_existing_vpc(moto, ami, standin, tmp_path, given):
    ec2 = moto.client()
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.99.1.0/24")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    group = ec2.create_security_group(GroupName=f"mine-{secrets.token_hex(3)}", Description="d", VpcId=vpc)["GroupId"]
    options = {"subnet_id": subnet}
    if given == "subnet and group":
        options["security_group_id"] = group
    run = run_for(tmp_path, standin, cloud=moto)
    instance = launch(target_for(moto, ami, **options), run)
    try:
        expected = {"key-pair", "instance"} | ({"security-group"} if given == "subnet" else set())
        assert {r.kind for r in run.ledger.entries()} == expected
        held = moto.tagged(value=run.id)
        inst = ec2.describe_instances(InstanceIds=held["instance"])["Reservations"][0]["Instances"][0]
        assert inst["SubnetId"] == subnet
        groups = [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]]
        assert groups == ([group] if given == "subnet and group" else held["security-group"])
        if given == "subnet":
            created = ec2.describe_security_groups(GroupIds=held["security-group"])["SecurityGroups"][0]
            assert created["VpcId"] == vpc
        assert instance.run("true").succeeded
    finally:
        instance.destroy()
    assert_nothing_left(moto, run)
    # what the user brought is untouched
    assert ec2.describe_subnets(SubnetIds=[subnet])["Subnets"] and ec2.describe_security_groups(GroupIds=[group])


# --- the ledger is written first; teardown after failures --------------------------------------


CREATE_CALLS = {
    "ImportKeyPair": "key-pair",
    "CreateVpc": "vpc",
    "CreateInternetGateway": "internet-gateway",
    "CreateSubnet": "subnet",
    "CreateRouteTable": "route-table",
    "CreateSecurityGroup": "security-group",
    "RunInstances": "instance",
}


def test_every_create_call_finds_its_ledger_entry_already_written(moto, ami, tmp_path):
    run = run_for(tmp_path)
    target = target_for(moto, ami)
    client = ec2mod.client("ec2", moto.region, moto.url)
    seen: dict[str, list[tuple[str, bool]]] = {}

    def before(event_name: str, **kwargs):
        operation = event_name.rsplit(".", 1)[-1]
        if operation in CREATE_CALLS:
            on_disk = [json.loads(p.read_text()) for p in (run.directory / "ledger").glob("*.json")]
            seen[operation] = [(e["kind"], bool(e["data"].get("id"))) for e in on_disk]
        if operation == "RunInstances":
            raise RuntimeError("injected failure of run_instances")

    tagged: dict[str, dict[str, str]] = {}

    def params(params, model, **kwargs):
        for spec in params.get("TagSpecifications", []):
            if spec["ResourceType"] != "volume":  # RunInstances also tags the instance's volumes
                tagged[model.name] = {t["Key"]: t["Value"] for t in spec["Tags"]}

    client.meta.events.register("before-call.ec2.*", before)
    client.meta.events.register("provide-client-params.ec2.*", params)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            create_only(target, run)
    finally:
        client.meta.events.unregister("before-call.ec2.*", before)
        client.meta.events.unregister("provide-client-params.ec2.*", params)
    assert set(seen) == set(CREATE_CALLS)
    assert set(tagged) == set(CREATE_CALLS), "every create call tags its resource at creation"
    for operation, tags in tagged.items():
        assert tags["cvmfx-run"] == run.id and tags["cvmfx-kind"] == CREATE_CALLS[operation]
        assert {"cvmfx-owner-host", "cvmfx-expires", "Name"} <= set(tags)
    for operation, kind in CREATE_CALLS.items():
        assert (kind, False) in seen[operation], f"{operation}: no ledger entry for the {kind} before the call"
        created_before = [k for k, has_id in seen[operation] if has_id]
        assert kind not in created_before
    assert_nothing_left(moto, run)


@pytest.mark.parametrize("operation", ["CreateVpc", "CreateSecurityGroup", "ImportKeyPair", "RunInstances"])
def test_interrupted_between_create_and_ledger_update(moto, ami, tmp_path, operation):
    """Ctrl-C right after AWS created something, before its id reached the ledger: found by tag, removed."""
    run = run_for(tmp_path)
    client = ec2mod.client("ec2", moto.region, moto.url)
    made: list[str] = []

    def after(**kwargs):
        made.append(operation)
        raise KeyboardInterrupt

    client.meta.events.register(f"after-call.ec2.{operation}", after)
    try:
        with pytest.raises(KeyboardInterrupt):
            create_only(target_for(moto, ami), run)
    finally:
        client.meta.events.unregister(f"after-call.ec2.{operation}", after)
    assert made == [operation]
    assert_nothing_left(moto, run)


def test_teardown_survives_resources_already_gone(moto, ami, tmp_path):
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(moto, ami), run)
    ec2 = moto.client()
    held = moto.tagged(value=run.id)
    entries = run.ledger.entries()
    ec2.terminate_instances(InstanceIds=held["instance"])
    ec2.delete_security_group(GroupId=held["security-group"][0])
    ec2.delete_key_pair(KeyName=held["key-pair"][0])
    machine.destroy()
    assert_nothing_left(moto, run)
    for resource in reversed(entries):  # again, from the ledger data alone: everything is gone, that is fine
        Ec2Provider.destroy_resource(resource)


def test_teardown_also_removes_duplicates_of_a_retried_create(moto, ami, tmp_path):
    """CreateVpc has no idempotency token: a retry after a lost answer can make a second, identically tagged VPC."""
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(moto, ami), run)
    ec2 = moto.client()
    original = ec2.describe_vpcs(VpcIds=moto.tagged(value=run.id)["vpc"])["Vpcs"][0]
    twin = ec2.create_vpc(
        CidrBlock="10.77.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": original["Tags"]}]
    )
    assert len(moto.tagged(value=run.id)["vpc"]) == 2
    machine.destroy()
    assert_nothing_left(moto, run)
    assert ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [twin["Vpc"]["VpcId"]]}])["Vpcs"] == []


def test_instance_terminated_while_waiting_is_an_error(moto, ami, tmp_path):
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(moto, ami), run)
    try:
        moto.client().terminate_instances(InstanceIds=[machine.instance_id])
        with pytest.raises(ProviderError, match=r"is (shutting-down|terminated)"):
            machine.wait_running(time.monotonic() + 5)
    finally:
        machine.destroy()
    assert_nothing_left(moto, run)


def test_a_host_key_the_console_did_not_announce_is_refused(moto, ami, standin, tmp_path):
    from ..clouds import assert_forged_host_key_refused

    deadlines = {"running": 20, "reachable": 30, "login": 5, "ready": 10}
    assert_forged_host_key_refused(tmp_path, moto, standin, target_for(moto, ami, deadlines=deadlines))


def test_console_screenshot_is_the_standins_screen(moto, ami, standin, tmp_path):
    """GetConsoleScreenshot (a JPG in base64, which moto answers with the stand-in's real screen, in process or
    named in the hook directory for a stand-in of another process) becomes a PNG of the screen's size."""
    from ..clouds import assert_standin_screen

    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(moto, ami), run)
    try:
        SCREENS[machine.instance_id] = standin.machine.screenshot
        assert_standin_screen(machine.screenshot(tmp_path / "live.png"))
        del SCREENS[machine.instance_id]  # from here on, only the hook directory names the stand-in
        (entry,) = [r for r in machine.resources if r.kind == "instance"]
        hook = Path(os.environ[CONSOLES_ENV]) / f"{machine.instance_id}.screen"
        hook.write_text(standin.name)
        try:
            assert_standin_screen(Ec2Provider.screenshot_resource(entry, tmp_path / "from-ledger.png"))
        finally:
            hook.unlink()
        with pytest.raises(ScreenUnavailable, match=f"EC2 gave no screenshot: .*{machine.instance_id} has no stand-in"):
            machine.screenshot(tmp_path / "none.png")
    finally:
        machine.destroy()
    assert_nothing_left(moto, run)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_never_ready_is_destroyed_at_once(moto, ami, tmp_path):
    port = closed_port()
    run = run_for(tmp_path, endpoint=lambda machine, host, p: ("127.0.0.1", port))
    target = target_for(moto, ami, deadlines={"running": 10, "reachable": 1, "login": 1, "ready": 1})
    with pytest.raises(ReadinessError) as error:
        launch(target, run)
    assert error.value.step == "reachable"
    assert "Linux version" in error.value.console_tail, "the error carries EC2's console output"
    assert_nothing_left(moto, run)


def test_keep_on_failure_keeps_and_tags_it_kept(moto, ami, tmp_path):
    port = closed_port()
    run = run_for(tmp_path, keep=Keep.ON_FAILURE, endpoint=lambda machine, host, p: ("127.0.0.1", port))
    target = target_for(moto, ami, deadlines={"running": 10, "reachable": 1, "login": 1, "ready": 1})
    with pytest.raises(ReadinessError) as error:
        launch(target, run)
    assert "kept for debugging: ssh -i" in str(error.value.__notes__)
    entries = run.ledger.entries()
    try:
        assert entries and all(e.kept and "login" in e.data for e in entries)
        held = moto.tagged(value=run.id)
        inst = moto.client().describe_instances(InstanceIds=held["instance"])["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] == "running"
        assert tags_of(inst)["cvmfx-kept"] == "true"
    finally:
        for resource in sorted(entries, key=lambda r: ec2mod.CREATION_ORDER.index(r.kind), reverse=True):
            Ec2Provider.destroy_resource(resource)
            run.ledger.forget(resource)
    assert_nothing_left(moto, run)


# --- sweep after SIGKILL ----------------------------------------------------------------------------


@pytest.mark.parametrize("ledger", ["kept", "lost"])
def test_sweep_removes_what_a_killed_run_left(moto, ami, tmp_path, ledger):
    state = tmp_path / "state"
    env = subprocess_env(state)
    cfg = config_file(tmp_path / "cernvm.toml", moto, ami)
    run_id = killed_launch(cfg, env)
    held = moto.tagged(value=run_id)
    assert held.keys() >= {"instance", "vpc", "security-group", "key-pair"}
    assert len(ledger_entries(state)) == 7
    sweep = sweep_killed(cfg, state, lose_ledger=ledger == "lost")
    assert "destroyed ec2 instance" in sweep.stdout and "destroyed ec2 vpc" in sweep.stdout
    assert moto.tagged(value=run_id) == {}, sweep.stdout
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    order = re.findall(r"destroyed ec2 (\S+)", sweep.stdout)
    assert order.index("instance") < order.index("security-group") < order.index("subnet") < order.index("vpc")


# --- configuration errors: one clear error each, nothing created ---------------------------------


def test_bad_configs_fail_before_anything_is_created(moto, ami, tmp_path):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="cvmfx-empty", CreateBucketConfiguration={"LocationConstraint": moto.region})
    hvm = tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.hvm"
    hvm.write_bytes(b"\0" * 1024)
    iso = tmp_path / "ucernvm.iso"
    iso.write_bytes(bytes(32769) + b"CD001" + bytes(2042))
    cases = [
        (
            {"image": "ami-0123456789abcdef0"},
            "targets.ec2.image: AMI ami-0123456789abcdef0 not found in region eu-west-1",
        ),
        ({"image": "/nonexistent/ucernvm.hvm"}, "targets.ec2.image: '/nonexistent/ucernvm.hvm' does not exist"),
        ({"image": str(hvm)}, "targets.ec2.import_bucket: required to import"),
        (
            {"image": str(hvm), "import_bucket": "no-such-bucket"},
            "targets.ec2.import_bucket: S3 bucket 'no-such-bucket' does not exist",
        ),
        ({"image": str(iso)}, "the ec2 provider boots an AMI id (ami-...) or imports a raw HVM image"),
        ({"instance_type": "m5.huge"}, "targets.ec2.instance_type: 'm5.huge' is not an EC2 instance type"),
        ({"subnet_id": "subnet-0123456789abcdef0"}, "targets.ec2.subnet_id: subnet subnet-0123456789abcdef0 not found"),
        ({"key_name": "nobody-has-this"}, "targets.ec2.key_name: key pair 'nobody-has-this' not found"),
    ]
    for options, message in cases:
        run = run_for(tmp_path / secrets.token_hex(3))
        with pytest.raises(ConfigError) as error:  # at load (files) or before the first create call (AWS lookups)
            create_only(target_for(moto, **{"image": ami, **options}), run)
        assert message in str(error.value), str(error.value)
        assert_nothing_left(moto, run)


def test_no_credentials_is_a_clear_error(moto, ami, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    ec2mod.reset_clients()
    try:
        run = run_for(tmp_path)
        with pytest.raises(ProviderError, match="boto3 found no AWS credentials"):
            create_only(target_for(moto, ami), run)
        assert run.ledger.entries() == []
    finally:
        monkeypatch.undo()
        ec2mod.reset_clients()


# --- nothing secret is written or logged -----------------------------------------------------------


def test_secrets_stay_out_of_ledger_run_dir_and_logs(moto, ami, tmp_path, monkeypatch, caplog):
    marker = "SECRET-" + secrets.token_hex(12)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", marker)
    ec2mod.reset_clients()
    caplog.set_level(logging.DEBUG)
    try:
        run = run_for(tmp_path)
        client = ec2mod.client("ec2", moto.region, moto.url)
        assert client._request_signer._credentials.secret_key == marker, "the provider really signs with it"
        machine, _ = create_only(target_for(moto, ami), run)
        try:
            machine.console_log()
            written = [p.read_bytes() for p in run.directory.rglob("*") if p.is_file()]
            assert written and len(run.ledger.entries()) == 7
            assert not any(marker.encode() in data for data in written)
            assert marker not in str(machine.login_command())
        finally:
            machine.destroy()
        assert "botocore" in caplog.text, "botocore's debug log was captured"
        assert marker not in caplog.text
    finally:
        monkeypatch.undo()
        ec2mod.reset_clients()


# --- the network rule ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:A test tried to use socket.socket.connect")
def test_connecting_to_an_address_moto_made_up_is_blocked(moto, ami, tmp_path, pytestconfig):
    from pytest_socket import SocketConnectBlockedError

    allowed = pytestconfig.getoption("allow_hosts")
    if not allowed or set(allowed.split(",")) - {"127.0.0.1", "::1", "localhost"}:
        pytest.fail("run the tests under the network rule (tests/network_rule.py: loopback only, never reach out)")
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(moto, ami), run)
    try:
        address = machine.platform_address()
        assert not address.startswith("127.")
        with pytest.raises(SocketConnectBlockedError):
            socket.create_connection((address, 22), timeout=1)
        transport = machine.transport()  # no endpoint hook: the made-up address itself
        with pytest.raises(SocketConnectBlockedError):
            transport.unreachable()
    finally:
        machine.destroy()
    assert_nothing_left(moto, run)


# --- jump host ----------------------------------------------------------------------------------------


def test_through_a_jump_host(moto, ami, standin, tmp_path):
    """The jump host is the stand-in; from there the (redirected) instance address is its own sshd."""
    port = standin.machine.ssh_port
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{port} {' '.join(k.split()[:2])}\n" for k in standin.machine.host_keys()))
    key = standin.machine.provider.run.key_file
    run = run_for(tmp_path, standin, cloud=moto, endpoint=lambda machine, host, p: ("127.0.0.1", 22))
    target = target_for(
        moto, ami, address="private", jump_host=f"root@127.0.0.1:{port}", jump_key=str(key), jump_known_hosts=str(known)
    )
    instance = launch(target, run)
    try:
        assert instance.run("hostname").stdout.strip() == standin.name
        login = instance.machine.login_command()
        assert login.argv[login.argv.index("-J") + 1] == f"root@127.0.0.1:{port}"
        config = Path(login.argv[login.argv.index("-F") + 1]).read_text()
        assert f'IdentityFile "{key}"' in config and "ProxyCommand" not in " ".join(login.argv) + config
    finally:
        instance.destroy()
    assert_nothing_left(moto, run)


def test_unknown_jump_host_key_is_refused(moto, ami, standin, tmp_path):
    run = run_for(tmp_path, standin, cloud=moto, endpoint=lambda machine, host, p: ("127.0.0.1", 22))
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = target_for(
        moto,
        ami,
        address="private",
        jump_host=f"root@127.0.0.1:{standin.machine.ssh_port}",
        jump_key=str(standin.machine.provider.run.key_file),
        jump_known_hosts=str(empty),
    )
    machine, _ = create_only(target, run)
    try:
        with pytest.raises(ProviderError, match="not found in known_hosts"):
            machine.transport().unreachable()
    finally:
        machine.destroy()
    assert_nothing_left(moto, run)


# --- importing a raw .hvm image: S3 and EC2 on moto, VM Import on the Stubber --------------------


def test_import_hvm_image_then_launch_and_remove_it_all(moto, standin, tmp_path, monkeypatch):
    ec2, s3 = moto.client(), moto.client("s3")
    bucket = f"cvmfx-import-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": moto.region})
    hvm = tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.hvm"
    hvm.write_bytes(os.urandom(64 * 1024))
    # What VM Import would produce: a snapshot (moto cannot import; the Stubber answers the import calls).
    volume = ec2.create_volume(Size=1, AvailabilityZone=f"{moto.region}a")["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ec2.delete_volume(VolumeId=volume)

    importer = moto.client()
    stub = Stubber(importer)
    task = "import-snap-0123456789abcdef0"
    uploads: list[list[str]] = []

    def upload_present(**kwargs):
        uploads.append([o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])])

    importer.meta.events.register("before-parameter-build.ec2.ImportSnapshot", upload_present)
    stub.add_response(
        "import_snapshot",
        {"ImportTaskId": task},
        expected_params={
            "ClientToken": ANY,
            "Description": ANY,
            "DiskContainer": {"Description": ANY, "Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": ANY}},
            "TagSpecifications": ANY,
        },
    )
    stub.add_response(
        "describe_import_snapshot_tasks",
        {"ImportSnapshotTasks": [{"ImportTaskId": task, "SnapshotTaskDetail": {"Status": "active", "Progress": "42"}}]},
        expected_params={"ImportTaskIds": [task]},
    )
    stub.add_response(
        "describe_import_snapshot_tasks",
        {
            "ImportSnapshotTasks": [
                {"ImportTaskId": task, "SnapshotTaskDetail": {"Status": "completed", "SnapshotId": snapshot}}
            ]
        },
        expected_params={"ImportTaskIds": [task]},
    )
    stub.activate()
    monkeypatch.setattr(Ec2Provider, "import_client", lambda self: importer)

    sent: dict[str, dict] = {}
    client = ec2mod.client("ec2", moto.region, moto.url)

    def capture(params, model, **kwargs):
        sent[model.name] = params

    client.meta.events.register("provide-client-params.ec2.*", capture)
    run = run_for(tmp_path, standin, cloud=moto)
    try:
        instance = launch(target_for(moto, str(hvm), import_bucket=bucket), run)
    finally:
        client.meta.events.unregister("provide-client-params.ec2.*", capture)
    try:
        stub.assert_no_pending_responses()
        assert uploads and uploads[0] == [f"cernvm-fixtures/{instance.name}/{hvm.name}"], "uploaded before the import"
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "the upload is removed once imported"
        registered = sent["RegisterImage"]
        assert (registered["VirtualizationType"], registered["SriovNetSupport"], registered["EnaSupport"]) == (
            "hvm",
            "simple",
            True,
        )
        assert registered["BlockDeviceMappings"] == [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"SnapshotId": snapshot, "DeleteOnTermination": True, "VolumeType": "gp3"},
            },
            {"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 25, "VolumeType": "gp3", "DeleteOnTermination": True}},
        ]
        image = sent["RunInstances"]["ImageId"]
        assert "BlockDeviceMappings" not in sent["RunInstances"], "the image maps the scratch volume already"
        sriov = ec2.describe_image_attribute(ImageId=image, Attribute="sriovNetSupport")["SriovNetSupport"]["Value"]
        assert sriov == "simple"
        kinds = [r.kind for r in run.ledger.entries()]
        assert kinds[:2] == ["snapshot", "image"] and "s3-object" not in kinds
        assert tags_of(ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0])["cvmfx-run"] == run.id
        assert instance.run("true").succeeded
    finally:
        instance.destroy()
    assert_nothing_left(moto, run)
    assert ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [image]}])["Images"] == []
    assert (
        ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": [snapshot]}])["Snapshots"]
        == []
    )


# --- the scenario suite end to end: moto + one stand-in per instance, booted from moto's user data --


def test_scenario_suite_end_to_end_against_moto_with_standins(moto, ami, tmp_path):
    case = "e2e-" + secrets.token_hex(4)
    marker = "SECRET-" + secrets.token_hex(12)
    suite = suite_through_standins(
        tmp_path,
        moto,
        ami,
        {"AWS_SECRET_ACCESS_KEY": marker},
        timeout=600,
        tags={"test-case": case},
        deadlines={"running": 30, "reachable": 120, "login": 60, "ready": 60},
        verification="stand-in",
    )
    assert suite.properties["cernvm_verification"] == "stand-in", "the report says what the cells really ran on"
    assert marker not in suite.output
    assert moto.tagged("test-case", case) == {}, "moto still holds resources of the run"
    instances = [
        i
        for r in moto.client().describe_instances(Filters=[{"Name": "tag:test-case", "Values": [case]}])["Reservations"]
        for i in r["Instances"]
    ]
    assert len(instances) == 2 and all(i["State"]["Name"] == "terminated" for i in instances)


def test_bad_config_in_a_pytest_run_is_one_clear_error(moto, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_it.py").write_text("def test_it(cernvm):\n    pass\n")
    config_file(work / "cernvm.toml", moto, "ami-0123456789abcdef0", tags={"test-case": "bad-ami"})
    result = run_pytest(work, subprocess_env(tmp_path / "state"), "test_it.py")
    output = result.output
    assert result.returncode == 4, output  # the doctor's check stops the session once, before any test
    assert "ami-0123456789abcdef0" in output and "is not visible in eu-west-1" in output, output
    assert "Traceback" not in output
    assert moto.tagged("test-case", "bad-ami") == {}
    assert ledger_entries(tmp_path / "state") == []
