"""The instance handle and the Docker transport on the appliance's Docker image (both modes)."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cernvm_fixtures import appliance, config
from cernvm_fixtures.errors import CommandTimeout, ProviderError
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers import docker as provider
from cernvm_fixtures.run import Run
from cernvm_fixtures.transport.docker import DockerTransport
from cernvm_fixtures.transport.shell import SessionLost

from ..helpers import assert_framed, assert_threads_share, docker_objects_under


def docker_target(state, name: str, **keys) -> config.Target:
    table = {"provider": "docker", "shared_folders": {"data": ""}, **keys}
    return config.parse({"targets": {name: table}}, str(state / "cernvm.toml")).targets[name]


@pytest.fixture(scope="module")
def module_state(tmp_path_factory):
    return tmp_path_factory.mktemp("docker-instance-state")


@pytest.fixture(scope="module")
def signer_key(module_state):
    """The appliance repository's key under another name: it must reach /UCVM/keys through the config."""
    key = module_state / "test-signer.pub"
    key.write_bytes((appliance._builder.FILES / "keys" / "cernvm-prod.cern.ch.pub").read_bytes())
    return key


@pytest.fixture(scope="module")
def parrot(module_state, signer_key):
    repo = f"cernvm-prod.cern.ch:url=http://stratum-one.invalid/cvmfs/cernvm-prod.cern.ch,pubkey={signer_key}"
    target = docker_target(module_state, "docker", env={"CERNVM_DEBUG": "1", "PARROT_CVMFS_REPO": repo})
    run = Run(state=module_state)
    instance = launch(target, run)
    yield instance
    instance.destroy()
    assert run.ledger.entries() == []


@pytest.fixture(scope="module")
def bindmount(module_state, parrot):
    run = parrot.machine.provider.run  # the same run: the image is reused, not imported again
    target = docker_target(module_state, "docker-bindmount", mode="bindmount", repositories={"cernvm-prod.cern.ch": ""})
    instance = launch(target, run)
    yield instance
    instance.destroy()


@pytest.fixture(scope="module", autouse=True)
def nothing_left(module_state):
    yield
    provider._release_held()  # what happens when the process exits
    assert docker_objects_under(module_state) == []


def test_ready_with_container_traits(parrot):
    assert parrot.ready_after is not None and parrot.ready_after < 10
    info = subprocess.run(["docker", "info", "--format", "{{.KernelVersion}}"], capture_output=True, text=True).stdout
    assert parrot.traits["host_kernel"] == info.strip()
    assert parrot.traits["kind"] == "container" and parrot.traits["cvmfs_mode"] == "parrot"
    assert parrot.login_command == f"docker exec -it {parrot.name} /init"
    assert provider.UP_LINE in parrot.console_log()


