"""The network a machine needs, as the CernVM EC2 guide makes it (like pycloudlib's ``ec2/vpc.py``).

The minimal VPC (VPC, attached internet gateway, subnet, route table with a default
route) and a security group whose only ingress rule is tcp/22 from ``ssh_cidr``;
each recorded before it is created, and torn down in the reverse order.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...ledger import Resource
from .aws import call, call_until_free, client
from .tags import deleter, find

if TYPE_CHECKING:
    from ..base import Machine
    from .provider import Ec2Provider


def create_network(provider: Ec2Provider, machine: Machine, ec2: Any) -> tuple[str, str]:
    """The documented minimal VPC: VPC, internet gateway, subnet, route table with a default route."""
    o = provider.options
    vpc = provider.entry(machine, "vpc")
    made = call("create-vpc", ec2.create_vpc, CidrBlock=o.vpc_cidr, TagSpecifications=[provider.tag_spec(vpc)])
    vpc_id = made["Vpc"]["VpcId"]
    provider.created(vpc, id=vpc_id)

    igw = provider.entry(machine, "internet-gateway", vpc_id=vpc_id)
    made = call("create-internet-gateway", ec2.create_internet_gateway, TagSpecifications=[provider.tag_spec(igw)])
    igw_id = made["InternetGateway"]["InternetGatewayId"]
    provider.created(igw, id=igw_id)
    call("attach-internet-gateway", ec2.attach_internet_gateway, InternetGatewayId=igw_id, VpcId=vpc_id)

    subnet = provider.entry(machine, "subnet", vpc_id=vpc_id)
    cidr = next(ipaddress.IPv4Network(o.vpc_cidr).subnets(new_prefix=max(24, int(o.vpc_cidr.split("/")[1]))))
    params: dict[str, Any] = {"VpcId": vpc_id, "CidrBlock": str(cidr), "TagSpecifications": [provider.tag_spec(subnet)]}
    if o.availability_zone:
        params["AvailabilityZone"] = o.availability_zone
    made = call("create-subnet", ec2.create_subnet, **params)
    subnet_id = made["Subnet"]["SubnetId"]
    provider.created(subnet, id=subnet_id)

    table = provider.entry(machine, "route-table", vpc_id=vpc_id, client_token=f"{machine.name}-rtb")
    made = call(
        "create-route-table",
        ec2.create_route_table,
        VpcId=vpc_id,
        ClientToken=table.data["client_token"],
        TagSpecifications=[provider.tag_spec(table)],
    )
    table_id = made["RouteTable"]["RouteTableId"]
    provider.created(table, id=table_id)
    call(
        "create-route",
        ec2.create_route,
        RouteTableId=table_id,
        DestinationCidrBlock="0.0.0.0/0",
        GatewayId=igw_id,
    )
    made = call("associate-route-table", ec2.associate_route_table, RouteTableId=table_id, SubnetId=subnet_id)
    provider.created(table, association_id=made["AssociationId"])
    return vpc_id, subnet_id


def create_security_group(provider: Ec2Provider, machine: Machine, ec2: Any, vpc_id: str | None) -> str:
    """A group admitting tcp/22 from ``ssh_cidr`` alone (AWS's default egress rule stays: cvmfs needs HTTP out)."""
    o = provider.options
    cidr = o.ssh_cidr
    if cidr is None:  # the options validator requires it; keep the promise even for hand-made options
        raise ConfigError(f"{provider.target.where('ssh_cidr')}: required when the provider creates the security group")
    group = provider.entry(machine, "security-group", vpc_id=vpc_id)
    params: dict[str, Any] = {
        "GroupName": machine.name,
        "Description": f"cernvm-fixtures {machine.name}: SSH from {cidr} only",
        "TagSpecifications": [provider.tag_spec(group)],
    }
    if vpc_id:
        params["VpcId"] = vpc_id
    made = call("create-security-group", ec2.create_security_group, **params)
    group_id = made["GroupId"]
    provider.created(group, id=group_id)
    call(
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


destroy_security_group = deleter(
    "security group", "describe_security_groups", "SecurityGroups", "GroupId", "delete_security_group"
)
destroy_subnet = deleter("subnet", "describe_subnets", "Subnets", "SubnetId", "delete_subnet")
destroy_vpc = deleter("vpc", "describe_vpcs", "Vpcs", "VpcId", "delete_vpc")


def destroy_route_table(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for table_id in find(resource, ec2, "describe_route_tables", "RouteTables", "RouteTableId"):
        found = call(f"describe {table_id}", ec2.describe_route_tables, missing_ok=True, RouteTableIds=[table_id])
        for table in (found or {}).get("RouteTables", []):
            for association in table.get("Associations", []):
                if not association.get("Main"):
                    call(
                        f"disassociate {table_id}",
                        ec2.disassociate_route_table,
                        missing_ok=True,
                        AssociationId=association["RouteTableAssociationId"],
                    )
        call_until_free(f"delete route table {table_id}", ec2.delete_route_table, RouteTableId=table_id)


def destroy_internet_gateway(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for igw_id in find(resource, ec2, "describe_internet_gateways", "InternetGateways", "InternetGatewayId"):
        found = call(f"describe {igw_id}", ec2.describe_internet_gateways, missing_ok=True, InternetGatewayIds=[igw_id])
        for gateway in (found or {}).get("InternetGateways", []):
            for attachment in gateway.get("Attachments", []):
                call_until_free(
                    f"detach {igw_id}", ec2.detach_internet_gateway, InternetGatewayId=igw_id, VpcId=attachment["VpcId"]
                )
        call_until_free(f"delete internet gateway {igw_id}", ec2.delete_internet_gateway, InternetGatewayId=igw_id)
