"""Shared fixtures of the harness's own tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state directory (ledger, run directories) for one test."""
    path = tmp_path / "state"
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(path))
    return path


def domains_under(directory: Path) -> list[str]:
    """libvirt domains whose recorded machine directory lies under ``directory`` (i.e. made by that test)."""
    names = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in names:
        if not name.startswith("cvmfx-"):
            continue
        xml = subprocess.run(
            ["virsh", "-c", "qemu:///system", "dumpxml", name], capture_output=True, text=True
        ).stdout
        if str(directory) in xml:
            found.append(name)
    return found


def ledger_entries(state: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in state.glob("runs/*/ledger/*.json")]


def subprocess_env(state: Path) -> dict[str, str]:
    env = dict(os.environ, CERNVM_FIXTURES_STATE=str(state))
    env.pop("PYTEST_ADDOPTS", None)
    return env
