"""What the plugin reads off a collected test: the target it runs on and the user data its marker asks for."""

from __future__ import annotations

import pytest

from .context import UserData


def item_target(item: pytest.Item) -> str | None:
    """The name of the target a test is parametrized with (None: the test uses no target)."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("cernvm_target") if callspec else None


def item_user_data(item: pytest.Item) -> UserData:
    """The user data of the test's ``cernvm_context`` marker (none: the default); UsageError for a bad marker."""
    marker = item.get_closest_marker("cernvm_context")
    if marker is None:
        return UserData()
    try:
        return UserData(**marker.kwargs)
    except TypeError as e:
        raise pytest.UsageError(
            f"{item.nodeid}: cernvm_context marker: {e}; valid keys: {', '.join(UserData.__dataclass_fields__)}"
        ) from None