def test_exit_status_and_separate_streams(parrot):
    result = parrot.run("echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert parrot.run("true").exit_status == 0
    assert parrot.transport.exec("kill -9 $$").exit_status == 137, "in an exec of its own, $$ is the command's shell"


def test_a_command_killing_its_session_shell_costs_only_that_command(parrot):
    assert parrot.run("kill -9 $$").exit_status == 137, "as with sh -c, $$ is the command's own process"
    with pytest.raises(SessionLost):
        parrot.run("kill -9 $PPID")  # the session's shell itself
    assert parrot.run("echo next").stdout == "next\n"


def test_init_output_is_kept_out_of_the_commands_output(parrot):
    result = parrot.run("echo only this")
    assert result.stderr == "" and result.stdout == "only this\n", (
        "CERNVM_DEBUG=1 lines belong to /init, not the command"
    )
    assert "cernvm-docker: debug: parrot mode; running: sh -c" in parrot.console_log()


def test_stdin_and_binary_round_trip(parrot):
    blob = bytes(range(256)) * 64
    assert parrot.run("cat", stdin=blob).stdout_bytes == blob
    assert parrot.run("cat", stdin=b"").stdout_bytes == b""
    assert parrot.run("cat").stdout_bytes == b"", "no stdin: end of file at once"
    parrot.put(blob, "/tmp/blob", mode=0o600)
    assert parrot.get("/tmp/blob") == blob
    assert parrot.run("stat -c %a /tmp/blob").stdout.strip() == "600"


def test_large_output_and_input_do_not_deadlock(parrot):
    started = time.monotonic()
    result = parrot.run(
        "dd if=/dev/zero bs=1M count=8 2>/dev/null; dd if=/dev/zero bs=1M count=8 >&2 2>/dev/null", timeout=120
    )
    assert len(result.stdout_bytes) == len(result.stderr_bytes) == 8 * 1024 * 1024
    blob = b"x" * (8 * 1024 * 1024)
    echoed = parrot.run("cat; cat /dev/zero | head -c 1048576 >&2", stdin=blob, timeout=120)
    assert echoed.stdout_bytes == blob and len(echoed.stderr_bytes) == 1048576
    assert time.monotonic() - started < 60


def test_command_timeout_stops_the_command_and_leaves_the_handle_usable(parrot):
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="sleep 31"):
        parrot.run("echo started; sleep 31; echo never", timeout=1)
    assert time.monotonic() - started < 10
    assert "sleep 31" not in parrot.run("ps -o args").stdout, "the timed-out command was killed"
    with pytest.raises(CommandTimeout):
        parrot.run("sh -c 'sleep 32' & sleep 33", timeout=1)
    assert "sleep 3" not in parrot.run("ps -o args").stdout, "and so were its children"
    assert parrot.run("echo still here").stdout == "still here\n"


