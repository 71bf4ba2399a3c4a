"""Providers, found through the ``cernvm_fixtures.providers`` entry-point group (ours and third parties')."""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import ConfigError
from .base import Machine, Provider, ProviderOptions

__all__ = ["Machine", "Provider", "ProviderOptions", "get", "names"]

GROUP = "cernvm_fixtures.providers"


def names() -> list[str]:
    """Every installed provider name."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def get(name: str) -> type[Provider]:
    """The provider class registered under ``name``; a clear error if there is none."""
    for ep in entry_points(group=GROUP, name=name):
        return ep.load()
    raise ConfigError(f"unknown provider {name!r}; installed providers are {', '.join(names()) or 'none'}")
