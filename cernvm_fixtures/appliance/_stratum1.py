"""The test appliance's CernVM-FS server: plain HTTP on 127.0.0.1 serving a build's ``stratum1`` directory.

The guest reaches it at :data:`~._builder.STRATUM1` through QEMU's ``guestfwd`` (user-mode networking, also
with ``restrict=on``), which connects a character device to this server; nothing but this process's own files
is served, and only on the loopback interface.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

_lock = threading.Lock()
_servers: dict[Path, http.server.ThreadingHTTPServer] = {}


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: QEMU's guestfwd device carries one at a time

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet: the guest's boot log records what it fetched."""


def serve(directory: Path) -> int:
    """The port on 127.0.0.1 where ``directory`` is served (started once per directory and process)."""
    directory = directory.resolve()
    with _lock:
        server = _servers.get(directory)
        if server is None:
            handler = functools.partial(_Handler, directory=str(directory))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="cvmfx-stratum1", daemon=True).start()
            _servers[directory] = server
        return server.server_address[1]