def test_concurrent_commands(parrot):
    results = {}

    def one(i):
        results[i] = parrot.run(f"echo {i}; echo e{i} >&2; exit {i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all((r.exit_status, r.stdout, r.stderr) == (i, f"{i}\n", f"e{i}\n") for i, r in results.items())


def test_testinfra_host_goes_through_init(parrot):
    host = parrot.host
    assert host.file("/UCVM/version").content_string.strip() == appliance.VERSION
    assert host.file("/cvmfs/cernvm-prod.cern.ch/.cvmfs-repository").exists
    assert host.run("uname -r").stdout.strip() == parrot.traits["host_kernel"]
    assert host.mount_point("/mnt/shared/data").exists


def test_parrot_mode_settings(parrot):
    assert parrot.run("grep Seccomp: /proc/self/status").stdout.split() == ["Seccomp:", "0"]
    assert parrot.run("ls /sys/class/net").stdout.split() == ["lo"], "network none"
    assert parrot.run("cat /UCVM/keys/test-signer.pub").stdout.startswith("-----BEGIN PUBLIC KEY-----")
    env = parrot.run("echo $PARROT_CVMFS_REPO; echo $CERNVM_DEBUG").stdout.split()
    assert env == [
        "cernvm-prod.cern.ch:url=http://stratum-one.invalid/cvmfs/cernvm-prod.cern.ch,"
        "pubkey=/UCVM/keys/test-signer.pub",
        "1",
    ]
    assert "key /UCVM/keys/test-signer.pub" in parrot.console_log()
    assert "/cvmfs/cernvm-prod.cern.ch" not in parrot.run("cat /proc/mounts").stdout, "parrot: no kernel mount"


def test_init_refusal_is_the_result(parrot):
    api = provider.connect().api
    refused = DockerTransport(api, parrot.name, entry=("env", "CERNVM_ROOT=/cvmfs/nowhere", "/init"))
    result = refused.exec("echo never")
    assert result.exit_status == 1 and result.stdout == ""
    assert "fatal: cannot access CERNVM_ROOT=/cvmfs/nowhere" in result.stderr
    with pytest.raises(
        ProviderError, match="(?s)did not start a shell: .*fatal: cannot access CERNVM_ROOT=/cvmfs/nowhere"
    ):
        refused.run("echo never")
    with pytest.raises(ProviderError, match="CERNVM_ROOT=/cvmfs/nowhere"):
        refused.connect()


def test_wrong_repository_key_is_refused(parrot, module_state):
    wrong = "cernvm-prod.cern.ch:url=http://x,pubkey=/UCVM/keys/cernvm-prod.cern.ch.pub"
    parrot.run(
        "cp /UCVM/keys/cernvm-prod.cern.ch.pub /tmp/saved.pub && echo nope > /UCVM/keys/cernvm-prod.cern.ch.pub"
    ).check()
    try:
        api = provider.connect().api
        transport = DockerTransport(api, parrot.name, entry=("env", f"PARROT_CVMFS_REPO={wrong}", "/init"))
        result = transport.exec("true")
        assert result.exit_status == 1
        assert "signature verification failed with public key(s) /UCVM/keys/cernvm-prod.cern.ch.pub" in result.stderr
    finally:
        parrot.run("cp /tmp/saved.pub /UCVM/keys/cernvm-prod.cern.ch.pub").check()


def test_banner_before_the_command_is_not_its_output(parrot):
    """CernVM's /init prints a banner and [INF] lines on stdout before the command: not the command's output."""
    api = provider.connect().api
    entry = (
        "/init",
        "sh",
        "-c",
        'echo "*** Welcome to CernVM in Docker ***"; echo "[INF] mounting" >&2; exec "$@"',
        "init",
    )
    result = DockerTransport(api, parrot.name, entry=entry).run("printf 'x'")
    assert (result.exit_status, result.stdout, result.stderr) == (0, "x", "")


def test_bindmount_mode(bindmount, parrot):
    assert bindmount.traits["cvmfs_mode"] == "bindmount"
    assert bindmount.run("grep Seccomp: /proc/self/status").stdout.split() == ["Seccomp:", "2"], "no seccomp relaxation"
    mounts = [line.split() for line in bindmount.run("cat /proc/mounts").stdout.splitlines()]
    (repo,) = [m for m in mounts if m[1] == "/cvmfs/cernvm-prod.cern.ch"]
    assert "ro" in repo[3].split(",")
    result = bindmount.run("touch /cvmfs/cernvm-prod.cern.ch/x")
    assert result.exit_status != 0 and "Read-only file system" in result.stderr
    assert bindmount.run("readlink /bin").stdout.strip() == "/cvmfs/cernvm-prod.cern.ch/cvm4/bin", (
        "the OS from the mount"
    )
    image = bindmount.machine.resources[1].data["image"]
    assert image == parrot.machine.resources[1].data["image"], "one image per run and tarball"


def test_local_image_by_name(module_state):
    import docker

    client = docker.from_env()
    name = f"cvmfx-test-local-{uuid.uuid4().hex[:8]}"
    client.api.import_image_from_file(str(appliance.build().docker_tarball), repository=name, tag="latest")
    try:
        run = Run(state=module_state)
        instance = launch(docker_target(module_state, "docker", image=name, profile="appliance"), run)
        try:
            assert instance.run("cvmfs_config probe").succeeded
            assert [r.kind for r in instance.machine.resources] == ["directory", "container"], (
                "a local image is not ours"
            )
        finally:
            instance.destroy()
        client.images.get(name)  # still there: it belongs to the user
    finally:
        client.images.remove(name)
        client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(out=st.binary(max_size=4096), err=st.binary(max_size=4096), status=st.integers(0, 255))
def test_framing_properties_through_the_session(parrot, out, err, status):
    assert_framed(parrot, out, err, status)


def test_session_keeps_commands_apart_and_threads_share_it(parrot):
    before = parrot.run("pwd; umask; echo x${LEAK-unset}; trap").stdout
    parrot.run("cd /tmp; umask 077; LEAK=1; export LEAK; trap 'echo trapped' EXIT")
    assert parrot.run("pwd; umask; echo x${LEAK-unset}; trap").stdout == before
    assert_threads_share(parrot, threads=6, commands=25)
