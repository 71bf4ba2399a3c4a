"""Azure RBAC's data-plane check in front of Azurite, for tests only.

Azurite's ``--oauth basic`` checks a bearer token's issuer, audience and lifetime, never a role: every principal
with a token may write. On Azure a principal needs a data role on the account or container ("Storage Blob Data
Contributor" to write; "Storage Blob Data Reader" to read; a Contributor on the account has neither), else the
service answers 403 AuthorizationPermissionMismatch. This HTTPS front forwards every request to Azurite unless the
token's principal (its ``oid``) lacks the role the request needs; then it answers as Azure Storage does.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import time
import urllib.parse
from email.utils import formatdate

from ..server import FakeHandler, FakeServer

WRITER = "Storage Blob Data Contributor"
READER = "Storage Blob Data Reader"
OWNER = "Storage Blob Data Owner"
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def principal(authorization: str) -> str | None:
    """The ``oid`` claim of a bearer token (the fake's tokens are unsigned JWTs, as Azurite's basic mode takes)."""
    try:
        claims = authorization.split(" ", 1)[1].split(".")[1]
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["oid"]
    except (IndexError, ValueError, KeyError):
        return None


class BlobRoles(FakeServer):
    """The front: ``roles`` maps a principal's object id to the data roles assigned to it (on the whole account)."""

    def __init__(self, azurite_url: str, context: ssl.SSLContext, tls: ssl.SSLContext) -> None:
        super().__init__()
        self.upstream = urllib.parse.urlsplit(azurite_url)
        self.client_context = context
        self.tls = tls
        self.roles: dict[str, set[str]] = {}
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, in order, for tests to see what the provider did to blobs."""

    def handler(self) -> type[FakeHandler]:
        return _Handler

    def start(self, tls: ssl.SSLContext | None = None) -> BlobRoles:
        return super().start(tls or self.tls)

    def allowed(self, who: str | None, method: str) -> bool:
        """Whether ``who`` holds a role that allows ``method`` (reads: GET and HEAD)."""
        held = self.roles.get(who or "", set())
        return bool(held & {WRITER, OWNER}) or (method in ("GET", "HEAD") and READER in held)


class _Handler(FakeHandler):
    def answer(self) -> None:
        front: BlobRoles = self.fake
        body = self.read_body()
        front.requests.append((self.command, urllib.parse.unquote(self.path.split("?")[0])))
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and not front.allowed(principal(authorization), self.command):
            return self.refuse()
        upstream = http.client.HTTPSConnection(
            front.upstream.hostname, front.upstream.port, context=front.client_context, timeout=60
        )
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP or (self.command == "HEAD" and key.lower() == "content-length"):
                    self.send_header(key, value)  # a HEAD's Content-Length is the blob's size
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    def refuse(self) -> None:
        """Azure Storage's answer to a principal without the data role the request needs."""
        request_id = secrets.token_hex(16)
        message = (
            "This request is not authorized to perform this operation using this permission.\n"
            f"RequestId:{request_id}\nTime:{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}"
        )
        data = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        self.send_response(403, "This request is not authorized to perform this operation using this permission.")
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", "AuthorizationPermissionMismatch")
        self.send_header("x-ms-request-id", request_id)
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
