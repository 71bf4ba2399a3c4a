"""Profiles: shipped ones load, rules resolve by traits, errors name file and key."""

import re
from pathlib import Path

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


VM = {"kind": "vm"}


def _matches_words(patterns, words):
    import fnmatch

    return [p for p in patterns if not fnmatch.filter(words, p)]


# The command line of the µCernVM ISO (cernvm-micro isolinux.cfg, bootloader 2021.05-1), with the values
# of cvmfs_server/cvmfs_cdn shortened: the unit fixture for the cernvm4 command-line rules.
ISOLINUX = (
    "root=first noresume crashkernel=1M@16M divider=10 selinux=0 consoleblank=0 log_buf_len=4M cernvm_path=cvm4 "
    "cvmfs_repos=cernvm-prod.cern.ch cvmfs_server=cvmfs-stratum-one.cern.ch cvmfs_cdn=cvmfs-s1.example "
    "cvmfs_repository_tag=HEAD4 quiet systemd.show_status=1 loglevel=3"
).split()
AZURE = [w for w in ISOLINUX if w not in ("quiet", "loglevel=3")] + [
    "console=ttyS0",
    "earlyprintk=ttyS0",
    "rootdelay=300",
    "numa=off",
]


@pytest.mark.parametrize(
    "provider,cmdline",
    [
        ("kvm", ISOLINUX),
        ("virtualbox", ISOLINUX),
        ("openstack", ISOLINUX),
        ("ec2", ISOLINUX + ["console=ttyS0"]),
        ("gce", ISOLINUX + ["console=ttyS0"]),
        ("azure", AZURE),
    ],
)
def test_cernvm4_cmdline_per_format(provider, cmdline):
    wanted = profile.load("cernvm4").expect("kernel.cmdline", {"provider": provider, **VM}).value
    assert _matches_words(wanted, cmdline) == []
    assert "cvmfs_repository_tag=HEAD4" in wanted and "cvmfs_server=*" in wanted


def test_cernvm4_cmdline_rules_can_fail():
    p = profile.load("cernvm4")
    ec2 = p.expect("kernel.cmdline", {"provider": "ec2", **VM}).value
    assert _matches_words(ec2, ISOLINUX) == ["console=ttyS0"], "an ISO command line is not an EC2 hvm one"
    assert "quiet" not in p.expect("kernel.cmdline", {"provider": "azure", **VM}).value
    no_tag = [w for w in ISOLINUX if w != "cvmfs_repository_tag=HEAD4"]
    kvm = p.expect("kernel.cmdline", {"provider": "kvm"}).value
    assert _matches_words(kvm, no_tag) == ["cvmfs_repository_tag=HEAD4"]
    arm = p.expect("kernel.cmdline", {"provider": "kvm", "arch": "aarch64"}).value
    assert "cvmfs_repos=cernvm-aarch64.cern.ch" in arm and "cernvm_path=cvm4-aarch64" in arm


@pytest.mark.parametrize(
    "release,ok",
    [
        ("4.14.232-19.cernvm.x86_64", True),
        ("5.10.50-3.cernvm.aarch64", True),
        ("6.1.0-27-amd64", False),
        ("5.14.0-427.13.1.el9_4.x86_64", False),
    ],
)
def test_cernvm4_kernel_release(release, ok):
    import re

    pattern = profile.load("cernvm4").expect("kernel.release", {"provider": "kvm", **VM}).value
    assert bool(re.match(pattern, release)) is ok


@pytest.mark.parametrize(
    "release,ok",
    [
        ("5.14.0-427.13.1.el9_4.x86_64", True),
        ("5.14.0-70.13.1.el9_0.aarch64", True),
        ("5.14.0-362.el9.x86_64", True),
        ("4.14.232-19.cernvm.x86_64", False),
        ("6.1.0-27-amd64", False),
    ],
)
def test_cernvm5_kernel_release_is_the_el9_distro_kernel(release, ok):
    import re

    pattern = profile.load("cernvm5").expect("kernel.release", {"provider": "kvm", **VM}).value
    assert bool(re.match(pattern, release)) is ok


