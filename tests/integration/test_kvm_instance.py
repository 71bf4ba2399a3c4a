"""The instance handle on a real appliance booted by the kvm provider under libvirt (TCG here)."""

from __future__ import annotations

import shutil
import subprocess
import time

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cernvm_fixtures import config
from cernvm_fixtures.errors import CommandTimeout
from cernvm_fixtures.instance import launch
from cernvm_fixtures.run import Run
from cernvm_fixtures.transport.ssh import HostKeyMismatch, SSHTransport

from ..helpers import assert_framed, assert_threads_share, assert_timeout_leaves_nothing, domains_under


@pytest.fixture(scope="module")
def module_state(tmp_path_factory):
    return tmp_path_factory.mktemp("kvm-instance-state")


@pytest.fixture(scope="module")
def vm(module_state):
    target = config.load(None, module_state).targets["kvm"]
    run = Run(state=module_state)
    instance = launch(target, run)
    yield instance
    instance.destroy()
    assert domains_under(module_state) == []
    assert run.ledger.entries() == []


def test_ready_with_verified_host_key(vm):
    assert vm.ready_after is not None
    assert vm.transport.verified is True, "the host key must be the one handed over in the context"
    assert vm.console_log() == "", "the ISO's kernel line has no console=: the serial port stays silent"


def test_exit_status_and_separate_streams(vm):
    result = vm.run("echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert vm.run("true").exit_status == 0


def test_stdin_and_binary_round_trip(vm):
    blob = bytes(range(256)) * 64
    assert vm.run("cat", stdin=blob).stdout_bytes == blob
    vm.put(blob, "/tmp/blob", mode=0o600)
    assert vm.get("/tmp/blob") == blob
    assert vm.run("stat -c %a /tmp/blob").stdout.strip() == "600"


def test_large_output_does_not_deadlock(vm):
    result = vm.run(
        "dd if=/dev/zero bs=1M count=4 2>/dev/null; dd if=/dev/zero bs=1M count=4 >&2 2>/dev/null", timeout=120
    )
    assert len(result.stdout_bytes) == 4 * 1024 * 1024


def test_command_timeout_leaves_handle_usable(vm):
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="sleep 30"):
        vm.run("sleep 30", timeout=1)
    assert time.monotonic() - started < 10
    assert vm.run("echo still here").stdout == "still here\n"


def test_testinfra_host_goes_through_the_instance(vm):
    host = vm.host
    assert host.file("/mnt/.rw/aux/ucernvm-version").exists
    assert host.mount_point("/mnt/.rw").filesystem == "ext4"
    assert host.run("uname -s").stdout.strip() == "Linux"


def test_host_key_mismatch_is_refused(vm):
    wrong = paramiko.Ed25519Key.from_private_key_file(str(vm.machine.provider.run.key_file))
    host, port = vm.machine.address()
    transport = SSHTransport(
        host, port, "root", vm.machine.provider.run.key_file, lambda: [f"ssh-ed25519 {wrong.get_base64()}"]
    )
    with pytest.raises(HostKeyMismatch, match="not among the 1 key"):
        transport.connect()


def test_login_command_works_for_a_person(vm):
    if shutil.which("ssh") is None:
        pytest.skip("openssh-client is not installed")
    command = [*vm.machine.login_command().argv, "-o", "BatchMode=yes", "hostname"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vm.name
    assert "StrictHostKeyChecking=accept-new" not in vm.login_command, "the announced host key must be pinned"


def test_shared_folder_host_side_exists(vm):
    assert vm.shared_folders["data"].is_dir()


def test_fast_path_keeps_commands_apart(vm):
    before = vm.run("pwd; umask; echo x${LEAK-unset}; set -o | grep -c 'errexit *on'; trap").stdout
    vm.run("cd /tmp; umask 077; LEAK=1; export LEAK; set -e; trap 'echo trapped' EXIT")
    assert vm.run("pwd; umask; echo x${LEAK-unset}; set -o | grep -c 'errexit *on'; trap").stdout == before
    assert vm.run("cat; echo $?").stdout == "0\n", "stdin is closed unless given"
    assert vm.run("echo 'unterminated").exit_status == 2
    assert vm.run("echo fine").stdout == "fine\n"


def test_timeout_stops_the_whole_command_tree(vm):
    why = "the timed-out command's processes are still running"
    assert_timeout_leaves_nothing(vm, "sh -c 'sleep 301' & sleep 302", "^sleep 30[12]", why)


def test_many_threads_share_one_handle(vm):
    assert_threads_share(vm, threads=8, commands=20)


def test_reconnects_after_the_connection_drops(vm):
    import socket

    vm.run("true")
    vm.transport._client.sock.shutdown(socket.SHUT_RDWR)
    time.sleep(0.2)
    assert vm.run("echo again").stdout == "again\n"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(out=st.binary(max_size=2048), err=st.binary(max_size=2048), status=st.integers(0, 255))
def test_framing_properties_over_ssh(vm, out, err, status):
    assert_framed(vm, out, err, status)


def test_reboot_is_confirmed_by_a_new_boot_id_and_renews_cached_facts(vm):
    boot = vm.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    host = vm.host
    vm.reboot()
    assert vm.transport.boot_id != boot
    assert vm.run("cat /proc/sys/kernel/random/boot_id").stdout.strip() == vm.transport.boot_id
    assert vm.host is not host
    assert vm.host.file("/mnt/.rw/aux/ucernvm-version").exists, "the scratch disk is reused after the reboot"
