"""xdist ``--dist loadgroup`` for target tests: each target's tests on one worker (they share its instances).

xdist marks a group by renaming the test (``nodeid@group``), which pytest 9 no longer lets it do, so the scheduler
finds the target in the test id itself. Imported only when xdist makes a scheduler.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadGroupScheduling


class TargetScheduling(LoadGroupScheduling):
    """LoadGroupScheduling whose group of a target test is its target (``cernvm-<target>``)."""

    def __init__(self, config: Any, log: Any, targets: list[str]) -> None:
        super().__init__(config, log)
        self.targets = sorted(targets, key=len, reverse=True)
        """Longest first: ``docker-bindmount`` is found before ``docker``."""

    def _split_scope(self, nodeid: str) -> str:
        """The group of a test: ``cernvm-<target>`` for a target test, else xdist's own (``@group`` or the id)."""
        if nodeid.rfind("@") > nodeid.rfind("]") or not nodeid.endswith("]"):
            return super()._split_scope(nodeid)
        ids = nodeid[nodeid.rfind("[") + 1 : -1]
        for target in self.targets:
            if f"-{ids}-".find(f"-{target}-") >= 0:
                return f"cernvm-{target}"
        return nodeid
