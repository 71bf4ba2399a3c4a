"""A machine's network on Azure: a virtual network with one subnet (unless the target names a subnet), a network
security group admitting tcp/22 from ``ssh_cidr`` alone, a public IP address (``address = "public"``) and the
network interface joining them.

Functions take the network client, the options and the machine's :class:`~.tags.Recorder`, never the provider.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .clients import azure_module, create_recorded
from .options import AzureOptions
from .tags import Recorder


def create_network(machine: Recorder, network: Any, options: AzureOptions) -> str:
    """A virtual network of ``vnet_cidr`` with one subnet (its first /24, or the whole network if smaller); returns
    the subnet's id."""
    models = azure_module("azure.mgmt.network.models")
    prefix = max(24, int(options.vnet_cidr.split("/")[1]))
    subnet_cidr = str(next(ipaddress.IPv4Network(options.vnet_cidr).subnets(new_prefix=prefix)))
    subnet = models.Subnet(name="default", properties=models.SubnetPropertiesFormat(address_prefix=subnet_cidr))
    properties = models.VirtualNetworkPropertiesFormat(
        address_space=models.AddressSpace(address_prefixes=[options.vnet_cidr]), subnets=[subnet]
    )
    return create_recorded(machine, network, options, "virtual-network", properties=properties) + "/subnets/default"


def ssh_rule(cidr: str) -> Any:
    """The security group's one rule: inbound tcp/22 from ``cidr``."""
    models = azure_module("azure.mgmt.network.models")
    return models.SecurityRule(
        name="ssh-from-runner",
        properties=models.SecurityRulePropertiesFormat(
            description="cernvm-fixtures: SSH from the test runner",
            protocol="Tcp",
            source_port_range="*",
            destination_port_range="22",
            source_address_prefix=cidr,
            destination_address_prefix="*",
            access="Allow",
            priority=1000,
            direction="Inbound",
        ),
    )


def create_nic(machine: Recorder, network: Any, options: AzureOptions, subnet_id: str) -> str:
    """The security group, the public IP address (``address = "public"``) and the network interface in
    ``subnet_id`` with both; returns the interface's id."""
    models = azure_module("azure.mgmt.network.models")
    rules = models.NetworkSecurityGroupPropertiesFormat(security_rules=[ssh_rule(options.ssh_cidr)])
    nsg_id = create_recorded(machine, network, options, "security-group", properties=rules)
    public = None
    if options.address == "public":
        sku = models.PublicIPAddressSku(name="Standard")
        static = models.PublicIPAddressPropertiesFormat(public_ip_allocation_method="Static")
        public = models.PublicIPAddress(
            id=create_recorded(machine, network, options, "public-ip", sku=sku, properties=static)
        )
    config = models.NetworkInterfaceIPConfiguration(
        name="ipconfig1",
        properties=models.NetworkInterfaceIPConfigurationPropertiesFormat(
            subnet=models.Subnet(id=subnet_id), public_ip_address=public, primary=True
        ),
    )
    properties = models.NetworkInterfacePropertiesFormat(
        ip_configurations=[config], network_security_group=models.NetworkSecurityGroup(id=nsg_id)
    )
    return create_recorded(machine, network, options, "network-interface", properties=properties)
