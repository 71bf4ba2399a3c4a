"""The provider registry: provider classes by name, from the ``cernvm_fixtures.providers`` entry-point group (ours
and third parties').

A leaf: config and the doctor find a target's provider here without importing any provider module (the classes
load when asked for). ``cernvm_fixtures.providers.get`` is the same lookup, typed as a Provider class.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigError

GROUP = "cernvm_fixtures.providers"


def names() -> list[str]:
    """Every installed provider name."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def get(name: str) -> Any:
    """The provider class registered under ``name``; a clear error if there is none."""
    for ep in entry_points(group=GROUP, name=name):
        return ep.load()
    raise ConfigError(f"unknown provider {name!r}; installed providers are {', '.join(names()) or 'none'}")
