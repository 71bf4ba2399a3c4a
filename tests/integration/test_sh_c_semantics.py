"""Every command behaves as ``sh -c CMD`` does over SSH, on the appliance through SSH (KVM) and Docker.

The KVM guest is also asked the same commands through testinfra's ``paramiko://``
backend (``sh -c`` run by the SSH server): both must agree.
"""

from __future__ import annotations

import time
import warnings

import pytest
import testinfra

from cernvm_fixtures import config
from cernvm_fixtures.errors import CommandTimeout
from cernvm_fixtures.instance import launch
from cernvm_fixtures.run import Run

from ..helpers import assert_timeout_leaves_nothing


@pytest.fixture(scope="module", params=["kvm", "docker"])
def instance(request, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"sh-c-{request.param}")
    run = Run(state=state)
    handle = launch(config.load(None, state).targets[request.param], run)
    yield handle
    handle.destroy()
    assert run.ledger.entries() == []


def paramiko_host(instance) -> testinfra.host.Host:
    """testinfra's own paramiko:// backend on the same guest, with the same key."""
    host, port = instance.machine.address()
    ssh_config = instance.machine.directory / "ssh_config"
    ssh_config.write_text(
        f"Host {host}\n  Port {port}\n  User root\n  IdentityFile {instance.machine.provider.run.key_file}\n"
        "  IdentitiesOnly yes\n"
    )
    warnings.filterwarnings("ignore", message="Unknown .* host key")
    return testinfra.get_host(f"paramiko://root@{host}:{port}", ssh_config=str(ssh_config))


def test_dollar_dollar_is_the_command_s_own_process(instance):
    first, second = instance.run("echo $$; exec cut -d' ' -f1 /proc/self/stat").check().stdout.split()
    assert first == second, f"$$ is {first} but the command runs as {second}"
    assert instance.run("echo $$").stdout.strip() != first


def test_a_command_that_kills_itself_returns_a_status(instance):
    result = instance.run("echo before; kill $$; echo after")
    assert (result.exit_status, result.stdout, result.stderr) == (143, "before\n", "")
    assert instance.run("echo next").stdout == "next\n"


COMMANDS = [
    "no-such-command-cvmfx",
    "echo a \\",
    "echo ok; no-such-command-cvmfx; exit 4",
    "echo $LINENO $-",
    "cd /no/such/dir",
    "echo 'unterminated",
    "exit 300",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_messages_are_stable_and_as_sh_c_gives_them(instance, command):
    first, second = instance.run(command), instance.run(command)
    assert (first.exit_status, first.stdout, first.stderr) == (second.exit_status, second.stdout, second.stderr)
    assert "eval" not in first.stderr
    if instance.target.provider == "kvm":
        theirs = paramiko_host(instance).run(command)
        assert (first.exit_status, first.stdout, first.stderr) == (theirs.rc, theirs.stdout, theirs.stderr)


def test_background_output_never_reaches_the_next_command(instance):
    started = time.monotonic()
    result = instance.run("(sleep 2; echo late) & (sh -c 'sleep 2; echo late2 >&2' &); echo early")
    took = time.monotonic() - started
    assert (result.stdout, result.stderr) == ("early\n", ""), f"the jobs were not killed within {took:.2f} s"
    time.sleep(3)
    assert (instance.run("echo next").stdout, instance.run("true").stderr) == ("next\n", "")
    print(f"a command leaving background jobs took {took * 1000:.0f} ms")


def test_a_job_holding_the_output_is_gone_when_the_command_returns(instance):
    instance.run("true")
    modes = {session.mode for session in instance.transport._sessions._idle}
    assert modes == {"reaper"}, f"sessions find leftovers the slow way ({modes}), one more exec per command"
    instance.run("sh -c 'exec sleep 306' &").check()
    left = instance.run("ps -o stat,args | grep -c '^[^Z]* sleep 306'").stdout.strip()
    assert left == "0", "a job holding the command's output outlived the command"


def test_a_double_forked_process_does_not_survive_the_timeout(instance):
    why = "a double-forked process outlived the timeout kill"
    assert_timeout_leaves_nothing(instance, "(sh -c 'sleep 303' &); sleep 304", "^sleep 30[34]", why)


def test_stdin_that_is_never_read_cannot_outlast_the_timeout(instance):
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        instance.run("sleep 305", stdin=b"x" * (8 << 20), timeout=2)
    assert time.monotonic() - started < 15
    assert instance.run("ps -o args | grep -c '^sleep 305'").stdout.strip() == "0", "the command survived its timeout"


def test_timeout_per_call_and_per_target(instance):
    assert instance.target.command_timeout == 120
    with pytest.raises(CommandTimeout, match="after 0.5 s"):
        instance.host.run("sleep 5", timeout=0.5)
    assert instance.host.run("sleep 1", timeout=None).rc == 0
