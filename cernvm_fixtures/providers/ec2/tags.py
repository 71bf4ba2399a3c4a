"""Tags: the ledger entry of each resource as AWS tags (through the kit's field codec), finding by tag, and the
:class:`Recorder` the leaf modules record what they create through (so none of them imports the provider)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from typing import Any, Protocol

from ...ledger import Resource
from ..kit import FIELD_BUDGET, FIELD_PREFIX, decode_fields, encode_fields, escape, field, named_as
from .aws import AWS, BUSY_TIMEOUT, DESTROY_POLL, client, pages

RUN_TAG = FIELD_PREFIX + "run"
"""Every resource cernvm-fixtures creates carries this tag (sweep filters on it)."""
OUR_TAGS = 1 + FIELD_BUDGET
"""Tags cernvm-fixtures may put on a resource (Name plus the ledger fields); AWS allows 50 per resource."""

CREATION_ORDER = (
    "s3-object",
    "snapshot",
    "image",
    "key-pair",
    "vpc",
    "internet-gateway",
    "subnet",
    "route-table",
    "security-group",
    "volume",
    "instance",
)
"""Resource kinds in the order they depend on each other; teardown goes the other way."""

AWS_TYPE = {
    "vpc": "vpc",
    "internet-gateway": "internet-gateway",
    "subnet": "subnet",
    "route-table": "route-table",
    "security-group": "security-group",
    "key-pair": "key-pair",
    "instance": "instance",
    "volume": "volume",
    "snapshot": "snapshot",
    "image": "image",
}
SHORT = {
    "vpc": "vpc",
    "internet-gateway": "igw",
    "subnet": "subnet",
    "route-table": "rtb",
    "security-group": "sg",
    "key-pair": "key",
    "volume": "disk",
    "snapshot": "snap",
    "image": "ami",
    "s3-object": "upload",
}


def tag_dict(resource: Resource, kind: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of one resource: user tags, then Name and the ledger entry's fields (which always win)."""
    kind = kind or resource.kind
    tags = dict(extra or {})
    tags["Name"] = resource.name if kind == "instance" else f"{resource.name}-{SHORT.get(kind, kind)}"
    principal = resource.data.get("principal")
    tags.update(encode_fields(replace(resource, kind=kind), **({"principal": principal} if principal else {})))
    return tags


def principal_digest(arn: str) -> str:
    """What the ``principal`` tag holds: a digest of the caller's ARN (short, and no account id in tags)."""
    return hashlib.sha256(arn.encode()).hexdigest()[:32]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """Tags as the EC2 API takes them."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_spec(resource: Resource, user_tags: dict[str, str], kind: str | None = None) -> dict[str, Any]:
    """The TagSpecification of a create call: the entry's fields plus the target's own tags."""
    kind = kind or resource.kind
    return {"ResourceType": AWS_TYPE[kind], "Tags": tag_list(tag_dict(resource, kind, user_tags))}


class Recorder(Protocol):
    """How :mod:`.network` and :mod:`.image` record what they create for one machine (the provider implements it)."""

    @property
    def name(self) -> str:
        """The machine's name (its resources' names and client tokens start with it)."""
        ...

    def record(self, kind: str, **data: Any) -> Resource:
        """Write the ledger entry of a resource of ``kind`` about to be created and return it (to tag it with)."""
        ...

    def created(self, resource: Resource, **data: Any) -> None:
        """Add what AWS returned (its id...) to a recorded entry, durably."""
        ...

    def drop(self, resource: Resource) -> None:
        """Destroy a resource no longer needed (the upload once imported), then forget its entry."""
        ...


def resource_from_tags(kind: str, tags: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's tags alone (None if it is not ours)."""
    found = decode_fields(tags)
    if found is None or found.provider != "ec2":
        return None
    principal = field(tags, "principal")
    data = {**data, "principal": principal} if principal else data
    return replace(found, kind=kind, data=data)


def ids(resource: Resource) -> list[str]:
    """The platform ids the ledger entry holds."""
    if resource.data.get("id"):
        return [resource.data["id"]]
    return list(resource.data.get("ids") or [])


def tag_filters(resource: Resource, kind: str | None = None) -> list[dict[str, Any]]:
    """EC2 filters matching the resources of this entry's machine, run and kind by their tags."""
    return [
        {"Name": f"tag:{FIELD_PREFIX}name", "Values": [escape(resource.name)]},
        {"Name": f"tag:{RUN_TAG}", "Values": [escape(resource.run)]},
        {"Name": f"tag:{FIELD_PREFIX}kind", "Values": [escape(kind or resource.kind)]},
    ]


