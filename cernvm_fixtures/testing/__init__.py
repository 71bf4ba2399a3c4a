"""Test support for providers: a local provider for the harness's own tests, and the contract suite.

A provider package proves itself with :mod:`cernvm_fixtures.testing.contract`; the ``local`` provider
(:mod:`cernvm_fixtures.testing.local`) is registered only by tests, through :func:`register_provider`.
"""

from __future__ import annotations

from pathlib import Path

from ..providers import GROUP


def register_provider(directory: Path, name: str, value: str) -> Path:
    """Declare provider ``name`` (``"module:Class"``) in the entry point group, as a distribution in ``directory``.

    Put ``directory`` on ``sys.path`` (and ``PYTHONPATH`` for child processes) to make it installed.
    """
    dist = directory / f"cernvm_fixtures_testing_{name}-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cernvm-fixtures-testing-{name}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[{GROUP}]\n{name} = {value}\n")
    return directory
