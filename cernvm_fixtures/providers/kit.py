"""What every provider needs, written once: the SDK imported lazily, its errors translated, deletes retried while
the platform says "in use", waits that Ctrl-C reaches, client caches, the ledger entry as flat platform fields.

A leaf module (it imports only errors, the ledger and interrupts), so any provider module may use it.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Literal, TypeVar, overload

from ..errors import ConfigError, ProviderError
from ..interrupts import calls_in_flight, checkpoint
from ..ledger import Owner, Resource
from ..marks import mark, proven

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# --- the platform's SDK: imported lazily, its errors translated -------------------------------------


def sdk(provider: str, extra: str, *modules: str) -> ModuleType:
    """Import ``modules`` (an optional extra's SDK) and return the last; if one is missing, a ConfigError that says
    ``pip install 'cernvm-fixtures[<extra>]'`` (a provider module must import without its SDK installed)."""
    found: ModuleType | None = None
    for module in modules:
        try:
            found = importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"the {provider} provider needs {module.split('.')[0]} ({module} did not import): "
                f"pip install 'cernvm-fixtures[{extra}]'"
            ) from None
    assert found is not None, "sdk() needs at least one module"
    return found


class SdkErrors:
    """How one SDK's exceptions read, so every call to it is translated, and every delete retried, the same way.

    ``errors`` returns (lazily: the SDK is imported on first use) the exception classes that are the SDK's: they
    become ProviderError naming the step, never with the SDK's traceback or request (which may carry secrets);
    other exceptions propagate. ``not_found`` and ``busy`` classify one of them; ``message`` is what it said.
    """

    def __init__(
        self,
        errors: Callable[[], tuple[type[BaseException], ...]],
        *,
        not_found: Callable[[BaseException], bool],
        busy: Callable[[BaseException], bool] = lambda error: False,
        message: Callable[[BaseException], str] = str,
    ) -> None:
        self.errors = errors
        self.not_found = not_found
        self.busy = busy
        self.message = message

    @overload
    def call(
        self, what: str, fn: Callable[..., T], *args: Any, missing_ok: Literal[False] = False, **params: Any
    ) -> T: ...
    @overload
    def call(self, what: str, fn: Callable[..., T], *args: Any, missing_ok: bool, **params: Any) -> T | None: ...
    def call(self, what: str, fn: Callable[..., T], *args: Any, missing_ok: bool = False, **params: Any) -> T | None:
        """``fn(*args, **params)``; an SDK error becomes ProviderError ``"<what>: <message>"`` (``"<what>: not found:
        <message>"`` where the platform says so: its text names what was missing); with ``missing_ok`` "not found"
        returns None."""
        try:
            return fn(*args, **params)
        except self.errors() as e:
            if self.not_found(e):
                if missing_ok:
                    return None
                raise ProviderError(f"{what}: not found: {self.message(e)}") from None
            raise ProviderError(f"{what}: {self.message(e)}") from None

    def delete_until_free(
        self, what: str, delete: Callable[[], object], *, timeout: float, interval: float = 2.0
    ) -> None:
        """Run ``delete`` until the platform takes it: "not found" is done (idempotent teardown), "busy" (a
        dependent resource is still going away) is retried every ``interval`` s for ``timeout`` s, at a cancel
        checkpoint each time; any other SDK error is a ProviderError naming ``what``."""
        deadline = time.monotonic() + timeout
        last = ""

        def attempt() -> bool | None:
            nonlocal last
            try:
                delete()
            except self.errors() as e:
                if self.not_found(e):
                    return True
                if not self.busy(e):
                    raise ProviderError(f"{what}: {self.message(e)}") from None
                last = self.message(e)
                log.debug("%s: in use (%s), retrying", what, last)
                return None
            return True

        wait_until(f"{what}: still in use after {timeout:.0f} s", attempt, deadline, interval, status=lambda: last)


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
        ("mark", mark(resource)),
        *extra.items(),
    ):
        _put(fields, name, value)
    if len(fields) > FIELD_BUDGET:
        raise ProviderError(f"{resource.name}: its ledger entry needs {len(fields)} fields, at most {FIELD_BUDGET}")
    return fields


def decode_fields(fields: Mapping[str, str]) -> Resource | None:
    """The ledger entry :func:`encode_fields` stored (without provider data), None if the fields are not ours: not a
    whole entry, or without the mark of this key (forged, invented, or made with another state directory's key).

    A verbatim copy of a real entry's fields onto another object still decodes: a sweep also checks the object's own
    name (:func:`named_as`) before it trusts them.
    """
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
        found = Resource(
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
    if not proven(found, _get(fields, "mark")):
        log.debug("fields naming %s %s carry no mark of this key: not ours", found.provider, found.name)
        return None
    return found


def named_as(found: Resource, own: str | None, expected: str) -> bool:
    """Whether an object whose fields decoded to ``found`` is the one they were written on: its ``own`` name (what
    the platform calls it, which its tags cannot change) is the name the provider gives that entry's object
    (``expected``). Tags copied onto a foreign object fail here; logged, so a sweep's reader sees why."""
    if own == expected:
        return True
    log.warning(
        "%s: carries the fields of %s's %s but is not named %s: tags copied onto a foreign object; left alone",
        own,
        found.name,
        found.kind,
        expected,
    )
    return False


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
