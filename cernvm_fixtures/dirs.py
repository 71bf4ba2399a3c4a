"""Where cernvm-fixtures keeps its per-user cache and state (XDG conventions)."""

from __future__ import annotations

import os
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
