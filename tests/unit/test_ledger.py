"""The ledger: written before creation, durable, and able to tell leftovers from live resources."""

import os
import stat
import subprocess
import time

from cernvm_fixtures import ledger as ledger_module
from cernvm_fixtures.ledger import Ledger, Owner, Resource, all_ledgers
from cernvm_fixtures.run import Run


def test_record_update_forget(tmp_path):
    ledger = Ledger(tmp_path / "ledger")
    first = ledger.record(Resource("kvm", "directory", "vm-1", run="r1", data={"path": "/x"}))
    second = ledger.record(Resource("kvm", "domain", "vm-1", run="r1", data={"uri": "qemu:///system"}))
    assert [r.kind for r in ledger.entries()] == ["directory", "domain"]
    second.data["port"] = 2222
    ledger.update(second)
    assert ledger.entries()[1].data == {"uri": "qemu:///system", "port": 2222}
    ledger.forget(first)
    ledger.forget(first)
    assert [r.kind for r in ledger.entries()] == ["domain"]
    assert list(ledger.directory.glob("*.tmp*")) == []


def test_an_entry_is_durable_once_recorded_its_directory_flushed_after_the_rename(tmp_path, monkeypatch):
    """fsync of the file makes its content durable, not its name: the rename is on disk once the directory is."""
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(ledger_module.os, "fsync", spy_fsync)
    monkeypatch.setattr(ledger_module.os, "replace", spy_replace)
    ledger = Ledger(tmp_path / "run" / "ledger")
    ledger.record(Resource("kvm", "domain", "vm-1", run="r"))
    inode = {p: p.stat().st_ino for p in (tmp_path, tmp_path / "run", ledger.directory)}
    renamed = next(i for i, e in enumerate(events) if e[0] == "replace")
    assert events[renamed - 1][:2] == ("fsync", "file"), events
    assert ("fsync", "dir", inode[ledger.directory]) in events[renamed + 1 :], "the directory is flushed after"
    made = {e[2] for e in events[:renamed] if e[:2] == ("fsync", "dir")}
    assert made == {inode[tmp_path], inode[tmp_path / "run"]}, "each new directory flushed into its parent"


def test_unreadable_entries_are_skipped(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(Resource("kvm", "domain", "vm-1", run="r"))
    (tmp_path / "0-half.json").write_text('{"provider": "kv')
    assert [r.name for r in ledger.entries()] == ["vm-1"]


def test_owner_liveness():
    assert Owner.current().alive()
    child = subprocess.Popen(["sleep", "0"])
    owner = Owner(Owner.current().host, child.pid, Owner.current().start)
    child.wait()
    assert not owner.alive()
    assert Owner("some-other-host", 1, None).alive(), "a remote owner cannot be judged dead from here"


def test_recycled_pid_is_not_the_owner():
    me = Owner.current()
    assert not Owner(me.host, me.pid, "0").alive()


def test_leftover_rules():
    live = Resource("kvm", "domain", "a", run="r")
    assert not live.leftover()
    dead = Resource("kvm", "domain", "b", run="r", owner=Owner(Owner.current().host, 1, "0"))
    assert dead.leftover()
    kept = Resource("kvm", "domain", "c", run="r", owner=dead.owner, kept=True)
    assert not kept.leftover()
    expired = Resource("kvm", "domain", "d", run="r", kept=True, expires=time.time() - 1)
    assert expired.leftover()


def test_run_directory_and_key(tmp_path):
    run = Run(state=tmp_path)
    assert run.key_file.stat().st_mode & 0o777 == 0o600
    assert run.public_key.startswith("ssh-ed25519 ") and run.id in run.public_key
    assert Run(run.id, state=tmp_path).public_key == run.public_key, "a second process of the run reuses the key"
    name = run.name("kvm")
    assert name.startswith(f"cvmfx-{run.id}-kvm-") and name != run.name("kvm")
    run.ledger.record(Resource("kvm", "domain", name, run=run.id))
    run.finish()
    assert run.directory.exists(), "a run directory with ledger entries is kept"
    run.ledger.forget(run.ledger.entries()[0])
    run.finish()
    assert not run.directory.exists()
    assert all_ledgers(tmp_path) == []
