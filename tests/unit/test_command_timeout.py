"""The default command timeout comes from the target (``command_timeout``) and every call may override it."""

from __future__ import annotations

import textwrap

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.instance import Instance
from cernvm_fixtures.testinfra_backend import host_for
from cernvm_fixtures.transport.base import Result, Transport


class Recording(Transport):
    """A transport that records the timeout each command was given."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def unreachable(self) -> None:
        return None

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, command, *, timeout=None, stdin=None):
        self.timeouts.append(timeout)
        return Result(command, 0, stdin or b"", b"")


def target(tmp_path, extra: str = "") -> config.Target:
    (tmp_path / "cernvm.toml").write_text(textwrap.dedent(f'[targets.kvm]\nprovider = "kvm"\n{extra}'))
    return config.load(tmp_path / "cernvm.toml").targets["kvm"]


def instance(target: config.Target) -> tuple[Instance, Recording]:
    handle = Instance.__new__(Instance)
    handle.target, handle._host = target, None
    handle.machine = type("Machine", (), {"name": "stand-in"})()
    transport = handle.__dict__["transport"] = Recording()
    return handle, transport


def test_target_default_and_per_call_timeouts(tmp_path):
    handle, transport = instance(target(tmp_path, "command_timeout = 900"))
    handle.run("true")
    handle.run("true", timeout=5)
    handle.run("true", timeout=None)
    assert transport.timeouts == [900, 5, None]


def test_testinfra_calls_take_the_target_default_or_their_own(tmp_path):
    handle, transport = instance(target(tmp_path))
    host = host_for(handle)
    host.run("true")
    host.run("sleep %s", "1", timeout=3600)
    assert host.run("cat", stdin="data").stdout == "data"
    assert transport.timeouts == [120, 3600, 120]
    with pytest.raises(TypeError):
        host.run("true", timout=5)


@pytest.mark.parametrize("value", ["0", "-1", '"long"'])
def test_bad_command_timeout_is_named(tmp_path, value):
    with pytest.raises(ConfigError, match="command_timeout"):
        target(tmp_path, f"command_timeout = {value}")