def test_cernvm4_scratch_root_and_context_layout():
    p = profile.load("cernvm4")
    traits = {"provider": "kvm", **VM}
    assert p.expect("scratch.files", traits).value == ["/mnt/.rw/aux/ucernvm-version", "/mnt/.rw/aux/cvmfs_snapshot"]
    assert p.expect("root.fstype", traits).value == "aufs"
    assert p.expect("root.lower", traits).value == "/mnt/.ro/cvm4"
    assert p.expect("root.upper", traits).value == "/mnt/.rw/persistent"
    assert p.expect("context.ucontext_file", traits).value == "/mnt/.rw/context/ucontext"
    assert p.expect("root.fstype", {"kind": "container"}).value is None


@pytest.mark.parametrize(
    "provider,recorded,ok",
    [
        ("kvm", "ConfigDrive", True),
        ("virtualbox", "ConfigDrive", True),
        ("ec2", "EC2", True),
        ("gce", "GCE", True),
        ("azure", "Azure", True),
        ("openstack", "ConfigDrive", True),
        ("openstack", "OpenStack", True),
        ("kvm", "NoCloud", False),
        ("ec2", "ConfigDrive", False),
        ("openstack", "EC2", False),
    ],
)
def test_cernvm4_context_source_per_provider(provider, recorded, ok):
    import re

    pattern = profile.load("cernvm4").expect("context.source", {"provider": provider, **VM}).value
    assert bool(re.fullmatch(pattern, recorded)) is ok


def _ready(tmp_path, ucontext, marker):
    """Run the cernvm4 ready command against a fake root: (ucontext present?, marker present?)."""
    import subprocess

    command = profile.load("cernvm4").expect("ready.command", VM).value
    root = tmp_path / "root"
    (root / "mnt/.rw/context").mkdir(parents=True)
    if ucontext:
        (root / "mnt/.rw/context/ucontext").write_text("cvmfs_branch=x\n")
    if marker:
        (root / marker.lstrip("/")).parent.mkdir(parents=True)
        (root / marker.lstrip("/")).write_text("")
    rooted = command.replace("/mnt/", f"{root}/mnt/").replace("/var/", f"{root}/var/")
    return subprocess.run(["sh", "-c", rooted]).returncode == 0


def test_cernvm4_ready_without_user_data_does_not_wait_for_contextualization(tmp_path):
    assert _ready(tmp_path / "a", ucontext=False, marker=None), "no ucontext: amiconfig/cloud-init never run"
    assert not _ready(tmp_path / "b", ucontext=True, marker=None), "ucontext but no marker: not ready yet"
    assert _ready(tmp_path / "c", ucontext=True, marker="/var/lib/amiconfig/user.done")
    assert _ready(tmp_path / "d", ucontext=True, marker="/var/lib/cloud/instance/boot-finished")


@pytest.mark.parametrize(
    "traits,driver",
    [
        ({"provider": "openstack"}, "virtio_net"),
        ({"provider": "gce"}, "virtio_net"),
        ({"provider": "azure"}, "hv_netvsc"),
        ({"provider": "virtualbox", "nic_model": "virtio"}, "virtio_net"),
        ({"provider": "virtualbox", "nic_model": "e1000"}, "e1000"),
        ({"provider": "kvm"}, "virtio_net"),
        ({"provider": "ec2", "instance_type": "c4.large"}, "ixgbevf"),
    ],
)
def test_cernvm4_nic_table(traits, driver):
    assert profile.load("cernvm4").expect("network.driver", {**traits, **VM}).value == driver


def test_cernvm4_shared_folders_by_provider():
    p = profile.load("cernvm4")
    assert p.expect("shared.mechanism", {"provider": "kvm", **VM}).value == "sshfs"
    assert p.expect("shared.mechanism", {"provider": "virtualbox", **VM}).value == "vboxsf"
    assert p.expect("shared.mechanism", {"provider": "ec2", **VM}).value is None


