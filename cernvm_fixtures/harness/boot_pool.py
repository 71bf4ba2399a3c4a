"""The boot pool: launch the instances a run will need in parallel (boot-ahead), hand each to the first test that
asks, and call off what no test claimed.

Which instances the collected tests need is the plugin's question (:mod:`cernvm_fixtures.boot_ahead`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ..config import Target
from ..context import UserData
from ..instance import Instance, launch
from ..interrupts import cancel_scope, checkpoint
from ..providers import get as get_provider
from ..run import Run

log = logging.getLogger(__name__)

BOOT_AHEAD_THREADS = 32
"""Threads waiting for a provider's boot slot or booting (the per-provider limits decide how many boot at once)."""
BOOT_AHEAD_STOP = 120.0
"""Seconds the end of a run waits for a called-off boot-ahead launch to unwind (it destroys what it made)."""

Key = tuple[str, str]
"""(target name, user data key): one shared instance."""


class BootPool:
    """Boot-ahead launches, at most each provider's ``parallel_boots`` at a time, until a test claims them."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.ahead: dict[Key, Future[Instance]] = {}
        """Launches not yet claimed by a test, by (target, user data)."""
        self.warmed: set[str] = set()
        """xdist worker: the targets whose instances were booted ahead when their group reached this worker."""
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._limits: dict[str, threading.BoundedSemaphore] = {}

    @property
    def called_off(self) -> bool:
        """Whether an interrupt or the end of the run called off the launches (no new ones start)."""
        return self._cancel.is_set()

    def start(self, wanted: list[tuple[Target, UserData]]) -> None:
        """Launch each (target, user data) not under way already, concurrently."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=BOOT_AHEAD_THREADS, thread_name_prefix="cernvm-boot-ahead")
        for target, user_data in wanted:
            key = (target.name, user_data.key)
            if key in self.ahead:
                continue
            if target.provider not in self._limits:
                self._limits[target.provider] = threading.BoundedSemaphore(get_provider(target.provider).parallel_boots)
            self.ahead[key] = self._pool.submit(self._boot, self._limits[target.provider], target, user_data)

    def _boot(self, limit: threading.BoundedSemaphore, target: Target, user_data: UserData) -> Instance:
        with limit, cancel_scope(self._cancel):
            checkpoint()
            return launch(target, self.run, user_data=user_data)

    def claim(self, key: Key) -> Instance | None:
        """The instance booted ahead for ``key`` (None: none was), once ready. Waits in short steps (a signal's
        KeyboardInterrupt is raised at once); an interrupt calls off every boot still under way, so they unwind
        while pytest does."""
        ahead = self.ahead.pop(key, None)
        if ahead is None:
            return None
        try:
            while not ahead.done():
                wait([ahead], timeout=0.1)
        except BaseException:
            self._cancel.set()
            raise
        return ahead.result()

    def stop(self, finish: Callable[[Instance], None]) -> None:
        """Call off the launches no test claimed and ``finish`` what they made: nothing booted ahead outlives the
        run."""
        if self._pool is None:
            return
        self._cancel.set()
        for key, ahead in list(self.ahead.items()):
            try:
                instance = ahead.result(timeout=BOOT_AHEAD_STOP)
            except BaseException as e:  # noqa: BLE001 - cancelled or failed: the launch destroyed its own machine
                log.debug("boot-ahead of %s ended: %s", key[0], e)
            else:
                finish(instance)
            del self.ahead[key]
        self._pool.shutdown(wait=False, cancel_futures=True)
