"""Login commands are argv lists run as is (quoted only for display), checked by ssh's own parser (``ssh -G``)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_fixtures.transport.base import Login
from cernvm_fixtures.transport.ssh import ssh_login

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@host"

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's ssh for -G")


def effective(argv: list[str], *extra: str) -> dict[str, list[str]]:
    """What ssh itself makes of the argv (``-G`` prints the configuration and exits; nothing connects)."""
    out = subprocess.run([argv[0], "-G", *extra, *argv[1:]], capture_output=True, text=True, timeout=30, check=True)
    options: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.partition(" ")
        options.setdefault(name, []).append(value)
    return options


def test_paths_with_spaces_and_strict_host_keys(tmp_path):
    directory = tmp_path / "machine dir; rm -rf x"
    key = tmp_path / "my key"
    key.touch()
    login = ssh_login("root", "127.0.0.1", 2222, key, [KEY], directory)
    options = effective(list(login.argv))
    assert options["identityfile"] == [str(key)]
    assert options["userknownhostsfile"] == [str(directory / "known_hosts")]
    assert options["stricthostkeychecking"] == ["true"] and options["port"] == ["2222"]
    assert (directory / "known_hosts").read_text() == f"[127.0.0.1]:2222 {' '.join(KEY.split()[:2])}\n"
    assert shlex.split(str(login)) == list(login.argv), "the display form quotes, it does not change anything"


def test_jump_host_is_proxyjump_not_a_shell_command(tmp_path):
    jump_key, jump_known = tmp_path / "jump key;touch pwned", tmp_path / "jump known"
    jump_key.touch()
    login = ssh_login(
        "root",
        "10.0.0.5",
        22,
        tmp_path / "k",
        [KEY],
        tmp_path / "m",
        jump_host="ec2-user@127.0.0.1:2200",
        jump_key=jump_key,
        jump_known_hosts=jump_known,
    )
    options = effective(list(login.argv))
    assert options["proxyjump"] == ["ec2-user@[127.0.0.1]:2200"] and "proxycommand" not in options
    config = login.argv[login.argv.index("-F") + 1]
    hop = effective(["ssh", "-F", config, "ec2-user@127.0.0.1"])
    assert hop["identityfile"] == [str(jump_key)] and hop["userknownhostsfile"] == [str(jump_known)]
    with pytest.raises(ValueError, match="jump host"):
        ssh_login("root", "h", 22, tmp_path / "k", [], tmp_path / "m", jump_host="-oProxyCommand=x")


def test_no_announced_keys_means_ssh_refuses(tmp_path):
    login = ssh_login("root", "127.0.0.1", 22, tmp_path / "k", [], tmp_path)
    assert (tmp_path / "known_hosts").read_text() == "" and "StrictHostKeyChecking=yes" in login.argv


def test_environment_is_data_and_shown_as_assignments(tmp_path):
    login = Login(["docker", "exec", "-it", "cvmfx-x", "/init"], {"DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert str(login) == "DOCKER_HOST=tcp://127.0.0.1:2375 docker exec -it cvmfx-x /init"
    assert Login.from_data(login.as_data()) == login
    script = tmp_path / "show"
    script.write_text('#!/bin/sh\necho "$DOCKER_HOST $*"\n')
    script.chmod(0o755)
    shown = subprocess.run(
        [
            ".venv/bin/python" if Path(".venv/bin/python").exists() else "python3",
            "-c",
            "import sys; from cernvm_fixtures.transport.base import Login; "
            "Login([sys.argv[1], 'a b'], {'DOCKER_HOST': 'tcp://h:1'}).exec()",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.stdout == "tcp://h:1 a b\n", shown.stderr


def test_cli_login_on_a_docker_target_with_url_runs_the_argv_with_its_environment(tmp_path):
    """``cernvm-fixtures login`` on a kept Docker instance whose target sets ``url``: no traceback, no re-split."""
    from cernvm_fixtures import config
    from cernvm_fixtures.providers.docker import DockerProvider
    from cernvm_fixtures.run import Run

    from ..helpers import subprocess_env

    state = tmp_path / "state"
    target = config.parse(
        {"targets": {"dk": {"provider": "docker", "url": "tcp://127.0.0.1:2375"}}}, str(tmp_path / "cernvm.toml")
    ).targets["dk"]
    run = Run(state=state)
    provider = DockerProvider(target, run)
    machine = provider.machine("cvmfx-login-test")
    provider.record(machine, "container", machine.name)
    machine.keep()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\necho "DOCKER_HOST=$DOCKER_HOST argv=$*"\n')
    (bin_dir / "docker").chmod(0o755)
    env = subprocess_env(state)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = subprocess.run(
        [sys.executable, "-m", "cernvm_fixtures.cli", "login", machine.name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == f"DOCKER_HOST=tcp://127.0.0.1:2375 argv=exec -it {machine.name} /init\n", result.stderr
