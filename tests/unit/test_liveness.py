"""Liveness for sweep: a run's heartbeat extends expiry while it lives; owners are judged only where their pid means
something (same machine and PID namespace), whatever the hostname says."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from cernvm_fixtures import ledger as ledgers
from cernvm_fixtures.config import Config
from cernvm_fixtures.ledger import HEARTBEAT_STALE, Ledger, Owner, Resource, machine_identity
from cernvm_fixtures.sweep import find_leftovers


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_machine_identity_is_machine_id_and_pid_namespace():
    identity = machine_identity()
    assert identity is not None
    assert identity.endswith("/" + os.readlink("/proc/self/ns/pid"))
    assert Owner.current().machine == identity


def test_a_dead_pid_in_another_namespace_with_the_same_hostname_is_not_judged_dead():
    elsewhere = Owner(socket.gethostname(), dead_pid(), "123", machine="0" * 32 + "/pid:[1]")
    assert elsewhere.alive(), "a pid from another PID namespace says nothing about this one"
    here = Owner(socket.gethostname(), elsewhere.pid, "123", machine=machine_identity())
    assert not here.alive()


def test_same_machine_under_another_hostname_is_still_judged():
    renamed = Owner("old-hostname", dead_pid(), "123", machine=machine_identity())
    assert not renamed.alive()


def test_old_entries_without_machine_load_and_fall_back_to_the_hostname(tmp_path):
    entry = Resource("kvm", "domain", "vm-1", run="r1")
    raw = json.loads(entry.to_json())
    del raw["owner"]["machine"]
    raw["owner"].update(pid=dead_pid(), start="123")
    (tmp_path / "1-kvm-domain-vm-1.json").write_text(json.dumps(raw))
    (old,) = Ledger(tmp_path).entries()
    assert old.owner.machine is None and old.leftover()
    raw["owner"]["host"] = "another-host"
    (tmp_path / "1-kvm-domain-vm-1.json").write_text(json.dumps(raw))
    assert not Ledger(tmp_path).entries()[0].leftover()


def test_recording_starts_the_heartbeat_and_a_thread_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ledgers, "HEARTBEAT_INTERVAL", 0.2)
    ledger = Ledger(tmp_path / "run" / "ledger")
    assert ledger.heartbeat() is None
    ledger.record(Resource("kvm", "domain", "vm-1", run="run"))
    first = ledger.heartbeat()
    assert first is not None and ledger.heartbeat_file == tmp_path / "run" / "heartbeat"
    os.utime(ledger.heartbeat_file, (first - 100, first - 100))
    deadline = time.monotonic() + 5
    while ledger.heartbeat() < first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.heartbeat() >= first, "the heartbeat thread did not touch the file"


@pytest.mark.parametrize(("age", "leftover"), [(0, False), (HEARTBEAT_STALE + 1, True)])
def test_an_expired_resource_is_a_leftover_only_with_a_stale_heartbeat(tmp_path, monkeypatch, age, leftover):
    state = tmp_path / "state"
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(state))
    ledger = Ledger(state / "runs" / "r1" / "ledger")
    ledger.record(Resource("kvm", "domain", "vm-1", run="r1", created=time.time() - 7 * 3600))
    beat = time.time() - age
    os.utime(ledger.heartbeat_file, (beat, beat))
    (entry,) = ledger.entries()
    assert entry.expires < time.time() and entry.owner.alive()
    assert entry.leftover() is leftover
    found = [r.name for _, r in find_leftovers(Config({}))]
    assert found == (["vm-1"] if leftover else [])
