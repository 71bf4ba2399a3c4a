"""Where cernvm-fixtures keeps its per-user cache and state (XDG conventions)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Per-user cache (built appliances, downloaded packages); safe to delete."""
    root = os.environ.get("CERNVM_FIXTURES_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cernvm-fixtures"


def state_dir() -> Path:
    """Per-user state (the ledger and run directories); must survive a crashed run."""
    root = os.environ.get("CERNVM_FIXTURES_STATE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "cernvm-fixtures"


def write_once(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, mode 0600, whole or not at all (a temporary file linked into place); if
    another process made it first, theirs stays (first writer wins). For secrets: keys, never rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600, unique to this thread's call
    tmp = Path(name)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
