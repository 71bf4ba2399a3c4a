"""What every provider needs, written once: waits, client caches, the ledger entry as flat platform fields.

A leaf module (it imports only errors and the ledger), so any provider module may use it.
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

from ..errors import ProviderError
from ..ledger import Owner, Resource

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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


# --- waiting --------------------------------------------------------------------------------------


def wait_until(
    what: str,
    check: Callable[[], T | None],
    deadline: float,
    interval: float,
    *,
    status: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` every ``interval`` s until it returns a value other than None, and return that value.

    At the monotonic ``deadline`` raise ProviderError naming the step ``what`` (and ``status()``, what was
    last seen); a PermanentError from ``check`` ends the wait at once (waiting longer cannot help).
    """
    while True:
        checkpoint()
        value = check()
        if value is not None:
            return value
        now = time.monotonic()
        if now >= deadline:
            seen = status() if status is not None else ""
            raise ProviderError(f"{what}: not done by the deadline" + (f" ({seen})" if seen else ""))
        time.sleep(max(0.0, min(interval, deadline - now)))


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


# --- one client per key, per process ---------------------------------------------------------------


class ClientCache(Generic[K, V]):
    """One SDK client or connection per key for the whole process, made on first use under a lock.

    ``alive`` says whether a cached client can still be used (else a new one is made); ``close`` is
    called for each client on :meth:`clear` and at interpreter exit (while the interpreter is intact).
    """

    def __init__(
        self,
        make: Callable[[K], V],
        *,
        alive: Callable[[V], bool] | None = None,
        close: Callable[[V], None] | None = None,
    ) -> None:
        self._make = make
        self._alive = alive
        self._close = close
        self._clients: dict[K, V] = {}
        self._lock = threading.Lock()
        if close is not None:
            atexit.register(self.clear)

    def get(self, key: K) -> V:
        """The client for ``key``; errors from making one propagate and nothing is cached."""
        with self._lock:
            found = self._clients.get(key)
            if found is None or (self._alive is not None and not self._alive(found)):
                found = self._clients[key] = self._make(key)
            return found

    def clear(self) -> None:
        """Forget (and close) every client, e.g. after the credentials in the environment changed."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        if calls_in_flight():
            return  # closing would wait for a blocking call an interrupt left running; exit closes them
        for found in clients:
            if self._close is not None:
                try:
                    self._close(found)
                except Exception as e:  # noqa: BLE001 - closing is best effort
                    log.debug("closing a client failed: %s", e)


# --- the ledger entry as flat key/value fields ------------------------------------------------------

FIELD_PREFIX = "cvmfx-"
"""Every field key starts with this (a lowercase letter first, as GCE label keys must)."""
FIELD_LIMIT = 63
"""Characters per key and per value: GCE labels, the strictest platform we store fields on."""
FIELD_BUDGET = 20
"""Fields one entry may take at most (EC2 and Azure allow 50 tags per resource; the rest are the user's)."""
SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def escape(text: str) -> str:
    """``text`` in GCE label value characters: [a-z0-9-] as is, every other UTF-8 byte as ``_xx`` (hex)."""
    return "".join(c if c in SAFE else "".join(f"_{b:02x}" for b in c.encode()) for c in text)


def unescape(text: str) -> str:
    """The inverse of :func:`escape`; ValueError if ``text`` is not an escaped string."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not all(c in "0123456789abcdef" for c in digits):
                raise ValueError(f"bad escape in {text!r}")
            out.append(int(digits, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode()


def _chunks(value: str) -> list[str]:
    """``value`` in pieces of at most FIELD_LIMIT characters, never splitting an ``_xx`` escape."""
    pieces = []
    while len(value) > FIELD_LIMIT:
        cut = FIELD_LIMIT
        if "_" in value[cut - 2 : cut]:
            cut = value.rindex("_", cut - 2, cut)
        pieces.append(value[:cut])
        value = value[cut:]
    return [*pieces, value]


def _put(fields: dict[str, str], name: str, value: str) -> None:
    for i, piece in enumerate(_chunks(escape(value))):
        fields[f"{FIELD_PREFIX}{name}" + (f"_{i + 1}" if i else "")] = piece


def _get(fields: Mapping[str, str], name: str) -> str | None:
    key = FIELD_PREFIX + name
    if key not in fields:
        return None
    value, i = fields[key], 2
    while f"{key}_{i}" in fields:
        value += fields[f"{key}_{i}"]
        i += 1
    return unescape(value)


def encode_fields(resource: Resource, **extra: str) -> dict[str, str]:
    """A ledger entry as flat fields within every platform's label/tag limits (plus ``extra`` fields).

    Keys: ``cvmfx-<field>`` of lowercase letters, digits, ``-`` and ``_``; values: at most 63 characters
    of [a-z0-9_-] (long values continue in ``<key>_2``, ``<key>_3``...). Decoded by :func:`decode_fields`.
    """
    fields: dict[str, str] = {}
    owner = resource.owner
    for name, value in (
        ("provider", resource.provider),
        ("kind", resource.kind),
        ("name", resource.name),
        ("run", resource.run),
        ("target", resource.target),
        ("owner-host", owner.host),
        ("owner-pid", str(owner.pid)),
        ("created", str(round(resource.created * 1e6))),
        ("expires", str(round(resource.expires * 1e6))),
        ("kept", "true" if resource.kept else "false"),
        *(() if owner.start is None else (("owner-start", owner.start),)),
        *(() if owner.machine is None else (("owner-machine", owner.machine),)),
        *extra.items(),
    ):
        _put(fields, name, value)
    if len(fields) > FIELD_BUDGET:
        raise ProviderError(f"{resource.name}: its ledger entry needs {len(fields)} fields, at most {FIELD_BUDGET}")
    return fields


def decode_fields(fields: Mapping[str, str]) -> Resource | None:
    """The ledger entry :func:`encode_fields` stored (without provider data), None if the fields are not ours."""
    try:
        values = {
            name: _get(fields, name)
            for name in (
                "provider",
                "kind",
                "name",
                "run",
                "target",
                "owner-host",
                "owner-pid",
                "owner-start",
                "owner-machine",
                "created",
                "expires",
                "kept",
            )
        }
        required = ("provider", "kind", "name", "run", "owner-host", "owner-pid", "created", "expires")
        if any(values[name] is None for name in required):
            return None
        return Resource(
            provider=str(values["provider"]),
            kind=str(values["kind"]),
            name=str(values["name"]),
            run=str(values["run"]),
            target=values["target"] or "",
            owner=Owner(
                str(values["owner-host"]), int(str(values["owner-pid"])), values["owner-start"], values["owner-machine"]
            ),
            created=int(str(values["created"])) / 1e6,
            expires=int(str(values["expires"])) / 1e6,
            kept=values["kept"] == "true",
        )
    except (ValueError, UnicodeDecodeError):
        return None


def field(fields: Mapping[str, str], name: str) -> str | None:
    """One (extra) field of an encoded entry, decoded; None if absent."""
    try:
        return _get(fields, name)
    except (ValueError, UnicodeDecodeError):
        return None


def plain(text: str) -> bool:
    """Whether ``text`` is a plain name (lowercase letters, digits, ``-``): safe as one path component."""
    return bool(text) and set(text) <= SAFE and not text.startswith("-")


def machine_directory(state: Path, run: str, name: str) -> Path | None:
    """``<state>/runs/<run>/machines/<name>``, the only host path a provider may delete; None if either
    name is not plain (a forged label such as ``../..`` must not reach outside the state directory)."""
    if not (plain(run) and plain(name)):
        return None
    return state / "runs" / run / "machines" / name


def remove_machine_directory(resource: Resource) -> None:
    """Delete a recorded machine directory, only if it is ``.../runs/<run>/machines/<name>`` of that entry."""
    path = resource.data["path"]
    if not owned_directory(path, resource.run, resource.name):
        raise ProviderError(f"{path} is not a machine directory runs/{resource.run}/machines/{resource.name}")
    shutil.rmtree(path, ignore_errors=True)


def owned_directory(path: str | Path, run: str, name: str) -> bool:
    """Whether ``path`` is a machine directory ``.../runs/<run>/machines/<name>`` of this run and machine."""
    parts = Path(path).parts
    ours = len(parts) > 4 and parts[-4:] == ("runs", run, "machines", name) and ".." not in parts
    return ours and plain(run) and plain(name)


# --- jump hosts ------------------------------------------------------------------------------------

JUMP = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:@\[\]]+)(?::(?P<port>\d{1,5}))?$")
"""A ``jump_host`` value: ``[user@]host[:port]`` (IPv6 in brackets)."""


def parse_jump(value: str) -> tuple[str | None, str, int]:
    """(user, host, port) of a ``jump_host`` value (validated by the options)."""
    match = JUMP.match(value)
    if match is None:
        raise ValueError(f"jump host {value!r}: expected [user@]host[:port]")
    return match["user"], match["host"].strip("[]"), int(match["port"] or 22)


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
