"""What the local clouds (``openstack``, ``gce``, ``azure`` in tests/fakes) share: the fake protocol.

* :class:`FakeServer`: the cloud's state behind one HTTP(S) server on a free port of 127.0.0.1, in a daemon
  thread (``start()``, ``url``, ``stop()``), with
* ``hooks``: what a test installs to see each API call (a :class:`Call`) before the fake carries it out, under
  the fake's lock: to look at what the provider did so far (the ledger before a create), or to inject a failure
  by raising the fake's own error (GCE's ``Failure``, ARM's ``ArmError``, OpenStack's ``Fault``), which is
  answered as the cloud would answer it;
* ``violations``: what the fake records that the real cloud would not have accepted or answered (a request or a
  response outside the cloud's schema), and the fake's own failures (a bug of the fake answers 500);
  ``checked()``, each fake's per-test fixture, fails a test that leaves any.
* :class:`FakeHandler`: a fake's request handler: HTTP/1.1, quiet, every method to ``answer``; a request whose
  body never fully arrived is dropped (:class:`ClientGone`).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Call:
    """One API call as a fake received it, for its hooks."""

    method: str
    """The HTTP method."""
    path: str
    """The URL's path."""
    body: Any = None
    """The request's JSON body (None without one; the bytes if it is not JSON)."""
    name: str = ""
    """The API's own name of the call, where it has one (GCE's method id, e.g. ``compute.instances.insert``)."""


def decoded(raw: bytes) -> Any:
    """A request body as a hook sees it: JSON decoded, else the bytes; None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass(eq=False)
class FakeServer:
    """A local cloud's server and the two lists its tests use (see the module)."""

    hooks: list[Callable[[Call], None]] = field(default_factory=list, init=False, repr=False)
    violations: list[str] = field(default_factory=list, init=False, repr=False)
    http: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    def handler(self) -> type[FakeHandler]:
        """The request handler class of this fake."""
        raise NotImplementedError

    def start(self, tls: ssl.SSLContext | None = None) -> Self:
        """Serve on a free port of 127.0.0.1 (over TLS with ``tls``) until ``stop()``; returns the fake."""
        http = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        http.daemon_threads = True
        if tls is not None:
            http.socket = tls.wrap_socket(http.socket, server_side=True)
        http.fake = self  # type: ignore[attr-defined]
        self.http = http
        threading.Thread(target=http.serve_forever, name=f"fake-{type(self).__name__}", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        """Where the fake listens: ``http(s)://127.0.0.1:PORT``."""
        assert self.http is not None, "the fake is not started"
        scheme = "https" if isinstance(self.http.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.http.server_address[1]}"

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()

    def called(self, call: Call) -> None:
        """Run the tests' hooks on a call the fake is about to carry out."""
        for hook in list(self.hooks):
            hook(call)

    @contextmanager
    def checked(self) -> Iterator[None]:
        """One test's use of the fake: no hooks of another test, and the violations this test caused fail it."""
        self.hooks.clear()
        self.violations.clear()
        yield
        self.hooks.clear()
        found = list(self.violations)
        self.violations.clear()
        assert found == [], f"{type(self).__name__} recorded what the real cloud would not do:\n" + "\n".join(found)


class ClientGone(Exception):
    """The client closed its connection before its request's body arrived (a Ctrl-C in the middle of a request): a
    real service never sees that request, so the fake neither carries it out nor records it as a violation."""


class FakeHandler(BaseHTTPRequestHandler):
    """Answers every request of a :class:`FakeServer` with its ``answer()``."""

    protocol_version = "HTTP/1.1"
    server: Any

    @property
    def fake(self) -> Any:
        return self.server.fake

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def read_body(self) -> bytes:
        """The request's body; :class:`ClientGone` if the connection closed before all of it arrived."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            raise ClientGone(f"{self.command} {self.path}: {len(raw)} of {length} bytes of the body arrived")
        return raw

    def answer(self) -> None:
        """Answer the request (method ``self.command``, path ``self.path``)."""
        raise NotImplementedError

    def _answer(self) -> None:
        try:
            self.answer()
        except ClientGone:
            self.close_connection = True  # nothing to answer, and nothing the cloud would have judged

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer
