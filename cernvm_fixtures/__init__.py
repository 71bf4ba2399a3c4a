"""cernvm-fixtures: boot CernVM on every documented platform and check it with pytest."""

from __future__ import annotations

from typing import Any

from .instance import Instance

__all__ = ["Instance", "expect"]
__version__ = "0.1.0"


def expect(instance: Instance, key: str) -> Any:
    """The profile's expectation ``section.key`` for this instance; skips the test if it does not apply.

    For an expectation a check can do without, use ``instance.expected(key)`` (None if not applicable).
    """
    import pytest

    expectation = instance.profile.expect(key, instance.traits)
    if expectation.value is None:
        pytest.skip(f"{instance.target.name}: {expectation.why}")
    return expectation.value
