"""Signals and cancellation: Ctrl-C and SIGTERM as KeyboardInterrupt, boot-ahead launches called off, blocking
engine calls that an interrupt does not wait for, and cleanups a second Ctrl-C cannot cut in half.

A leaf module (it imports nothing of the package), so the harness, instances, the testing kit and every
provider use the same process-wide machinery.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- calling off a launch that runs in another thread (boot-ahead) ---------------------------------

_scope = threading.local()


class Cancelled(KeyboardInterrupt):
    """A launch running in a boot-ahead thread was called off (Ctrl-C, SIGTERM, the end of the run): it unwinds
    like Ctrl-C, so the launch destroys what it created."""


@contextmanager
def cancel_scope(event: threading.Event) -> Iterator[None]:
    """Within this block, the calling thread's waits raise :class:`Cancelled` once ``event`` is set."""
    _scope.event = event
    try:
        yield
    finally:
        _scope.event = None


_deferred_signals: list[int] = []


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM handler: raise KeyboardInterrupt, so every teardown runs. Not inside a finalizer
    (``__del__``, e.g. libvirt freeing a domain object): Python would swallow it there as unraisable and the
    interrupt would be lost; the main thread's next :func:`checkpoint` raises it instead."""
    if frame is not None and frame.f_code.co_name == "__del__":
        _deferred_signals.append(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def checkpoint() -> None:
    """Raise a signal's KeyboardInterrupt that arrived inside a finalizer (main thread), or :class:`Cancelled` if
    this thread's launch was called off (a no-op outside a cancel scope)."""
    if _deferred_signals and threading.current_thread() is threading.main_thread():
        signum = _deferred_signals.pop()
        _deferred_signals.clear()
        raise KeyboardInterrupt(signal.Signals(signum).name)
    event = getattr(_scope, "event", None)
    if event is not None and event.is_set():
        raise Cancelled("the launch was called off")


# --- blocking engine calls that Ctrl-C does not wait for -------------------------------------------

_in_flight = 0
_in_flight_lock = threading.Lock()


_abandoned: set[str] = set()


def calls_in_flight() -> int:
    """How many :func:`interruptible` calls are still running in worker threads."""
    return _in_flight


def abandoned(key: str) -> bool:
    """Whether the interruptible call made under ``key`` was abandoned by its interrupted caller and is still
    running: the engine is busy with that object, and whatever it makes goes to the call's ``undo``."""
    with _in_flight_lock:
        return key in _abandoned


def interruptible(
    what: str,
    call: Callable[[], T],
    *,
    undo: Callable[[T], None] | None = None,
    poll: float = 0.05,
    key: str | None = None,
) -> T:
    """Run a blocking engine call (libvirt ``createXML``, ``docker import``...) in a worker thread while the
    calling thread waits in short joins, so a signal's KeyboardInterrupt (or SystemExit) is raised at once.

    If the caller is interrupted, the call keeps running in the (daemon) worker, and whatever it returns
    is handed to ``undo`` as soon as it returns, so nothing created after the interrupt outlives it while
    this process lives; what the process's exit cuts short must be covered by the engine itself (libvirt's
    auto-destroy) or by the ledger entry recorded before the call.
    """
    global _in_flight
    outcome: dict[str, Any] = {}
    lock = threading.Lock()
    done = threading.Event()
    left = False

    def work() -> None:
        global _in_flight
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the caller (or logged if it left)
            outcome["error"] = e
        with lock:
            done.set()
            late = left
        if late:
            _undo(what, outcome, undo)
        with _in_flight_lock:
            _in_flight -= 1
            _abandoned.discard(key or "")

    with _in_flight_lock:
        _in_flight += 1
    threading.Thread(target=work, name=f"cernvm-fixtures: {what}", daemon=True).start()
    try:
        while not done.wait(poll):
            checkpoint()
    except BaseException:
        with lock:
            left = not done.is_set()
            if left and key is not None:
                with _in_flight_lock:
                    _abandoned.add(key)
        if not left:  # finished just as the signal came: undo here, the interrupt still wins
            _undo(what, outcome, undo)
        else:
            log.warning("%s: interrupted; what it creates is destroyed as soon as the engine returns", what)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _undo(what: str, outcome: dict[str, Any], undo: Callable[[Any], None] | None) -> None:
    if undo is None or "value" not in outcome:
        return
    try:
        undo(outcome["value"])
    except Exception as e:  # noqa: BLE001 - nobody is left to raise to; the ledger still has the entry
        log.warning("%s: could not undo after an interrupt: %s", what, e)


class signals_deferred:
    """Hold SIGINT/SIGTERM while destroying, so a second Ctrl-C cannot cut a cleanup in half.

    Python runs signal handlers in the main thread whichever thread the signal reached (xdist's execnet
    thread, paramiko's, pytest-timeout's), so a handler that only records the signal defers it in every
    case; the signals are raised again, in order, once the block is done. Outside the main thread (where
    handlers cannot be changed) a signal cannot interrupt the block anyway: it is handled in the main thread.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> signals_deferred:
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._record) for signum in self.SIGNALS}
        return self

    def _record(self, signum: int, frame: Any) -> None:
        log.warning("cernvm: %s deferred until the cleanup is done", signal.Signals(signum).name)
        self.pending.append(signum)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in self.pending:
            signal.raise_signal(signum)
