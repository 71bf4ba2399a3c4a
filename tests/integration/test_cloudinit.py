"""Real cloud-init accepts the user data the harness sends: the cloud-init test image (tests/images/cloudinit.py:
Debian 12, cloud-init 22.4 under CernVM 4's settings, a live ISO whose kernel line has no console=) booted by the
kvm provider under TCG, with the harness's defaults.

The appliance reads the harness's cloud-config with its own awk; here cloud-init itself must find the context
ISO by its label (config-2, the ConfigDrive datasource), install root's ``ssh_authorized_keys`` and the host key
handed over in ``ssh_keys`` (which the harness then verifies: ``host_key = "context"``), finish (``boot-finished``)
and report no error for the user data, while the serial console stays silent. Then the scenario suite runs on it:
what applies to an image without µCernVM (kernel, context, network driver) passes, the rest is skipped with the
profile's reason.

Build and boot times are printed (``-rP`` shows them).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from cernvm_fixtures import config
from cernvm_fixtures.context import UserData
from cernvm_fixtures.instance import Instance, launch
from cernvm_fixtures.run import Run

from ..helpers import ROOT, domains_under, ledger_entries, run_suite, subprocess_env, write_work
from ..images import cloudinit

PROFILE = ROOT / "tests" / "images" / "cloudinit.toml"
KEY_BLOCK = "-----BEGIN SSH HOST KEY KEYS-----"
IMAGE_WARNING = "Invalid cloud-config provided"
"""cloud-init 22.4's schema warning for the merged configuration: CernVM's own ``users: []`` (the schema wants a
non-empty list) sets it off on every boot; it does not say which file (``log_details=False``), so the tests
validate the user data and the image's settings apart."""


@pytest.fixture(scope="session")
def cloudinit_image() -> cloudinit.CloudInitImage:
    """The image, from the cache or built now (several minutes on a fresh machine: debootstrap and apt)."""
    try:
        image = cloudinit.build()
    except cloudinit.ImageBuildError as e:
        pytest.fail(f"cannot build the cloud-init test image: {e}", pytrace=False)
    built = "taken from the cache" if image.built_in is None else f"built in {image.built_in:.0f} s"
    print(f"cloud-init test image {image.iso} ({image.iso.stat().st_size / 2**20:.0f} MiB), {built}")
    return image


def target_table(image: cloudinit.CloudInitImage) -> dict:
    # domain_type qemu: KVM guests hang on these (nested) hosts; host_key stays the default ("context")
    return {"provider": "kvm", "domain_type": "qemu", "image": str(image.iso), "profile": str(PROFILE)}


@contextmanager
def booted(image: cloudinit.CloudInitImage, state: Path, user_data: UserData | None = None) -> Iterator[Instance]:
    """One instance of the image with the harness's defaults; destroyed afterwards, nothing may be left."""
    target = config.parse({"targets": {"cloudinit": target_table(image)}}, "cloud-init test image").targets["cloudinit"]
    run = Run(state=state)
    instance = launch(target, run, user_data=user_data)
    try:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in instance.timings.items())
        print(f"{instance.name}: ready {instance.ready_after:.0f} s after launch ({steps})")
        yield instance
    finally:
        instance.destroy()
        run.finish()
    assert domains_under(state) == [], "domains left behind"
    assert ledger_entries(state) == [], "ledger entries left behind"


def sh(instance: Instance, command: str) -> str:
    result = instance.run(command, timeout=120)
    assert result.succeeded, f"{command!r} exited {result.exit_status}: {result.stderr.strip()}"
    return result.stdout


def host_key_offered(instance: Instance, key_types: list[str]) -> str | None:
    """The host key (``type base64``) the instance's SSH server presents to a client accepting only ``key_types``,
    None if it holds no key of those types."""
    host, port = instance.machine.address()
    with socket.create_connection((host, port), timeout=30) as sock:
        client = paramiko.Transport(sock)
        client.set_log_channel(PROBE_LOG)  # "no acceptable host key" is what the probe looks for, not an error
        logging.getLogger(PROBE_LOG).setLevel(logging.CRITICAL)
        try:
            client.get_security_options().key_types = key_types
            try:
                client.start_client(timeout=30)
            except paramiko.SSHException as e:
                if "no acceptable host key" in str(e):
                    return None
                raise
            key = client.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"
        finally:
            client.close()


