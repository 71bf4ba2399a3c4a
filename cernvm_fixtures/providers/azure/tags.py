"""Azure tags and ids: each resource's ledger entry as tags (the kit's fields, whose names of ``[a-z0-9_-]`` Azure's
tag rules allow, at most 20 of Azure's 50), the same fields as blob metadata, the resource kinds and their ARM ids,
and what creating a resource needs of its machine (:class:`Recorder`).

A leaf module (the kit and the ledger only), so every sibling may use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

from ...ledger import Resource
from ..kit import FIELD_BUDGET, FIELD_PREFIX, decode_fields, encode_fields

RUN_TAG = FIELD_PREFIX + "run"
"""Every resource and resource group cernvm-fixtures creates carries this tag (sweep lists by it)."""
DIGEST_TAG = FIELD_PREFIX + "sha256"
"""On an image made from a VHD (and the VHD's blob): the VHD's SHA-256, so a later launch of the same content reuses
it. Set as it is, not as a field: its 64 hex digits are one value Azure (256 characters) holds and filters by."""
COMPLETE_TAG = FIELD_PREFIX + "complete"
"""On an uploaded VHD's blob: ``true`` once every page is written."""
OUR_TAGS = FIELD_BUDGET + 1
"""Tags cernvm-fixtures may set on a resource (the ledger entry's fields and the digest); Azure allows 50."""

CREATION_ORDER: tuple[str, ...] = (
    "resource-group",
    "blob",
    "image",
    "virtual-network",
    "security-group",
    "public-ip",
    "network-interface",
    "disk",
    "vm",
)
"""Resource kinds in the order they depend on each other; teardown goes the other way."""


class ArmKind(NamedTuple):
    """How one kind of resource is made and deleted through ARM."""

    type: str
    """Its ARM resource type (as in its id)."""
    client: str
    """The management client (``compute``, ``network``) whose ``operations`` group creates and deletes it."""
    operations: str
    """The client's attribute with ``begin_create_or_update`` and ``begin_delete`` for the kind."""
    model: str
    """The SDK model of its create call's body."""
    what: str
    """What messages call it."""


ARM = {
    "vm": ArmKind("Microsoft.Compute/virtualMachines", "compute", "virtual_machines", "VirtualMachine", "VM"),
    "disk": ArmKind("Microsoft.Compute/disks", "compute", "disks", "Disk", "disk"),
    "image": ArmKind("Microsoft.Compute/images", "compute", "images", "Image", "image"),
    "network-interface": ArmKind(
        "Microsoft.Network/networkInterfaces", "network", "network_interfaces", "NetworkInterface", "network interface"
    ),
    "public-ip": ArmKind(
        "Microsoft.Network/publicIPAddresses", "network", "public_ip_addresses", "PublicIPAddress", "public IP"
    ),
    "security-group": ArmKind(
        "Microsoft.Network/networkSecurityGroups",
        "network",
        "network_security_groups",
        "NetworkSecurityGroup",
        "network security group",
    ),
    "virtual-network": ArmKind(
        "Microsoft.Network/virtualNetworks", "network", "virtual_networks", "VirtualNetwork", "virtual network"
    ),
}
"""The kinds that are ARM resources of a resource group (the group itself and an uploaded blob are not)."""
KIND_OF_TYPE = {arm.type.lower(): kind for kind, arm in ARM.items()}
SUFFIX = {
    "resource-group": "rg",
    "image": "image",
    "virtual-network": "vnet",
    "security-group": "nsg",
    "public-ip": "ip",
    "network-interface": "nic",
    "disk": "osdisk",
    "vm": "",
}
"""A machine's resources are named ``<machine>-<suffix>`` (its VM just ``<machine>``)."""


def resource_name(machine: str, kind: str) -> str:
    """The name of a machine's resource of ``kind``."""
    return machine + (f"-{SUFFIX[kind]}" if SUFFIX[kind] else "")


def arm_id(subscription: str, group: str, kind: str, machine: str) -> str:
    """The full ARM id of a machine's resource of ``kind`` (known before it exists, so the ledger records it first)."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{ARM[kind].type}/"
        f"{resource_name(machine, kind)}"
    )


def split_id(resource_id: str) -> tuple[str, str]:
    """(resource group, name) of an ARM resource id."""
    parts = resource_id.strip("/").split("/")
    return parts[3], parts[-1]


def tag_dict(resource: Resource, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of one resource: user tags, then its ledger entry's fields (which always win)."""
    return {**(extra or {}), **encode_fields(resource)}


def resource_from_tags(kind: str, tags: Mapping[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry of ``kind`` from a resource's tags (or blob metadata) alone; None if not ours."""
    found = decode_fields(tags)
    if found is None or found.provider != "azure":
        return None
    return replace(found, kind=kind, data=data)


METADATA_PREFIX = FIELD_PREFIX.replace("-", "_")


def to_metadata(tags: Mapping[str, str]) -> dict[str, str]:
    """Our tags as blob metadata, whose names must be identifiers: ``cvmfx-owner-pid`` -> ``cvmfx_owner_pid``."""
    return {name.replace("-", "_"): value for name, value in tags.items()}


def from_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Blob metadata as our tags again (the inverse of :func:`to_metadata`; a long field's ``_2``... stays); other
    names as they are."""
    return {
        re.sub(r"_(?!\d+$)", "-", name) if name.startswith(METADATA_PREFIX) else name: value
        for name, value in metadata.items()
    }


class Recorder(Protocol):
    """What creating a resource needs of its machine: its name and its ledger entries, each written before its
    create call (:meth:`record`), completed after it (:meth:`created`) or dropped when another machine got there
    first (:meth:`forget`)."""

    name: str

    def record(self, kind: str, **data: Any) -> Resource:
        """Record the machine's resource of ``kind``; an ARM resource's entry holds its id (``data["id"]``)."""
        ...

    def created(self, resource: Resource, **data: Any) -> None:
        """Add what Azure returned to a recorded entry, durably."""
        ...

    def forget(self, resource: Resource) -> None:
        """Drop an entry without destroying anything (nothing of ours exists)."""
        ...
