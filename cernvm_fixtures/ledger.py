"""The ledger: an on-disk record of every resource a run creates, written before the create call.

A crash, SIGKILL or cancelled CI job can leave resources behind; because each one
was recorded first (with its run id, owner process and expiry), `cernvm-fixtures
sweep` can find and destroy it later from the ledger alone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_LIFETIME = 6 * 3600.0
"""Seconds after which a resource counts as expired, even if its run still looks alive."""


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

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()))

    def alive(self) -> bool:
        """True if the owner still runs (only decidable on its own host; elsewhere assume it does)."""
        if self.host != socket.gethostname():
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

    @property
    def key(self) -> str:
        return f"{self.created:.6f}-{self.provider}-{self.kind}-{self.name}"

    def leftover(self, now: float | None = None) -> bool:
        """A resource nobody is responsible for any more: expired, or (unless kept) its owner is gone."""
        if (now or time.time()) >= self.expires:
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

    def record(self, resource: Resource) -> Resource:
        """Write the entry durably (temp file, fsync, rename) before the resource exists."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(resource)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(resource.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
        return found

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.entries())


def all_ledgers(state: Path) -> list[Ledger]:
    """The ledgers of every run recorded under a state directory."""
    return [Ledger(p / "ledger") for p in sorted((state / "runs").glob("*")) if (p / "ledger").is_dir()]
