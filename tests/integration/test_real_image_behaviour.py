"""The appliance behaves like the released CernVM ISO where the harness depends on it, and the harness copes.

Each case boots the appliance under KVM (TCG). What a first real run would meet, and what today's harness does:
the serial console is silent (the ISO's kernel line has no console=), so host keys come from the context, not
the console; the OS is loaded over the network at boot, and without a server the boot stops with µCernVM's
message; the [ucernvm-begin] block is recorded and applied as µCernVM does; /cvmfs mounts on demand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.context import UserData
from cernvm_fixtures.errors import ReadinessError
from cernvm_fixtures.instance import Instance, launch
from cernvm_fixtures.run import Run

from ..helpers import domains_under


def boot(tmp_path: Path, user_data: UserData | None = None, **options) -> tuple[Instance, Run]:
    raw = {"kvm": {"provider": "kvm", "domain_type": "qemu", **options}}
    target = config.parse({"targets": raw}, "test").targets["kvm"]
    run = Run(state=tmp_path / "state")
    try:
        return launch(target, run, user_data=user_data), run
    except BaseException:
        run.finish()
        raise


def test_iso_console_is_silent_keys_come_from_the_context_and_cvmfs_mounts_on_demand(tmp_path):
    instance, run = boot(tmp_path)
    try:
        assert instance.console_log().strip() == "", "the ISO's kernel line has no console=: nothing on serial"
        assert instance.host_key_trust == "verified", "the key handed over in ssh_keys, not trusted on first use"
        assert instance.transport.pinned_key == " ".join(instance.context.host_key.public.split()[:2])
        cmdline = instance.run("cat /proc/cmdline").stdout
        assert "console=" not in cmdline and "cvmfs_server=10.0.2.100" in cmdline
        # µCernVM's ucontext exists whenever user data was found, empty without a [ucernvm-begin] block
        assert instance.run("test -f /mnt/.rw/context/ucontext && ! test -s /mnt/.rw/context/ucontext").succeeded
        # the OS came over the network from the server on the kernel line
        log = instance.run("cat /mnt/.rw/ulogs/network.log").stdout
        assert "GET http://10.0.2.100/cvmfs/cernvm-prod.cern.ch/os.squashfs" in log
        # /cvmfs is autofs: nothing under it until touched; probe without arguments probes nothing
        mounts = instance.run("cat /proc/mounts").stdout
        assert " /cvmfs autofs " in mounts and "/cvmfs/cernvm-prod.cern.ch " not in mounts
        assert instance.run("cvmfs_config probe").stdout.strip() == "", "CVMFS_REPOSITORIES is empty by default"
        probe = instance.run("cvmfs_config probe cernvm-prod.cern.ch")
        assert probe.succeeded and probe.stdout.strip().endswith("OK")
        assert "/cvmfs/cernvm-prod.cern.ch squashfs ro" in instance.run("cat /proc/mounts").stdout
    finally:
        instance.destroy()
        run.finish()
    assert domains_under(tmp_path) == []


def test_console_host_keys_never_come_on_the_iso(tmp_path):
    """Yesterday's default (keys from the console) meets the real ISO: login fails, and says why."""
    with pytest.raises(ReadinessError) as err:
        boot(tmp_path, host_key="console", deadlines={"login": 5})
    message = str(err.value)
    assert err.value.step == "login" and "has not printed its host keys on the console" in message
    assert "the serial console is empty" in message
    assert domains_under(tmp_path) == []


def test_no_server_stops_the_boot_and_the_error_names_the_network(tmp_path):
    """Variant no-stratum1 names a server nobody answers at: the boot stops before SSH, silently on serial."""
    with pytest.raises(ReadinessError) as err:
        boot(tmp_path, image="appliance:no-stratum1", deadlines={"reachable": 15})
    message = str(err.value)
    assert err.value.step == "reachable"
    assert "network: QEMU user-mode networking, restricted (restrict=on)" in message
    assert "the serial console is empty" in message
    assert domains_under(tmp_path) == []


def test_an_unknown_os_repository_stops_the_boot_with_the_bootloaders_message(tmp_path):
    """cvmfs_branch names the OS repository: an unknown one stops the boot (seen here on a serial console)."""
    user_data = UserData(ucernvm={"cvmfs_branch": "no-such-repository.cern.ch"})
    with pytest.raises(ReadinessError) as err:
        boot(
            tmp_path,
            user_data,
            boot="kernel",
            kernel_args="console=ttyS0",
            deadlines={"reachable": 15},
        )
    tail = err.value.console_tail
    assert "loading repository no-such-repository.cern.ch from 10.0.2.100" in tail
    assert "Unable to mount cvmfs root filesystem!" in tail
    assert domains_under(tmp_path) == []


def test_the_ucernvm_block_is_recorded_and_applied(tmp_path):
    user_data = UserData(ucernvm={"cvmfs_branch": "cernvm-prod.cern.ch", "resize_rootfs": "off"})
    instance, run = boot(tmp_path, user_data, boot="kernel")
    try:
        lines = instance.run("cat /mnt/.rw/context/ucontext").stdout.splitlines()
        assert lines == ["_UCONTEXT_CVMFS_BRANCH=cernvm-prod.cern.ch", "_UCONTEXT_RESIZE_ROOTFS=0"]
        assert "UCVM_OS_REPO_MOUNTED=cernvm-prod.cern.ch" in instance.run("cat /run/cernvm-fixtures/boot.conf").stdout
    finally:
        instance.destroy()
        run.finish()
