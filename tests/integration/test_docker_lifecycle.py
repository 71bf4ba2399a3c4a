"""Nothing leaks on Docker: Ctrl-C, SIGTERM, SIGKILL + sweep (ledger and labels), keep policy, bad input."""

from __future__ import annotations

import functools
import io
import shutil
import signal
import subprocess
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError, ProviderError
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers import docker as provider
from cernvm_fixtures.run import Run

from ..helpers import (
    assert_nothing_left_under,
    cli,
    docker_objects_under,
    failing_test,
    ledger_entries,
    run_pytest,
    start_pytest,
    subprocess_env,
)

SLOW_TEST = """
def test_slow(cernvm):
    assert cernvm.run("sleep 120", timeout=300).succeeded
"""

FAILING_TEST = failing_test("hostname")


def pytest_process(tmp_path: Path, test: str, *args: str, config_text: str | None = None) -> subprocess.Popen:
    return start_pytest(tmp_path, test, "--cernvm-target=docker", *args, config=config_text)


assert_nothing_left = functools.partial(assert_nothing_left_under, objects=docker_objects_under)


def wait_for_command(tmp_path: Path, process: subprocess.Popen, seconds: float = 60) -> str:
    """The test's container, once the slow command runs in it."""
    import docker

    client = docker.from_env()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for name in [n.split()[1] for n in docker_objects_under(tmp_path) if n.startswith("container ")]:
                container = client.containers.get(name)
                if container.status == "running" and "sleep 120" in str(container.top().get("Processes")):
                    return name
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.1)
    finally:
        client.close()
    raise AssertionError("the container never ran the command")


def sweep(tmp_path: Path, state: Path) -> subprocess.CompletedProcess:
    return cli(state, "sweep", cwd=tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_a_command_removes_everything(tmp_path, signum):
    process = pytest_process(tmp_path, SLOW_TEST)
    wait_for_command(tmp_path, process)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output
    assert_nothing_left(tmp_path, output)
    assert not list((tmp_path / "state").glob("runs/*")), "run directory left behind"


def test_sigkill_leaves_only_what_sweep_removes(tmp_path):
    process = pytest_process(tmp_path, SLOW_TEST)
    name = wait_for_command(tmp_path, process)
    process.kill()
    process.wait(timeout=30)
    left = docker_objects_under(tmp_path)
    assert f"container {name}" in left and any(o.startswith("image ") for o in left), left
    assert {(e["kind"], e["name"]) for e in ledger_entries(tmp_path / "state")} == {
        ("directory", name),
        ("image", name),
        ("container", name),
    }, "the ledger knows everything the killed run made"
    result = sweep(tmp_path, tmp_path / "state")
    assert result.returncode == 0, result.stderr
    for kind in ("container", "image", "directory"):
        assert f"destroyed docker {kind} {name}" in result.stdout, result.stdout
    assert_nothing_left(tmp_path)


def test_sweep_finds_a_killed_runs_containers_by_label_alone(tmp_path):
    process = pytest_process(tmp_path, SLOW_TEST)
    name = wait_for_command(tmp_path, process)
    process.kill()
    process.wait(timeout=30)
    key = (tmp_path / "state" / "mark.key").read_bytes()
    shutil.rmtree(tmp_path / "state")  # the ledger is lost: only the labels tell
    stranger = sweep(tmp_path, tmp_path / "stranger-state")  # another key: the labels' mark is not its own
    assert name not in stranger.stdout, stranger.stdout
    (tmp_path / "other-state").mkdir()
    (tmp_path / "other-state" / "mark.key").write_bytes(key)  # the same user's key, its ledger gone
    result = sweep(tmp_path, tmp_path / "other-state")
    assert result.returncode == 0, result.stderr
    assert f"destroyed docker container {name}" in result.stdout, result.stdout
    assert f"destroyed docker image {name}" in result.stdout, result.stdout
    assert docker_objects_under(tmp_path) == []


def test_keep_on_failure_keeps_container_and_image_until_down(tmp_path):
    process = pytest_process(tmp_path, FAILING_TEST, "--cernvm-keep=on-failure")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    kept = docker_objects_under(tmp_path)
    names = [o.split()[1] for o in kept if o.startswith("container ")]
    try:
        assert len(names) == 1 and any(o.startswith("image ") for o in kept), (kept, output)
        assert "cernvm: kept instances" in output and f"cernvm-fixtures down {names[0]}" in output
        assert f"log in:  docker exec -it {names[0]} /init" in output and "deliberate failure" in output
        entries = ledger_entries(tmp_path / "state")
        assert entries and all(e["kept"] for e in entries)
        shell = subprocess.run(["docker", "exec", names[0], "/init", "hostname"], capture_output=True, text=True)
        assert shell.stdout.strip() == names[0], "the login command's container answers"
    finally:
        for name in names:
            down = cli(tmp_path / "state", "down", name)
            assert down.returncode == 0, down.stderr
            assert f"destroyed docker image {name}" in down.stdout
    assert_nothing_left(tmp_path)


# --- bad input: one clear error, nothing created ---------------------------------------------------------------


def target(tmp_path: Path, **keys) -> config.Target:
    table = {"provider": "docker", "profile": "appliance", "deadlines": {"running": 5}, **keys}
    return config.parse({"targets": {"docker": table}}, str(tmp_path / "cernvm.toml")).targets["docker"]


def launch_fails(tmp_path: Path, error: type[Exception], **keys) -> str:
    run = Run(state=tmp_path / "state")
    with pytest.raises(error) as caught:
        launch(target(tmp_path, **keys), run)
    assert run.ledger.entries() == []
    assert docker_objects_under(tmp_path) == []
    assert not list((tmp_path / "state").glob("runs/*/machines/*"))
    return str(caught.value)


def test_missing_tarball(tmp_path):
    message = launch_fails(tmp_path, ConfigError, image=str(tmp_path / "cvm-docker.2021.05-1.cernvm.x86_64.tar"))
    assert f"targets.docker.image: '{tmp_path}/cvm-docker.2021.05-1.cernvm.x86_64.tar' does not exist" in message


def test_tarball_that_is_not_a_cernvm_root_fs(tmp_path):
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("bin/sh")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"#!"))
    message = launch_fails(tmp_path, ConfigError, image=str(path))
    assert "targets.docker.image:" in message and "has no /init, so it is not a CernVM Docker root fs" in message
    assert "cvm-docker.<V>-<R>.cernvm.x86_64.tar" in message


