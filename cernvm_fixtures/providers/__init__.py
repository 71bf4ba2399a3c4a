"""Providers, found through the ``cernvm_fixtures.providers`` entry-point group (ours and third parties')."""

from __future__ import annotations

from .. import registry
from ..registry import GROUP, names
from .base import Machine, Provider, ProviderOptions

__all__ = ["GROUP", "Machine", "Provider", "ProviderOptions", "get", "names"]


def get(name: str) -> type[Provider]:
    """The provider class registered under ``name``; a clear error if there is none."""
    provider: type[Provider] = registry.get(name)
    return provider