PROBE_LOG = "paramiko.transport.host-key-probe"
RSA = ["rsa-sha2-512", "rsa-sha2-256"]
"""paramiko 5 has no ssh-rsa (SHA-1) signatures any more; OpenSSH 9.2 signs with these."""
ECDSA = ["ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]


def cloud_init_problems(instance: Instance) -> list[str]:
    """cloud-init's own account of the boot: status, the errors of every stage, WARNING/ERROR log lines."""
    status = instance.run("cloud-init status --long")
    problems = [] if status.succeeded and "status: done" in status.stdout else [f"status: {status.stdout.strip()}"]
    result = json.loads(sh(instance, "cat /run/cloud-init/result.json"))
    problems += [f"result.json: {e}" for e in result["v1"]["errors"]]
    stages = json.loads(sh(instance, "cat /run/cloud-init/status.json"))["v1"]
    problems += [
        f"{name}: {e}" for name, stage in stages.items() if isinstance(stage, dict) for e in stage.get("errors", [])
    ]
    log = sh(instance, "grep -E '\\[(WARNING|ERROR|CRITICAL)\\]' /var/log/cloud-init.log || true")
    problems += [line for line in log.splitlines() if IMAGE_WARNING not in line]
    return problems


def test_cloud_init_takes_the_harness_user_data(cloudinit_image, tmp_path):
    with booted(cloudinit_image, tmp_path / "state") as vm:
        context = vm.context
        assert context.host_key is not None, 'host_key = "context" (the default) hands the instance a host key'

        # the context ISO was found by its label, by the ConfigDrive datasource (not as a NoCloud seed)
        datasource = sh(vm, "cat /var/lib/cloud/instance/datasource").strip()
        assert datasource.startswith("DataSourceConfigDrive: "), datasource
        data = json.loads(sh(vm, "cat /run/cloud-init/instance-data.json"))["v1"]
        device = re.fullmatch(r"config-disk \((/dev/\S+)\)", data["subplatform"])
        assert data["platform"] == "configdrive" and device, data
        assert sh(vm, f"blkid -s LABEL -o value {device[1]}").strip() == "config-2"
        assert sh(vm, "cat /run/cloud-init/cloud.cfg").split() == ["datasource_list:", "[", "ConfigDrive,", "None", "]"]
        assert sh(vm, "cat /var/lib/cloud/instance/user-data.txt").encode() == context.render()

        # hostname and root's authorized key, under CernVM's users: [] and disable_root: false
        assert sh(vm, "hostname").strip() == context.hostname
        authorized = sh(vm, "cat /root/.ssh/authorized_keys").splitlines()
        assert authorized == list(context.ssh_keys), "the run's key, for root, without a forced command"
        assert sh(vm, "getent passwd debian || true") == "", "users: [] creates no default user"

        # the host key: the one handed over, verified by the harness; nothing else is left to present
        assert vm.transport.verified is True and vm.host_key_trust == "verified"
        assert vm.transport.pinned_key == " ".join(context.host_key.public.split()[:2])
        assert sh(vm, "cat /etc/ssh/ssh_host_ed25519_key.pub").strip() == context.host_key.public.strip()
        keys = sh(vm, "cd /etc/ssh && ls ssh_host_*").split()
        assert keys == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], (
            "ssh_deletekeys (default true) removed the image's keys and, given ssh_keys, cloud-init generated none"
        )
        baked = sh(vm, "cd /run/live/rootfs/filesystem.squashfs/etc/ssh && ls ssh_host_*").split()
        assert "ssh_host_rsa_key" in baked and "ssh_host_ecdsa_key" in baked, "the image ships static keys"
        assert host_key_offered(vm, RSA) is None and host_key_offered(vm, ECDSA) is None

        # cloud-init finished and reported nothing against our user data
        assert vm.run("test -e /var/lib/cloud/instance/boot-finished").succeeded
        assert cloud_init_problems(vm) == []
        valid = vm.run("cloud-init schema --system")
        assert valid.succeeded and "Valid cloud-config: system userdata" in valid.stdout, valid.stdout + valid.stderr
        # the schema warning comes from the image's (CernVM's) settings, which cloud-init honours anyway
        image_settings = vm.run(
            "{ echo '#cloud-config'; cat /etc/cloud/cloud.cfg.d/50_cernvm.cfg; } > /tmp/50_cernvm.cfg && "
            "cloud-init schema --config-file /tmp/50_cernvm.cfg"
        )
        assert not image_settings.succeeded and "users: [] is too short" in image_settings.stderr, (
            image_settings.stdout + image_settings.stderr
        )
        assert IMAGE_WARNING in sh(vm, "cat /var/log/cloud-init.log")

        # no console= on the kernel line: cloud-init's key block went to tty0 (the screen), not the serial port
        cmdline = sh(vm, "cat /proc/cmdline").split()
        assert not [word for word in cmdline if word.startswith("console=")], cmdline
        assert KEY_BLOCK not in vm.console_log(), "the serial console shows a host key block"
        screen = sh(vm, "cat /dev/vcs1")
        assert KEY_BLOCK in screen and context.host_key.public.split()[1] in screen, "no key block on tty1"

        # nothing waited for a network or asked one: no metadata URL, no wait-online, no DNS or NTP client
        assert sh(vm, "grep -c url_helper /var/log/cloud-init.log || true").strip() == "0"
        assert sh(vm, "systemctl is-enabled systemd-networkd-wait-online.service || true").strip() == "masked"
        assert "nameserver" not in sh(vm, "cat /etc/resolv.conf")
        clients = "systemd-resolved systemd-timesyncd chrony ntp ntpsec"
        assert sh(vm, f"for u in {clients}; do systemctl cat $u.service 2>/dev/null; done; true") == ""
        print(f"{vm.name}: {sh(vm, 'systemd-analyze').strip()}")
        print(f"{vm.name}: cloud-init: {' '.join(sh(vm, 'cloud-init analyze blame | sed -n 2,4p').split())}")