def test_image_name_that_is_not_local(tmp_path):
    name = f"cvmfx-no-such-image-{uuid.uuid4().hex[:8]}"
    message = launch_fails(tmp_path, ConfigError, image=name)
    assert f"targets.docker.image: '{name}' is neither a file nor a local Docker image" in message
    assert f"docker import - {name}" in message


def test_no_docker_daemon(tmp_path):
    message = launch_fails(tmp_path, ProviderError, image="appliance", url="unix:///nonexistent/docker.sock")
    assert "cannot reach the Docker daemon at unix:///nonexistent/docker.sock" in message
    assert "Is dockerd running?" in message


def test_no_docker_daemon_through_the_plugin(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "test_it.py").write_text(textwrap.dedent(FAILING_TEST))
    env = subprocess_env(tmp_path / "state")
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    result = run_pytest(tmp_path / "work", env, "test_it.py", "--cernvm-target=docker")
    output = result.output
    assert result.returncode == 4, output  # the doctor's check stops the session once, before any test runs
    assert "daemon" in output and "unix:///nonexistent/docker.sock" in output and "dockerd" in output, output
    assert "Traceback" not in output
    assert_nothing_left(tmp_path)


def test_appliance_copy_needs_the_appliance(tmp_path):
    source = tmp_path / "image.tar"
    with tarfile.open(source, "w") as tar:
        info = tarfile.TarInfo("init")
        info.mode, info.size = 0o755, 2
        tar.addfile(info, io.BytesIO(b"#!"))
    message = launch_fails(
        tmp_path, ConfigError, image=str(source), mode="bindmount", repositories={"cernvm-prod.cern.ch": ""}
    )
    assert (
        "targets.docker.repositories.cernvm-prod.cern.ch: \"\" (the appliance's own copy) needs image = 'appliance'"
        in message
    )


@pytest.fixture(autouse=True)
def _images_released():
    """In-process launches hold their images until the process exits; release them after each test."""
    yield
    provider._release_held()
