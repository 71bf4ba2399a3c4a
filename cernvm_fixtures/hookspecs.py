"""Hooks a conftest or plugin can implement to adapt the harness to its network."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .providers.base import Machine


@pytest.hookspec(firstresult=True)
def pytest_cernvm_endpoint(machine: Machine, host: str, port: int) -> tuple[str, int] | None:
    """Where to reach ``machine``'s SSH server instead of ``host:port`` (the address its platform gave).

    Return ``(host, port)`` to redirect, e.g. to a local forward of a gateway, or
    None to keep the platform's address. The first non-None answer wins.
    """
