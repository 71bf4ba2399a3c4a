"""The fakes' shared server: a request cut off before its body arrived is dropped, not judged."""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field

from ..fakes.server import FakeHandler, FakeServer


@dataclass(eq=False)
class Echo(FakeServer):
    """A fake that answers every request with its body's length and records what it carried out."""

    done: list[bytes] = field(default_factory=list)

    def handler(self) -> type[FakeHandler]:
        class Handler(FakeHandler):
            def answer(self) -> None:
                raw = self.read_body()
                self.fake.done.append(raw)
                data = str(len(raw)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def test_a_body_cut_off_by_the_client_is_neither_carried_out_nor_a_violation():
    fake = Echo().start()
    try:
        port = fake.http.server_address[1]
        with socket.create_connection(("127.0.0.1", port)) as cut:
            cut.sendall(b"PUT /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("PUT", "/x", body=b"{}")
        assert connection.getresponse().read() == b"2", "the fake stopped answering after the cut-off request"
        time.sleep(0.2)
        assert fake.done == [b"{}"], "the cut-off request was carried out"
        assert fake.violations == []
    finally:
        fake.stop()
