"""cernvm-fixtures: boot CernVM on every documented platform and check it with pytest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instance import Instance

if TYPE_CHECKING:
    from .config import Target

__all__ = ["Instance", "expect", "expect_ahead"]
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


def expect_ahead(target: Target, key: str) -> Any:
    """The profile's expectation ``section.key`` for every instance of ``target``, read before one boots (with the
    traits the provider knows from the target alone); skips the test if it does not apply, so a scenario that needs
    a fresh instance of its own does not boot one for nothing."""
    import pytest

    from . import providers

    expectation = target.load_profile().expect(key, providers.get(target.provider).target_traits(target))
    if expectation.value is None:
        pytest.skip(f"{target.name}: {expectation.why}")
    return expectation.value
