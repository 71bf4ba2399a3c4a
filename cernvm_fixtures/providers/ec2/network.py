"""The network and access a machine needs, as the CernVM EC2 guide makes them (like pycloudlib's ``ec2/vpc.py``).

The minimal VPC (VPC, attached internet gateway, subnet, route table with a default
route), a security group whose only ingress rule is tcp/22 from ``ssh_cidr`` and
the key pair of the run's public key; each recorded before it is created (through a
:class:`~.tags.Recorder`), and torn down in the reverse order. The configured ones
(``subnet_id``, ``security_group_id``, ``key_name``) are checked before anything is.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from ...ledger import Resource
from .aws import AWS, BUSY_TIMEOUT, DESTROY_POLL, client
from .options import Ec2Options
from .tags import Recorder, deleter, find, ids, tag_filters, tag_spec


def check_network(ec2: Any, options: Ec2Options, where: Callable[[str], str], region: str) -> str | None:
    """The VPC of the configured subnet (and check the group and key pair exist); None when we create one.

    ``where(key)`` starts an error message about that target key.
    """
    vpc_id = None
    if options.subnet_id:
        subnets = AWS.call("describe-subnets", ec2.describe_subnets, missing_ok=True, SubnetIds=[options.subnet_id])
        if not subnets or not subnets.get("Subnets"):
            raise ConfigError(f"{where('subnet_id')}: subnet {options.subnet_id} not found in {region}")
        vpc_id = subnets["Subnets"][0]["VpcId"]
    if options.security_group_id:
        group_id = options.security_group_id
        groups = AWS.call(
            "describe-security-groups", ec2.describe_security_groups, missing_ok=True, GroupIds=[group_id]
        )
        if not groups or not groups.get("SecurityGroups"):
            raise ConfigError(f"{where('security_group_id')}: security group {group_id} not found in {region}")
        if groups["SecurityGroups"][0].get("VpcId") != vpc_id:
            raise ConfigError(
                f"{where('security_group_id')}: {group_id} belongs to "
                f"{groups['SecurityGroups'][0].get('VpcId')}, but subnet {options.subnet_id} to {vpc_id}"
            )
    if options.key_name:
        keys = AWS.call("describe-key-pairs", ec2.describe_key_pairs, missing_ok=True, KeyNames=[options.key_name])
        if not keys or not keys.get("KeyPairs"):
            raise ConfigError(f"{where('key_name')}: key pair {options.key_name!r} not found in {region}")
    return vpc_id


def create_network(ec2: Any, recorder: Recorder, options: Ec2Options) -> tuple[str, str]:
    """The documented minimal VPC: VPC, internet gateway, subnet, route table with a default route."""
    vpc = recorder.record("vpc")
    made = AWS.call(
        "create-vpc", ec2.create_vpc, CidrBlock=options.vpc_cidr, TagSpecifications=[tag_spec(vpc, options.tags)]
    )
    vpc_id = made["Vpc"]["VpcId"]
    recorder.created(vpc, id=vpc_id)

    igw = recorder.record("internet-gateway", vpc_id=vpc_id)
    made = AWS.call(
        "create-internet-gateway", ec2.create_internet_gateway, TagSpecifications=[tag_spec(igw, options.tags)]
    )
    igw_id = made["InternetGateway"]["InternetGatewayId"]
    recorder.created(igw, id=igw_id)
    AWS.call("attach-internet-gateway", ec2.attach_internet_gateway, InternetGatewayId=igw_id, VpcId=vpc_id)

    subnet = recorder.record("subnet", vpc_id=vpc_id)
    prefix = max(24, int(options.vpc_cidr.split("/")[1]))
    cidr = next(ipaddress.IPv4Network(options.vpc_cidr).subnets(new_prefix=prefix))
    params: dict[str, Any] = {
        "VpcId": vpc_id,
        "CidrBlock": str(cidr),
        "TagSpecifications": [tag_spec(subnet, options.tags)],
    }
    if options.availability_zone:
        params["AvailabilityZone"] = options.availability_zone
    made = AWS.call("create-subnet", ec2.create_subnet, **params)
    subnet_id = made["Subnet"]["SubnetId"]
    recorder.created(subnet, id=subnet_id)

    table = recorder.record("route-table", vpc_id=vpc_id, client_token=f"{recorder.name}-rtb")
    made = AWS.call(
        "create-route-table",
        ec2.create_route_table,
        VpcId=vpc_id,
        ClientToken=table.data["client_token"],
        TagSpecifications=[tag_spec(table, options.tags)],
    )
    table_id = made["RouteTable"]["RouteTableId"]
    recorder.created(table, id=table_id)
    AWS.call(
        "create-route",
        ec2.create_route,
        RouteTableId=table_id,
        DestinationCidrBlock="0.0.0.0/0",
        GatewayId=igw_id,
    )
    made = AWS.call("associate-route-table", ec2.associate_route_table, RouteTableId=table_id, SubnetId=subnet_id)
    recorder.created(table, association_id=made["AssociationId"])
    return vpc_id, subnet_id


def create_security_group(ec2: Any, recorder: Recorder, options: Ec2Options, vpc_id: str | None, where: str) -> str:
    """A group admitting tcp/22 from ``ssh_cidr`` alone (AWS's default egress rule stays: cvmfs needs HTTP out);
    ``where`` starts the error for a missing ``ssh_cidr``."""
    cidr = options.ssh_cidr
    if cidr is None:  # the options validator requires it; keep the promise even for hand-made options
        raise ConfigError(f"{where}: required when the provider creates the security group")
    group = recorder.record("security-group", vpc_id=vpc_id)
    params: dict[str, Any] = {
        "GroupName": recorder.name,
        "Description": f"cernvm-fixtures {recorder.name}: SSH from {cidr} only",
        "TagSpecifications": [tag_spec(group, options.tags)],
    }
    if vpc_id:
        params["VpcId"] = vpc_id
    made = AWS.call("create-security-group", ec2.create_security_group, **params)
    group_id = made["GroupId"]
    recorder.created(group, id=group_id)
    AWS.call(
        "authorize-security-group-ingress",
        ec2.authorize_security_group_ingress,
        GroupId=group_id,
        IpPermissions=[ssh_permission(cidr)],
    )
    return group_id


def ssh_permission(cidr: str) -> dict[str, Any]:
    """The one ingress rule: tcp/22 from ``cidr``."""
    network = ipaddress.ip_network(cidr)
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    entry = {"Description": "cernvm-fixtures: SSH from the test runner"}
    if network.version == 4:
        rule["IpRanges"] = [{"CidrIp": str(network), **entry}]
    else:
        rule["Ipv6Ranges"] = [{"CidrIpv6": str(network), **entry}]
    return rule


def import_key_pair(ec2: Any, recorder: Recorder, options: Ec2Options, public_key: str) -> str:
    """A key pair of the machine's name holding the run's public key; returns its name."""
    key = recorder.record("key-pair", key_name=recorder.name)
    made = AWS.call(
        "import-key-pair",
        ec2.import_key_pair,
        KeyName=recorder.name,
        PublicKeyMaterial=public_key.encode(),
        TagSpecifications=[tag_spec(key, options.tags)],
    )
    recorder.created(key, id=made.get("KeyPairId"))
    return recorder.name


destroy_security_group = deleter(
    "security group", "describe_security_groups", "SecurityGroups", "GroupId", "delete_security_group"
)
destroy_subnet = deleter("subnet", "describe_subnets", "Subnets", "SubnetId", "delete_subnet")
destroy_vpc = deleter("vpc", "describe_vpcs", "Vpcs", "VpcId", "delete_vpc")


def destroy_route_table(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for table_id in find(resource, ec2, "describe_route_tables", "RouteTables", "RouteTableId"):
        found = AWS.call(f"describe {table_id}", ec2.describe_route_tables, missing_ok=True, RouteTableIds=[table_id])
        for table in (found or {}).get("RouteTables", []):
            for association in table.get("Associations", []):
                if not association.get("Main"):
                    AWS.call(
                        f"disassociate {table_id}",
                        ec2.disassociate_route_table,
                        missing_ok=True,
                        AssociationId=association["RouteTableAssociationId"],
                    )
        delete = functools.partial(ec2.delete_route_table, RouteTableId=table_id)
        AWS.delete_until_free(f"delete route table {table_id}", delete, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)


def destroy_internet_gateway(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for igw_id in find(resource, ec2, "describe_internet_gateways", "InternetGateways", "InternetGatewayId"):
        found = AWS.call(
            f"describe {igw_id}", ec2.describe_internet_gateways, missing_ok=True, InternetGatewayIds=[igw_id]
        )
        for gateway in (found or {}).get("InternetGateways", []):
            for attachment in gateway.get("Attachments", []):
                detach = functools.partial(
                    ec2.detach_internet_gateway, InternetGatewayId=igw_id, VpcId=attachment["VpcId"]
                )
                AWS.delete_until_free(f"detach {igw_id}", detach, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)
        delete = functools.partial(ec2.delete_internet_gateway, InternetGatewayId=igw_id)
        AWS.delete_until_free(f"delete internet gateway {igw_id}", delete, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)


def destroy_key_pair(resource: Resource, region: str, endpoint: str | None) -> None:
    """Only a key pair that is provably ours: one carrying this entry's tags, or the id the ledger holds. A key
    pair of the recorded name that another run holds (our import was refused as a duplicate) is left alone."""
    ec2 = client("ec2", region, endpoint)
    tagged = AWS.call("describe key pairs", ec2.describe_key_pairs, Filters=tag_filters(resource)).get("KeyPairs", [])
    recorded = ids(resource)
    if recorded:
        by_id = AWS.call("describe key pairs", ec2.describe_key_pairs, missing_ok=True, KeyPairIds=recorded)
        tagged += (by_id or {}).get("KeyPairs", [])
    for name in dict.fromkeys(k["KeyName"] for k in tagged):
        AWS.call(f"delete key pair {name}", ec2.delete_key_pair, missing_ok=True, KeyName=name)