def test_cernvm5_container_and_vm():
    p = profile.load("cernvm5")
    container = {"provider": "docker", "kind": "container"}
    assert p.expect("cvmfs.repositories", container).value == ["cernvm-five.cern.ch"]
    assert p.expect("ready.command", container).value == "test -d /cvmfs/cernvm-five.cern.ch"
    assert p.expect("scratch.mountpoint", {"provider": "kvm", **VM}).value is None, "no µCernVM scratch disk"
    # nothing in CernVM 5 mounts a share by itself, and the KVM provider makes no virtiofs device
    assert p.expect("shared.mechanism", {"provider": "kvm", **VM}).value is None
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "t2.medium", **VM}).value == "vif"
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "c4.large", **VM}).value == "ixgbevf"
    assert p.expect("network.driver", {"provider": "ec2", "instance_type": "m6i.large", **VM}).value == "ena"


def test_kvm_nic_model_decides_the_driver():
    for name in ("cernvm4", "cernvm5", "appliance"):
        p = profile.load(name)
        assert p.expect("network.driver", {"provider": "kvm", "nic_model": "e1000", **VM}).value == "e1000", name
        assert p.expect("network.driver", {"provider": "kvm", "nic_model": "virtio", **VM}).value == "virtio_net"


def test_first_boot_needs_are_declared_like_cernvm4():
    """The appliance states the same needs as CernVM 4: its OS over the network at boot, and first-boot deadlines."""
    c4, app = profile.load("cernvm4"), profile.load("appliance")
    vm = {"provider": "kvm", "kind": "vm"}
    assert c4.boots_over_network(vm) and app.boots_over_network(vm)
    parrot = {"provider": "docker", "kind": "container", "cvmfs_mode": "parrot"}
    assert c4.boots_over_network(parrot), "parrot fetches cernvm-prod.cern.ch"
    assert not app.boots_over_network(parrot), "the appliance's Docker image carries its repository"
    assert c4.boot.deadlines.reachable and c4.boot.deadlines.reachable >= 300
    assert app.boot.deadlines.reachable and app.boot.deadlines.ready


def test_every_cernvm_rule_cites_a_source():
    from importlib import resources

    for name in ("cernvm4", "cernvm5"):
        text = (resources.files("cernvm_fixtures") / "profiles" / f"{name}.toml").read_text()
        assert "Sources" in text and "[inferred]" in text, name


CHECKLIST = (
    "errors.logs",
    "time.skew",
    "time.daemon",
    "shm.fstype",
    "ssh.password_authentication",
    "ssh.root_passwords",
    "power.button_deadline",
)
"""The keys of the release checklist's scenarios."""


def test_checklist_expectations_of_the_appliance_and_cernvm4():
    app, c4 = profile.load("appliance"), profile.load("cernvm4")
    for p in (app, c4):
        for key in CHECKLIST:
            assert p.expect(key, VM).value not in (None, [], {}), (p.name, key)
    assert app.expect("time.daemon", VM).value == ["ntpd"] == c4.expect("time.daemon", VM).value
    assert app.expect("ssh.password_authentication", VM).value == "no", "dropbear -s"
    assert c4.expect("ssh.password_authentication", VM).value == "yes", "sshd_config.cernvm: PasswordAuthentication yes"
    assert "journalctl -b -p err" in c4.expect("errors.logs", VM).value["journal"]
    assert set(app.expect("errors.logs", VM).value) == {"ulogs", "kernel"}


@pytest.mark.parametrize("name", ["appliance", "cernvm4", "cernvm5"])
def test_checklist_in_a_container_says_why_not(name):
    """A container keeps its /dev/shm and the host's clock; it has no boot log, no time daemon, no SSH, no power
    button: each of those is skipped with a reason."""
    container = {"kind": "container", "provider": "docker"}
    p = profile.load(name)
    assert p.expect("shm.fstype", container).value == "tmpfs"
    assert p.expect("time.skew", container).value == 5
    for key in ("errors.logs", "time.daemon", "power.button_deadline"):
        found = p.expect(key, container)
        assert found.value is None and found.why and "sets no" not in found.why, (name, key)


