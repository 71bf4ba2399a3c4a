"""The network validators: SSH source ranges and interface names."""

from __future__ import annotations

import ipaddress

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.netcheck import interface_name, ssh_cidr

CLOUDS = {
    "ec2": {"image": "ami-0123456789abcdef0", "region": "eu-west-1"},
    "openstack": {"image": "CernVM 4 - Bootloader v2020.04-1 [2020-04-01]"},
    "gce": {"image": "x", "zone": "europe-west1-b"},
    "azure": {"image": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/images/i"},
}


@pytest.mark.parametrize(
    "value", ["203.0.113.7/32", "203.0.113.0/24", "203.0.113.7", "2001:db8::1/128", "2001:db8::/48"]
)
def test_narrow_ranges_pass(value):
    assert ssh_cidr(value) == str(ipaddress.ip_network(value))


@pytest.mark.parametrize("value", ["0.0.0.0/1", "10.0.0.0/8", "203.0.112.0/23", "::/1", "2001:db8::/32"])
def test_wide_ranges_are_refused_naming_the_way_out(value):
    with pytest.raises(ValueError, match=r"admits \d+ addresses to SSH.*allow_wide_ssh = true"):
        ssh_cidr(value)
    assert ssh_cidr(value, allow_wide=True) == str(ipaddress.ip_network(value))


@pytest.mark.parametrize("value", ["0.0.0.0/0", "::/0"])
def test_the_whole_internet_is_refused_even_when_wide_is_allowed(value):
    with pytest.raises(ValueError, match="not the whole internet"):
        ssh_cidr(value, allow_wide=True)


@pytest.mark.parametrize("value", ["10.0.0.1/8", "not-an-address"])
def test_malformed_networks_are_refused(value):
    with pytest.raises(ValueError, match="IPv4/IPv6 address or network"):
        ssh_cidr(value)


@pytest.mark.parametrize("value", ["eth0", "ens3", "enp0s3", "br-lan.10", "wlan_1"])
def test_interface_names_pass(value):
    assert interface_name(value) == value


@pytest.mark.parametrize("value", ["", "eth0; reboot", "$(id)", "a b", "eth0/1", "eth0:1", "x" * 16, "..", "-eth0"])
def test_anything_else_is_not_an_interface_name(value):
    with pytest.raises(ValueError, match="is not a network interface name"):
        interface_name(value)


def test_a_profile_with_a_shell_command_as_interface_is_refused_at_load(tmp_path):
    from cernvm_fixtures import profile
    from cernvm_fixtures.errors import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[network]\ninterface = [{ expect = "eth0 && reboot", kind = "vm" }]\n')
    with pytest.raises(ConfigError, match=r"bad.toml: network.interface.*is not a network interface name"):
        profile.load(str(path))


@pytest.mark.parametrize("provider", sorted(CLOUDS))
def test_every_cloud_refuses_a_wide_ssh_source_at_load_unless_told(provider):
    raw = {"provider": provider, "profile": "appliance", "ssh_cidr": "10.0.0.0/8", **CLOUDS[provider]}
    with pytest.raises(ConfigError, match=r"targets\.t\.ssh_cidr: .*10\.0\.0\.0/8 admits 16777216 addresses.*"):
        config.parse({"targets": {"t": raw}}, "cernvm.toml")
    loaded = config.parse({"targets": {"t": {**raw, "allow_wide_ssh": True}}}, "cernvm.toml").targets["t"]
    assert loaded.options.ssh_cidr == "10.0.0.0/8"
