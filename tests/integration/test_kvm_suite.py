"""The scenario suite end to end on KVM, through the plugin in a separate pytest process.

Positive: the default config boots the appliance and every scenario passes.
Negative: each broken appliance variant (or wrong profile / NIC) makes exactly
its scenario fail, with a message naming what is wrong.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from ..helpers import ROOT, domains_under, outcomes, scenario_ids, scenarios_leaving_nothing, skip_reasons

run_suite = functools.partial(scenarios_leaving_nothing, objects=domains_under, timeout=1800)
"""Every suite here may take up to 30 min: besides the shared instances, the release checklist boots fresh ones (power
button, reboot, cable, users, two scratch sizes, upgrade), each under TCG, while CI's other worker boots guests too."""
"""The scenario suite in a fresh process; no domain, ledger entry or run directory may be left."""


def test_scenario_suite_passes_on_the_appliance(tmp_path):
    result = run_suite(tmp_path, "-k", "kvm")
    assert result.returncode == 0, result.output[-6000:]
    found = outcomes(result.output)
    assert found and all(status == "PASSED" for status in found.values()), found
    # the checklist's documented n/a: a password-protected context is the CernVM Online server's, not the image's
    not_applicable = {"test_password_protected_context[kvm]"}
    assert set(found) | not_applicable == scenario_ids("kvm"), "every scenario of the suite ran on kvm"
    assert any("CernVM Online server" in reason for reason in skip_reasons(result.output)), result.output[-3000:]
    assert "cernvm: target x scenario" in result.output


NEGATIVE = [
    # (variant or config, -k selection, failing tests, a phrase of the message)
    (
        "appliance:no-cvmfs",
        "test_cvmfs",
        {"test_repositories_mounted_read_only", "test_probe", "test_content_readable"},
        "/cvmfs/cernvm-prod.cern.ch is not mounted",
    ),
    (
        "appliance:no-scratch",
        "test_scratch and not test_scratch_size",  # the module, not the checklist's scratch sizes
        {"test_scratch_disk_mounted", "test_bootloader_version_file"},
        "/mnt/.rw is a tmpfs mount of tmpfs, expected the ext4 scratch disk",
    ),
    (
        "appliance:no-shared",
        "shared",
        {"test_shared_folders_mounted", "test_host_to_guest", "test_guest_to_host"},
        "shared folder 'data' is not mounted at /mnt/shared/data",
    ),
    (
        "appliance:bad-cmdline",
        "kernel",
        {"test_kernel_command_line"},
        "kernel command line lacks cvmfs_repos=cernvm-prod.cern.ch cernvm_path=cvm4",
    ),
    (
        "appliance:no-context",
        "test_context and not ucernvm and not users",  # the module, not the checklist's context users
        {"test_hostname", "test_user_data_source", "test_user_data_recorded"},
        "no record of where the user data came from",
    ),
    (
        "appliance:nocloud-only",
        "test_context and not ucernvm and not users",
        {"test_user_data_source"},
        "user data source is 'NoCloud', expected 'ConfigDrive'",
    ),
]


CHECKLIST_NEGATIVE = [
    # CernVM's release checklist: each variant lacks one line's property, and fails that line's scenarios only
    (
        "appliance:unclean-boot",
        "test_boot_log",
        {"test_no_error_messages_at_boot"},
        "ERROR: variant unclean-boot: the example service failed to start",
    ),
    (
        "appliance:no-ntpd",
        "test_time",
        {"test_time_daemon_running"},
        "no time daemon runs: no process named ntpd (profile 'appliance', time.daemon)",
    ),
    (
        "appliance:no-shm",
        "test_shm",
        {"test_dev_shm_is_a_writable_tmpfs"},
        "/dev/shm is not mounted (expected a writable tmpfs); it is a directory on the devtmpfs mount /dev",
    ),
    (
        "appliance:root-password",
        "test_root_login",
        {"test_password_authentication_as_the_profile_says", "test_root_cannot_log_in_with_a_password"},
        "root logged in over SSH with a password: 1 of the 1 password(s) of profile 'appliance'",
    ),
    (
        "appliance:no-cvmfs",
        "test_workloads",
        {"test_profile_workloads_succeed"},
        "workload 'histogram' failed (exit status",
    ),
    (
        "appliance:reboot-reformats",
        "test_reboot",
        {"test_reboot_after_contextualization_keeps_scratch_and_context"},
        "written on the scratch disk (/mnt/.rw) before the reboot, is gone after it",
    ),
    (
        "appliance:cable-hang",
        "test_cable",
        {"test_a_boot_without_network_completes_and_the_network_comes_back"},
        "a boot with the network cable pulled did not complete within",
    ),
    (
        "appliance:no-acpi",
        "test_power_button",
        {"test_power_button_powers_off"},
        "after its ACPI power button was pressed: the image ignores the power button",
    ),
    (
        "appliance:no-users",
        "test_users",
        {"test_context_users_exist_with_their_group"},
        "user 'repomgr' (from amiconfig [cernvm] users=) does not exist on the instance",
    ),
    (
        # the previous release as the target: "upgrading" it to itself leaves the bootloader version as it was
        "appliance:previous",
        "test_upgrade",
        {"test_upgrade_from_the_previous_release_keeps_the_scratch_disk"},
        "the bootloader version in /mnt/.rw/aux/ucernvm-version is still '2026.05-1.appliance.x86_64'",
    ),
    (
        "appliance:scratch-unpartitioned",
        "test_scratch_size",
        {"test_small_scratch_disk", "test_large_scratch_disk"},
        "the whole disk without a partition table; µCernVM puts it on partition 1 of /dev/vda",
    ),
]


