"""The instance cache: the run's shared instances by (target, user data), launched on first use or claimed from the
boot pool; what failed to come up (each later test fails at once with the reason); which tests used which."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest

from ..config import Target
from ..context import UserData
from ..errors import CernvmError
from ..instance import Instance
from .boot_pool import BootPool, Key


class InstanceCache:
    """Shared instances of this process, until pytest is done with their target."""

    def __init__(
        self, launch: Callable[[Target, UserData], Instance], pool: BootPool, finish: Callable[[Instance], None]
    ) -> None:
        self.launch = launch
        self.pool = pool
        self.finish = finish
        """What the end of an instance does (the keep policy)."""
        self.shared: dict[Key, Instance] = {}
        self.broken: dict[Key, str] = {}
        """Why the shared instance of a (target, user data) did not come up."""
        self.used_by: dict[str, list[Instance]] = defaultdict(list)
        """The instances each test (by node id) used, for its report."""

    def get(self, target: Target, user_data: UserData) -> Instance:
        """The shared instance of a target for this user data: booted ahead, else launched now, on first use."""
        key = (target.name, user_data.key)
        if key in self.broken:
            pytest.fail(
                f"instance for target {target.name!r} failed to come up earlier in this run:\n{self.broken[key]}",
                pytrace=False,
            )
        if key not in self.shared:
            try:
                ahead = self.pool.claim(key)
                self.shared[key] = ahead if ahead is not None else self.launch(target, user_data)
            except CernvmError as e:
                self.broken[key] = str(e)
                raise
        instance = self.shared[key]
        instance.machine.prolong()  # a run longer than the expiry: carried to the platform's fields too
        return instance

    def release(self, target: str) -> None:
        """Done with a target (pytest moved on): finish its shared instances."""
        for key in [k for k in self.shared if k[0] == target]:
            self.finish(self.shared.pop(key))

    def release_all(self) -> None:
        """Finish every shared instance (the end of the run)."""
        for target in {k[0] for k in self.shared}:
            self.release(target)
