"""The run's signal handlers: SIGTERM (a cancelled CI job) unwinds the process like Ctrl-C, and an xdist
controller passes it on to its workers and waits for their teardown first.

The handler that turns a signal into KeyboardInterrupt, and the deferral around teardown, are
:mod:`cernvm_fixtures.interrupts`'; this part installs them for a run and puts the previous ones back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..interrupts import interrupt
from ..ledger import Ledger

WORKER_TEARDOWN = 120.0
"""Seconds an xdist controller given SIGTERM waits for its workers' teardown before reaping what is left."""


@dataclass
class SignalHandlers:
    """The handlers this process installed for the run, and the ones they replaced."""

    ledger: Ledger
    """The run's ledger: whether a worker still holds something it must destroy."""
    workers: list[int] = field(default_factory=list)
    """xdist controller: the pids of its workers, to pass SIGTERM on to."""
    previous_sigterm: Any = None
    previous_sigint: Any = None

    def install(self) -> None:
        """SIGTERM (a cancelled CI job) unwinds this process like Ctrl-C from now on, and neither is lost in a
        finalizer (:func:`interrupts.interrupt`); set from the main thread, once."""
        if self.previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.previous_sigint = signal.signal(signal.SIGINT, interrupt)

    def forward_to_workers(self) -> None:
        """xdist controller: on SIGTERM, signal every worker, wait (bounded) for their teardown, then unwind."""
        if self.previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, self._forward)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` or :meth:`forward_to_workers` replaced (the end of the run)."""
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
        if self.previous_sigint is not None:
            signal.signal(signal.SIGINT, self.previous_sigint)

    def _forward(self, signum: int, frame: Any) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + WORKER_TEARDOWN
        while self._workers_tearing_down() and time.monotonic() < deadline:
            time.sleep(0.1)
        raise KeyboardInterrupt("SIGTERM")

    def _workers_tearing_down(self) -> bool:
        """Whether a live worker still holds something it must destroy. A worker whose teardown is done stays
        alive until this controller closes its gateway, so waiting for the processes to end would wait in vain."""
        live = {pid for pid in self.workers if _running(pid)}
        return bool(live) and any(r.owner.pid in live and not r.kept for r in self.ledger.entries())


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
