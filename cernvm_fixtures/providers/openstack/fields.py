"""The ledger entry on the platform: the kit's fields as ``key=value`` tags on Neutron and Glance resources and as
server metadata on Nova servers (with the few a listing filters on as server tags too). Imports only the SDK seam.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ...ledger import DEFAULT_LIFETIME, Owner, Resource
from ...marks import name_mark, proven_name
from ..kit import FIELD_PREFIX, decode_fields, encode_fields
from .api import SDK

MARKER = f"{FIELD_PREFIX}provider=openstack"
"""The tag of the provider field, which every resource of ours carries (servers, security groups, floating IPs,
images): listings filter on it."""
SERVER_TAG_LENGTH = 60
"""Nova: a server tag is 1-60 characters without ',' or '/'; at most 50 per server."""
SERVER_TAG_FIELDS = tuple(FIELD_PREFIX + name for name in ("provider", "run", "name"))
"""The fields a server carries as tags too, where they fit: what a listing of servers filters on."""


def tag_list(fields: Mapping[str, str]) -> list[str]:
    """Fields as Neutron and Glance tags: ``key=value`` (no ',' or '/', well under their 255 characters)."""
    return [f"{key}={value}" for key, value in fields.items()]


def tag_fields(tags: Iterable[str]) -> dict[str, str]:
    """The fields among a resource's tags (the inverse of :func:`tag_list`; other tags are left out)."""
    return dict(tag.split("=", 1) for tag in tags if tag.startswith(FIELD_PREFIX) and "=" in tag)


def server_tags(fields: Mapping[str, str]) -> list[str]:
    """Nova server tags: the fields a listing filters on, each where it fits Nova's 60 characters (the whole entry
    goes into the server's metadata)."""
    wanted = {key: value for key, value in fields.items() if key in SERVER_TAG_FIELDS}
    return [tag for tag in tag_list(wanted) if len(tag) <= SERVER_TAG_LENGTH]


def from_fields(kind: str, fields: Mapping[str, str], data: dict[str, Any]) -> Resource | None:
    """A ledger-like entry of ``kind`` from a resource's fields alone (tags or metadata); None if it is not ours."""
    found = decode_fields(fields)
    if found is None or found.provider != "openstack":
        return None
    return replace(found, kind=kind, data=data)


KEYPAIR_NAME = re.compile(r"^(cvmfx-[0-9a-f]{8}-[a-z0-9-]+)-k([0-9a-f]{16})$")
"""A key pair of ours: ``<machine>-k<the machine name's mark>`` (:func:`keypair_name`)."""


def keypair_name(machine: str) -> str:
    """The name of a machine's key pair: the machine's, plus the mark of its name (a key pair has no tags, so its
    name carries the proof that this key made it)."""
    return f"{machine}-k{name_mark(machine)}"


def keypair_machine(name: str) -> str | None:
    """The machine a key pair named by :func:`keypair_name` with this key belongs to; None for any other name."""
    found = KEYPAIR_NAME.match(name)
    return found.group(1) if found and proven_name(found.group(1), found.group(2)) else None


def keypair_leftover(key: Any, twin: Resource | None, target: str, data: dict[str, Any]) -> Resource:
    """A key pair of ours has only its name: it shares owner and expiry with its machine's other resources, or
    without any, expires a lifetime after Nova's created_at (so a live run elsewhere keeps its key)."""
    machine = keypair_machine(key.name) or key.name
    base: dict[str, Any] = {
        "provider": "openstack",
        "kind": "keypair",
        "name": machine,
        "run": machine.split("-")[1],
        "data": {**data, "id": key.name, "key_name": key.name},
    }
    if twin is not None:
        return Resource(
            **base, target=twin.target, owner=twin.owner, created=twin.created, expires=twin.expires, kept=twin.kept
        )
    try:
        created = datetime.fromisoformat(str(key.created_at).replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()
    except ValueError:
        created = 0.0
    return Resource(
        **base,
        target=target,
        owner=Owner("unknown", 0, None),
        created=created,
        expires=created + DEFAULT_LIFETIME if created else 1.0,
    )


def publish_resource_lifetime(conn: Any, resource: Resource) -> None:
    """Write a resource's fields (now kept, with a later expiry) onto it again: a server's metadata, Neutron's and
    Glance's tags (a key pair has none). Raises ProviderError if the cloud refuses."""
    ident, kind = resource.data.get("id"), resource.kind
    fields: dict[str, Any] = encode_fields(resource)  # keyword arguments of set_server_metadata
    if not ident or kind == "keypair":
        return
    if kind == "server":
        SDK.call("mark server kept", conn.compute.set_server_metadata, ident, **fields)
    elif kind in ("security-group", "floating-ip"):
        get = conn.network.get_security_group if kind == "security-group" else conn.network.get_ip
        found = SDK.call(f"get {kind} {ident}", get, ident)
        others = [tag for tag in found.tags if not tag.startswith(FIELD_PREFIX)]
        SDK.call(f"mark {kind} kept", conn.network.set_tags, found, [*others, *tag_list(fields)])
    elif kind == "image":
        image = SDK.call(f"get image {ident}", conn.image.get_image, ident)
        wanted = tag_list(fields)
        for tag in [t for t in image.tags if t.startswith(FIELD_PREFIX) and t not in wanted]:
            SDK.call("mark image kept", conn.image.remove_tag, image, tag)
        for tag in [t for t in wanted if t not in image.tags]:
            SDK.call("mark image kept", conn.image.add_tag, image, tag)
