"""Boot-ahead selection: whether the run boots ahead, and which shared instances the collected tests need (one per
target and user data). The launching itself is the harness's boot pool (:mod:`cernvm_fixtures.harness.boot_pool`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from .config import Target
from .context import UserData
from .items import item_target, item_user_data


def wanted(config: pytest.Config) -> bool:
    """Whether to boot ahead: ``--cernvm-no-boot-ahead`` or the ini key ``cernvm_boot_ahead``, never when only
    collecting."""
    option = config.option.cernvm_boot_ahead
    return bool(config.getini("cernvm_boot_ahead") if option is None else option) and not config.option.collectonly


def needed(
    items: Sequence[pytest.Item], targets: Mapping[str, Target], target: str | None = None
) -> list[tuple[Target, UserData]]:
    """Each (target, user data) whose shared instance the selected tests use (of one target, if given): tests
    asking for ``cernvm`` and not skipped by a marker."""
    found: dict[tuple[str, str], tuple[Target, UserData]] = {}
    for item in items:
        name = item_target(item)
        if name is None or (target is not None and name != target) or item.get_closest_marker("skip"):
            continue
        if "cernvm" not in getattr(item, "fixturenames", ()):
            continue
        try:
            user_data = item_user_data(item)
        except pytest.UsageError:
            continue  # the test reports its bad marker itself
        found.setdefault((name, user_data.key), (targets[name], user_data))
    return list(found.values())