def deleter(what: str, describe: str, key: str, ident: str, delete: str) -> Any:
    """A teardown function for a kind whose resources are deleted by id alone (``delete(<ident>=id)``),
    each found from the ledger and by its tags, retried while something still depends on it."""

    def destroy(resource: Resource, region: str, endpoint: str | None) -> None:
        ec2 = client("ec2", region, endpoint)
        for found in find(resource, ec2, describe, key, ident):
            params: dict[str, Any] = {ident: found}
            delete_found = functools.partial(getattr(ec2, delete), **params)
            AWS.delete_until_free(f"delete {what} {found}", delete_found, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)

    return destroy


def find(resource: Resource, ec2: Any, operation: str, key: str, ident: str, **params: Any) -> list[str]:
    """Ids from the ledger plus any found by tag: one whose id never reached the ledger, or a duplicate
    made by a retried create call that has no idempotency token (CreateVpc, CreateSubnet, ...)."""
    items = pages(ec2, operation, key, Filters=tag_filters(resource), **params)
    return list(dict.fromkeys(ids(resource) + [item[ident] for item in items]))


LISTED = (
    ("volume", "describe_volumes", "Volumes", "VolumeId"),
    ("security-group", "describe_security_groups", "SecurityGroups", "GroupId"),
    ("route-table", "describe_route_tables", "RouteTables", "RouteTableId"),
    ("subnet", "describe_subnets", "Subnets", "SubnetId"),
    ("internet-gateway", "describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
    ("vpc", "describe_vpcs", "Vpcs", "VpcId"),
)
"""Kinds listed by a paginated describe call: (kind, operation, key of the list, key of the id)."""


OWN_NAME: dict[str, Any] = {
    "instance": lambda machine: f"{machine}-run",  # the ClientToken it was launched with
    "security-group": lambda machine: machine,  # GroupName
    "key-pair": lambda machine: machine,
    "image": lambda machine: machine,
    "s3-object": lambda machine: f"cernvm-fixtures/{machine}/",  # the key's folder
}
"""Kinds whose own name (which tags cannot change) the entry's machine name fixes: a sweep checks it. The others
(VPC, subnet, route table, internet gateway, volume, snapshot) have none; their mark alone vouches for them, and EC2
refuses to delete one still in use."""


def tagged_resources(
    ec2: Any, recorded: set[str], uploads: list[tuple[str, dict[str, str]]], bucket: str | None, **data: Any
) -> list[Resource]:
    """Whole ledger entries of ours found by their tags (and ``uploads``, (key, metadata) in the import ``bucket``)
    whose machine ``recorded`` does not name: one per kind, machine, run and owner, with its ``ids`` and ``data``."""
    ours = [{"Name": "tag-key", "Values": [RUN_TAG]}]
    found: dict[tuple[Any, ...], tuple[dict[str, str], list[str]]] = {}

    def add(kind: str, tags: list[dict[str, str]] | None, ident: str, own: str | None = None) -> None:
        fields = {t["Key"]: t["Value"] for t in tags or []}
        entry = resource_from_tags(kind, fields, {})
        if entry is None or entry.name in recorded:
            return  # not a whole entry of ours: never grouped with one that is
        if kind in OWN_NAME and not named_as(entry, own, OWN_NAME[kind](entry.name)):
            return  # our tags on a foreign resource
        found.setdefault((kind, entry.name, entry.run, entry.owner), (fields, []))[1].append(ident)

    for reservation in pages(ec2, "describe_instances", "Reservations", Filters=ours):
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                add("instance", instance.get("Tags"), instance["InstanceId"], instance.get("ClientToken"))
    for kind, operation, key, ident in LISTED:
        for item in pages(ec2, operation, key, Filters=ours):
            add(kind, item.get("Tags"), item[ident], item.get("GroupName"))
    for item in AWS.call("describe-key-pairs", ec2.describe_key_pairs, Filters=ours).get("KeyPairs", []):
        add("key-pair", item.get("Tags"), item["KeyName"], item["KeyName"])
    for item in AWS.call("describe-images", ec2.describe_images, Owners=["self"], Filters=ours).get("Images", []):
        add("image", item.get("Tags"), item["ImageId"], item.get("Name"))
    for item in pages(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=ours):
        add("snapshot", item.get("Tags"), item["SnapshotId"])
    for key, metadata in uploads:
        add("s3-object", tag_list(metadata), key, key.rsplit("/", 1)[0] + "/")

    resources = []
    for (kind, *_), (fields, idents) in found.items():
        entry_data: dict[str, Any] = {**data, "ids": sorted(set(idents))}
        if kind == "key-pair":
            entry_data["key_name"] = idents[0]
        if kind == "s3-object":
            entry_data.update(bucket=bucket, key=idents[0])
        resource = resource_from_tags(kind, fields, entry_data)
        if resource is not None:
            resources.append(resource)
    return resources