def test_image_host_keys_stay_without_ssh_deletekeys(cloudinit_image, tmp_path):
    """``ssh_deletekeys: false``: the image's static keys stay beside the one handed over (cloud-init generates
    none: ssh_keys is given), so the server holds three; the harness asks only for the key it handed over."""
    with booted(cloudinit_image, tmp_path / "state", UserData(cloud_config={"ssh_deletekeys": False})) as vm:
        assert vm.transport.verified is True
        assert vm.transport.pinned_key == " ".join(vm.context.host_key.public.split()[:2])
        keys = set(sh(vm, "cd /etc/ssh && ls ssh_host_*").split())
        assert keys == {f"ssh_host_{t}_key{s}" for t in ("rsa", "ecdsa", "ed25519") for s in ("", ".pub")}, keys
        for kind, types in (("rsa", RSA), ("ecdsa", ECDSA)):
            static = sh(vm, f"cat /run/live/rootfs/filesystem.squashfs/etc/ssh/ssh_host_{kind}_key.pub").split()[:2]
            assert host_key_offered(vm, types) == " ".join(static), f"the image's own {kind} key is presented"
        assert cloud_init_problems(vm) == []


SKIPPED = {
    "test_repositories_mounted_read_only": "no CernVM-FS",
    "test_os_repository_is_the_root_source": "no µCernVM bootloader mounting an OS repository",
    "test_probe": "no cvmfs_config to probe with",
    "test_content_readable": "no CernVM-FS",
    "test_scratch_disk_mounted": "no UROOT scratch disk",
    "test_bootloader_version_file": "no UROOT scratch disk",
    "test_shared_folders_mounted": "mounts no shared folders",
    "test_host_to_guest": "mounts no shared folders",
    "test_guest_to_host": "mounts no shared folders",
    "test_no_error_messages_at_boot": "not checked on the cloud-init test image",
    "test_time_daemon_running": "installs no time daemon",
    "test_password_authentication_as_the_profile_says": "not checked on the cloud-init test image",
    "test_root_cannot_log_in_with_a_password": "not checked on the cloud-init test image",
    "test_power_button_powers_off": "not checked on the cloud-init test image",
    "test_profile_workloads_succeed": "no CernVM-FS",
    "test_reboot_after_contextualization_keeps_scratch_and_context": "no UROOT scratch disk",
    "test_a_boot_without_network_completes_and_the_network_comes_back": "not checked on the cloud-init test image",
    "test_context_users_exist_with_their_group": "sets no users.created",
    "test_context_users_log_in_as_the_profile_says": "sets no users.created",
    "test_small_scratch_disk": "sets no scratch.disk_sizes",
    "test_large_scratch_disk": "sets no scratch.disk_sizes",
    "test_upgrade_from_the_previous_release_keeps_the_scratch_disk": "sets no upgrade.previous",
    "test_password_protected_context": "sets no protected_context.supported",
}
PASSED = {
    "test_kernel_release",
    "test_kernel_command_line",
    "test_hostname",
    "test_user_data_source",
    "test_user_data_recorded",
    "test_ucernvm_block_delivered",
    "test_network_driver",
    "test_dev_shm_is_a_writable_tmpfs",
    "test_clock_matches_the_host",
}


def test_scenario_suite_on_real_cloud_init(cloudinit_image, tmp_path):
    """The scenarios that apply to an image without µCernVM pass; every other one is skipped with the profile's
    reason. test_ucernvm_block_delivered boots its own instance, with MIME multipart user data."""
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in target_table(cloudinit_image).items())
    work = write_work(tmp_path, config=f"[targets.cloudinit]\n{table}")
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    started = time.monotonic()
    try:
        suite = run_suite(work, tmp_path / "junit.xml", subprocess_env(tmp_path / "state"), timeout=1800)
    finally:
        print(f"scenario suite: {time.monotonic() - started:.0f} s")
        assert domains_under(tmp_path) == [], "domains left behind"
        assert ledger_entries(tmp_path / "state") == [], "ledger entries left behind"
    assert set(suite.cases) - set(suite.skipped) == PASSED, suite.output[-6000:]
    assert set(suite.skipped) == set(SKIPPED), suite.skipped
    for name, phrase in SKIPPED.items():
        assert phrase in suite.skipped[name], f"{name}: skipped because {suite.skipped[name]!r}"
    print("\n".join(f"skipped {name}: {why}" for name, why in sorted(suite.skipped.items())))
