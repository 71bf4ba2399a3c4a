"""Teardown from platform data alone: one function per kind (the ledger's id plus any found by name or tag, so a
resource whose id never reached the ledger goes too), and the leftovers a sweep finds by tags and names."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import ProviderError
from ...ledger import Resource
from ..kit import FIELD_PREFIX, encode_fields, named_as, plain, wait_until
from .api import SDK, connection
from .fields import MARKER, from_fields, keypair_leftover, keypair_machine, tag_fields, tag_list

if TYPE_CHECKING:
    from ...config import Target

DESTROY_TIMEOUT = 600.0
"""How long teardown waits for Nova to delete a server."""
BUSY_TIMEOUT = 300.0
"""How long teardown retries a security group Neutron still sees in use (ports are released asynchronously)."""
DESTROY_POLL = 1.0


def destroy(resource: Resource) -> None:
    """Destroy one recorded resource from its ledger data alone; a resource already gone is fine."""
    handler = _DESTROY.get(resource.kind)
    if handler is None:
        raise ProviderError(f"openstack cannot destroy unknown resource kind {resource.kind!r}")
    handler(resource, connection(resource.data.get("cloud")))


def leftovers(target: Target, recorded: set[str]) -> list[Resource]:
    """Resources of ours on the target's cloud (by tag, by name for key pairs) whose machine no ledger entry names."""
    cloud = target.options.cloud
    conn = connection(cloud)
    data = {"cloud": cloud}
    found: list[Resource] = []

    def add(kind: str, fields: Mapping[str, str], ident: str, own: str | None) -> None:
        resource = from_fields(kind, fields, {**data, "id": ident})
        if resource is None or resource.name in recorded:
            return
        if named_as(resource, own, expected_name(resource, own)):
            found.append(resource)

    for server in SDK.call("list servers", conn.compute.servers, tags=MARKER):
        add("server", server.metadata or {}, server.id, server.name)
    for group in SDK.call("list security groups", conn.network.security_groups, tags=MARKER):
        add("security-group", tag_fields(group.tags), group.id, group.name)
    for ip in SDK.call("list floating ips", conn.network.ips, tags=MARKER):
        add("floating-ip", tag_fields(ip.tags), ip.id, ip.description)  # an address has no name: its description
    for image in SDK.call("list images", conn.image.images, tag=MARKER):
        add("image", tag_fields(image.tags), image.id, image.name)
    machines = {r.name: r for r in found}
    for key in SDK.call("list key pairs", conn.compute.keypairs):
        machine = keypair_machine(key.name)  # None: not named with this key's mark (another's, or forged)
        if machine is not None and machine not in recorded:
            found.append(keypair_leftover(key, machines.get(machine), target.name, data))
    return found


def expected_name(entry: Resource, own: str | None) -> str:
    """The name cernvm-fixtures gives the entry's resource: the machine's (server, security group; a floating IP's
    description), the machine's plus ``-<file>`` for an image it uploaded."""
    if entry.kind == "image" and own and own.startswith(entry.name + "-"):
        return own
    return entry.name + ("-<file name>" if entry.kind == "image" else "")


def _ids(resource: Resource, found: Iterable[Any]) -> list[str]:
    ids = [resource.data["id"]] if resource.data.get("id") else []
    return list(dict.fromkeys(ids + [item.id for item in found]))


def _destroy_server(resource: Resource, conn: Any) -> None:
    # Nova matches the name as a regular expression: a plain name matches only itself
    named: dict[str, Any] = {"name": f"^{resource.name}$"} if plain(resource.name) else {}
    listed = SDK.call("list servers", conn.compute.servers, tags=MARKER, **named)
    ids = _ids(resource, [s for s in listed if s.name == resource.name])
    for server_id in ids:
        SDK.call(f"delete server {server_id}", conn.compute.delete_server, server_id, ignore_missing=True)
    deadline = time.monotonic() + DESTROY_TIMEOUT
    for server_id in ids:

        def gone(server_id: str = server_id) -> bool | None:
            found = SDK.call(f"get server {server_id}", conn.compute.get_server, server_id, missing_ok=True)
            return True if found is None else None

        wait_until(f"{resource.name}: server {server_id} deleted", gone, deadline, DESTROY_POLL)


def _destroy_floating_ip(resource: Resource, conn: Any) -> None:
    described = SDK.call("list floating ips", conn.network.ips, description=resource.name)
    for ip_id in _ids(resource, described):
        SDK.call(f"delete floating ip {ip_id}", conn.network.delete_ip, ip_id, ignore_missing=True)


def _destroy_security_group(resource: Resource, conn: Any) -> None:
    named = SDK.call("list security groups", conn.network.security_groups, name=resource.name)
    for group_id in _ids(resource, named):

        def delete(group_id: str = group_id) -> None:
            conn.network.delete_security_group(group_id, ignore_missing=False)

        SDK.delete_until_free(f"delete security group {group_id}", delete, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)


def _destroy_keypair(resource: Resource, conn: Any) -> None:
    name = resource.data.get("key_name") or resource.name
    SDK.call(f"delete key pair {name}", conn.compute.delete_keypair, name, ignore_missing=True)


def _destroy_image(resource: Resource, conn: Any) -> None:
    name = FIELD_PREFIX + "name"
    tagged = SDK.call("list images", conn.image.images, tag=tag_list({name: encode_fields(resource)[name]})[0])
    for image_id in _ids(resource, tagged):
        SDK.call(f"delete image {image_id}", conn.image.delete_image, image_id, ignore_missing=True)


_DESTROY = {
    "floating-ip": _destroy_floating_ip,
    "server": _destroy_server,
    "security-group": _destroy_security_group,
    "keypair": _destroy_keypair,
    "image": _destroy_image,
}