def test_checklist_values_are_validated(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[ssh]\npassword_authentication = "maybe"\n[power]\nbutton_deadline = "soon"\n')
    with pytest.raises(ConfigError) as err:
        profile.load(str(path))
    assert "ssh.password_authentication" in str(err.value) and "power.button_deadline" in str(err.value)


def test_appliance_harmless_lines_are_regular_expressions_matching_their_example():
    harmless = profile.load("appliance").expect("errors.harmless", VM).value
    line = "<3>[    0.020000] ..MP-BIOS bug: 8254 timer not connected to IO-APIC"
    assert any(re.search(pattern, line) for pattern in harmless)


@pytest.mark.parametrize("name", ["cernvm4", "cernvm5"])
def test_workloads_of_a_real_cernvm_are_the_release_engineer_s_to_name(name):
    """The checklist names no commands: the scenario is skipped with that reason, not passed on an empty list."""
    found = profile.load(name).expect("workloads.commands", VM)
    assert found.value is None and "names its workloads" in found.why


def test_appliance_workload_reads_its_program_and_data_from_the_repository():
    commands = profile.load("appliance").expect("workloads.commands", {"kind": "container", "provider": "docker"})
    assert set(commands.value) == {"histogram"} and "/cvmfs/cernvm-prod.cern.ch/setup.sh" in commands.value["histogram"]


def test_appliance_histogram_workload_runs_on_the_repository_files(tmp_path):
    """The workload's program on its data gives exactly the expected histogram (so the scenario fails only where the
    repository is missing or broken), and a corrupt event file fails it."""
    import shutil
    import subprocess
    from importlib import resources

    repository = resources.files("cernvm_fixtures") / "appliance" / "files" / "repository"
    analysis = Path(str(repository)) / "analysis"
    run = [shutil.which("sh") or "/bin/sh", str(analysis / "bin" / "cvmfx-histogram")]
    done = subprocess.run([*run, str(analysis / "data" / "events.txt")], capture_output=True, text=True, check=True)
    assert done.stdout == (analysis / "data" / "expected.txt").read_text()
    corrupt = tmp_path / "events.txt"
    corrupt.write_text("42.0\nnot-a-number\n")
    failed = subprocess.run([*run, str(corrupt)], capture_output=True, text=True)
    assert failed.returncode == 1 and "bad event: not-a-number" in failed.stderr


def test_checklist_users_scratch_sizes_and_protected_context():
    vm, container = {"provider": "kvm", "kind": "vm"}, {"provider": "docker", "kind": "container"}
    for name, repomgr_password in (("appliance", False), ("cernvm4", True)):
        p = profile.load(name)
        users = {u.name: u for u in p.expect("users.created", vm).value}
        assert (users["repomgr"].group, users["repomgr"].key, users["repomgr"].password) == (
            "repomgr",
            False,
            repomgr_password,
        )
        assert users["cvmfx"].key and not users["cvmfx"].password
        assert p.expect("users.created", container).value is None
        rule = p.expect("scratch.partitions", vm).value
        assert (rule.default_size, rule.slack) == (20480, 2)
        assert p.expect("scratch.disk_sizes", vm).value == {"small": 20, "large": 100}
        protected = p.expect("protected_context.supported", vm)
        assert protected.value is None and "CernVM Online server" in protected.why
    assert profile.load("appliance").expect("upgrade.previous", vm).value == "appliance:previous"
    assert "copy of this profile" in profile.load("cernvm4").expect("upgrade.previous", vm).why
    assert profile.load("appliance").expect("upgrade.previous", container).value is None


def test_checklist_keys_refuse_bad_values(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\n[users]\ncreated = [{ name = "a", group = "a", key = "maybe", password = false }]\n'
        "[scratch]\npartitions = { default_size = 0 }\ndisk_sizes = { tiny = 1 }\n"
    )
    with pytest.raises(ConfigError) as e:
        profile.load(str(path))
    message = str(e.value)
    assert "users.created" in message and "maybe" in message
    assert "scratch.partitions" in message and "greater than 0" in message
    assert "scratch.disk_sizes" in message and "tiny" in message