def run_negative(tmp_path: Path, rows: list) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The rows' images as one matrix run (booted ahead in parallel), each with its -k selection; every row's
    message must be in the output. Returns the run and its outcomes."""
    images = "".join(f'b{i} = "{image}"\n' for i, (image, *_) in enumerate(rows, 1))
    config = f'[targets.kvm]\nprovider = "kvm"\n\n[targets.kvm.images]\n{images}'
    chosen = " or ".join(f"(b{i} and ({sel}))" for i, (_, sel, *_) in enumerate(rows, 1))
    result = run_suite(tmp_path, "-k", chosen, config=config)
    print(result.output)  # the failure messages, for -rA
    for _, _, _, message in rows:
        assert message in result.output, (message, result.output[-8000:])
    return result, outcomes(result.output)


def broken_profile(tmp_path: Path) -> Path:
    """The appliance's profile expecting CernVM's kernel release format instead of Debian's."""
    profile = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    broken = tmp_path / "cernvm-kernel.toml"
    broken.write_text(
        profile.replace(
            "{ expect = '^\\d+\\.\\d+\\.\\d+-\\d+-amd64$' }",
            "{ expect = '^\\d+\\.\\d+\\.\\d+-\\d+\\.cernvm\\.x86_64$' }",
        )
    )
    assert broken.read_text() != profile
    return broken


def virtio_only_profile(tmp_path: Path) -> Path:
    """The appliance's profile without its rule for KVM's e1000 model: it expects virtio_net whatever the NIC."""
    profile = (ROOT / "cernvm_fixtures/profiles/appliance.toml").read_text()
    rule = '  { provider = "kvm", nic_model = "e1000", expect = "e1000", why = "the KVM target\'s nic_model" },\n'
    assert rule in profile
    wrong = tmp_path / "virtio-only.toml"
    wrong.write_text(profile.replace(rule, ""))
    return wrong


def test_each_broken_image_fails_exactly_its_scenarios(tmp_path):
    """Every broken variant, a wrong profile and a wrong NIC, as one matrix run (one image per defect, booted
    ahead in parallel): each makes exactly its scenarios fail, with a message naming what is wrong."""
    images = "".join(f'b{i} = "{image}"\n' for i, (image, *_) in enumerate(NEGATIVE, 1))
    wrong = len(NEGATIVE) + 1
    config = f"""
        [targets.kvm]
        provider = "kvm"
        shared_folders = {{ data = "" }}

        [targets.kvm.images]
        {images}
        b{wrong} = {{ image = "appliance", profile = "{broken_profile(tmp_path)}" }}

        [targets.kvm-e1000]
        provider = "kvm"
        nic_model = "e1000"
        profile = "{virtio_only_profile(tmp_path)}"
    """
    selection = [f"(b{i} and ({sel}))" for i, (_, sel, *_) in enumerate(NEGATIVE, 1)]
    selection += [f"(b{wrong} and kernel_release)", "(e1000 and test_network_driver)"]
    result = run_suite(
        tmp_path, "-k", " or ".join(selection), config="\n".join(line.strip() for line in config.splitlines())
    )
    expected = {f"{name}[kvm-b{i}]" for i, (_, _, failing, _) in enumerate(NEGATIVE, 1) for name in failing}
    expected |= {f"test_kernel_release[kvm-b{wrong}]", "test_network_driver[kvm-e1000]"}
    found = outcomes(result.output)
    assert {name for name, status in found.items() if status == "FAILED"} == expected, result.output[-8000:]
    assert {status for name, status in found.items() if name not in expected} <= {"PASSED"}, found
    for _, _, _, message in NEGATIVE:
        assert message in result.output
    assert "eth0 is driven by e1000, expected virtio_net" in result.output
    assert re.search(r"kernel release is '\d+\.\d+\.\d+-\d+-amd64', but profile 'appliance' expects", result.output)
    assert "kvm / b1" in result.output, "the summary grid names the target and the image"
    assert result.returncode == 1
