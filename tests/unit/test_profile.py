"""Profiles: shipped ones load, rules resolve by traits, errors name file and key."""

import pytest

from cernvm_fixtures import profile
from cernvm_fixtures.errors import ConfigError


@pytest.mark.parametrize("name", profile.shipped())
def test_shipped_profiles_load(name):
    loaded = profile.load(name)
    assert loaded.name == name and loaded.ready.command


def test_shipped_profiles_cover_the_images():
    assert {"appliance", "cernvm4", "cernvm5"} <= set(profile.shipped())


def test_rules_first_match_wins(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "p"\n[network]\ndriver = [\n'
        '  { provider = "ec2", instance_type = ["t2.*", "m3.*"], expect = "vif" },\n'
        '  { provider = "ec2", expect = "ena" },\n'
        '  { provider = "docker", expect = false, why = "containers share the host network" },\n'
        '  { provider = ["kvm", "openstack"], expect = "virtio_net" },\n'
        "]\n"
    )
    p = profile.load(str(path))
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "t2.micro"}).value == "vif"
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "c5.large"}).value == "ena"
    assert p.expect("network.driver", {"provider": "ec2"}).value == "ena"
    assert p.expect("network.driver", {"provider": "openstack"}).value == "virtio_net"
    skipped = p.expect("network.driver", {"provider": "docker"})
    assert skipped.value is None and skipped.why == "containers share the host network"
    missing = p.expect("network.driver", {"provider": "azure"})
    assert missing.value is None and "no rule for network.driver" in missing.why and "provider=azure" in missing.why


def test_unset_expectation_says_so():
    p = profile.load("cernvm5")
    assert p.expect("scratch.version_file", {"provider": "kvm"}).why.endswith("sets no scratch.version_file")


def test_appliance_profile_expectations():
    p = profile.load("appliance")
    traits = {"provider": "kvm", "kind": "vm"}
    assert p.expect("network.driver", traits).value == "virtio_net"
    assert "cvmfs_repos=cernvm-prod.cern.ch" in p.expect("kernel.cmdline", traits).value


def test_cernvm4_network_driver_per_ec2_instance_type():
    p = profile.load("cernvm4")
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "m5.large"}).value == "ena"
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "t2.small"}).value == "vif"
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "c4.xlarge"}).value == "ixgbevf"
    assert p.expect("network.driver", {"provider": "azure"}).value == "hv_netvsc"
    assert p.expect("network.driver", {"provider": "gce"}).value == "virtio_net"


def test_errors_name_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[kernel]\nrelease = 3\nfoo = 1\n')
    with pytest.raises(ConfigError) as e:
        profile.load(str(path))
    message = str(e.value)
    assert f"{path}: kernel.release: expected a valid string or a valid list (got 3)" in message
    assert f"{path}: kernel.foo: unknown key" in message


def test_unknown_profile_lists_shipped_ones():
    with pytest.raises(ConfigError, match="shipped profiles are appliance, cernvm4, cernvm5"):
        profile.load("cernvm3")
