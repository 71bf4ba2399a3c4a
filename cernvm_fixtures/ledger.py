"""The ledger: an on-disk record of every resource a run creates, written before the create call.

A crash, SIGKILL or cancelled CI job can leave resources behind; because each one
was recorded first (with its run id, owner process and expiry), `cernvm-fixtures
sweep` can find and destroy it later from the ledger alone. While a run lives, a
daemon thread touches its heartbeat file, so a run longer than the expiry is not
swept while alive: a resource expires only once its expiry passed *and* its run's
heartbeat is stale.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_LIFETIME = 6 * 3600.0
"""Seconds after which a resource counts as expired, unless its run's heartbeat is fresh."""
HEARTBEAT_INTERVAL = 60.0
"""Seconds between touches of a living run's heartbeat file."""
HEARTBEAT_STALE = 5 * HEARTBEAT_INTERVAL
"""A heartbeat older than this means the run no longer lives (its process is gone or frozen)."""
HEARTBEAT = "heartbeat"
"""The heartbeat file, in the run directory (the ledger directory's parent)."""


def machine_identity() -> str | None:
    """This machine and PID namespace (``/etc/machine-id`` + ``/proc/self/ns/pid``): where a pid means something.

    Two containers may share a hostname (and even a machine id, copied into an image);
    their PID namespaces differ, so a pid is only checked where both parts match.
    """
    parts = []
    try:
        parts.append(Path("/etc/machine-id").read_text().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("")
    return "/".join(parts) if any(parts) else None


def _process_start(pid: int) -> str | None:
    """Start time of a process (from /proc), so a recycled pid is not mistaken for its owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Owner:
    """The process that created a resource; a resource whose owner is gone is a leftover."""

    host: str
    pid: int
    start: str | None
    machine: str | None = None
    """:func:`machine_identity` of the owner; None in entries written before it was recorded."""

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()), machine_identity())

    def alive(self) -> bool:
        """True if the owner still runs (decidable only in its machine and PID namespace; elsewhere assume it does)."""
        if self.machine is not None:
            if self.machine != machine_identity():
                return True
        elif self.host != socket.gethostname():
            return True
        return self.start is not None and _process_start(self.pid) == self.start


@dataclass
class Resource:
    """One thing a provider creates: enough data to destroy it without any other state."""

    provider: str
    kind: str
    name: str
    run: str
    target: str = ""
    data: dict = field(default_factory=dict)
    owner: Owner = field(default_factory=Owner.current)
    created: float = field(default_factory=time.time)
    expires: float = 0.0
    kept: bool = False

    def __post_init__(self) -> None:
        if not self.expires:
            self.expires = self.created + DEFAULT_LIFETIME
        self.heartbeat: float | None = None
        """When the run last showed it lives (set by the ledger that read this entry; not stored in it)."""

    @property
    def key(self) -> str:
        return f"{self.created:.6f}-{self.provider}-{self.kind}-{self.name}"

    def leftover(self, now: float | None = None) -> bool:
        """Nobody is responsible for it any more: expired with a stale heartbeat, or (unless kept) its owner is gone."""
        now = now or time.time()
        beating = self.heartbeat is not None and now - self.heartbeat < HEARTBEAT_STALE
        if now >= self.expires and not beating:
            return True
        return not self.kept and not self.owner.alive()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Resource:
        raw = json.loads(text)
        raw["owner"] = Owner(**raw["owner"])
        return cls(**raw)


class Ledger:
    """The ledger of one run: one JSON file per resource under ``<run dir>/ledger``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, resource: Resource) -> Path:
        return self.directory / f"{resource.key}.json"

    @property
    def heartbeat_file(self) -> Path:
        return self.directory.parent / HEARTBEAT

    def heartbeat(self) -> float | None:
        """When the run last showed it lives (the heartbeat file's mtime), None if it never did."""
        try:
            return self.heartbeat_file.stat().st_mtime
        except OSError:
            return None

    def beat(self) -> None:
        """Touch the heartbeat now, and keep touching it from a daemon thread while this process lives."""
        self.heartbeat_file.touch()
        key = str(self.heartbeat_file)
        with _beating_lock:
            if key not in _beating:
                thread = threading.Thread(
                    target=_keep_beating, args=(self.heartbeat_file,), name="cernvm-heartbeat", daemon=True
                )
                _beating[key] = thread
                thread.start()

    def record(self, resource: Resource) -> Resource:
        """Write the entry durably before the resource exists (temp file, fsync, rename, fsync of the directory: a
        rename is only on disk once its directory is); the run's heart beats."""
        _durable_mkdir(self.directory)
        self.beat()
        path = self._path(resource)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(resource.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(self.directory)
        return resource

    def update(self, resource: Resource) -> None:
        """Rewrite an entry, e.g. to add the id the platform assigned or to mark it kept."""
        self.record(resource)

    def forget(self, resource: Resource) -> None:
        """Drop an entry once its resource is gone (idempotent)."""
        self._path(resource).unlink(missing_ok=True)

    def entries(self) -> list[Resource]:
        """Entries in creation order; unreadable (half-written) files are skipped."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(Resource.from_json(path.read_text()))
            except (OSError, ValueError, TypeError, KeyError):
                continue
        found.sort(key=lambda r: r.created)
        beat = self.heartbeat()
        for resource in found:
            resource.heartbeat = beat
        return found

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.entries())


def _fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries (a new name, a rename) to disk: after a power cut the entry is there."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_mkdir(directory: Path) -> None:
    """Create ``directory`` and missing parents, each new one flushed into its parent (the ledger's own directory
    must survive a crash as well as the entries in it)."""
    if directory.is_dir():
        return
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        _fsync_directory(made.parent)


_beating: dict[str, threading.Thread] = {}
_beating_lock = threading.Lock()


def _keep_beating(path: Path) -> None:
    """Touch ``path`` every HEARTBEAT_INTERVAL until its run directory is gone (the run finished)."""
    while True:
        time.sleep(HEARTBEAT_INTERVAL)
        try:
            os.utime(path)
        except FileNotFoundError:
            if not path.parent.exists():
                break
            path.touch()
        except OSError:
            continue
    with _beating_lock:
        _beating.pop(str(path), None)


def all_ledgers(state: Path) -> list[Ledger]:
    """The ledgers of every run recorded under a state directory."""
    return [Ledger(p / "ledger") for p in sorted((state / "runs").glob("*")) if (p / "ledger").is_dir()]
