"""Tags: the ledger entry of each resource as AWS tags (through the kit's field codec), and finding by tag."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from ...ledger import Resource
from ..kit import FIELD_BUDGET, FIELD_PREFIX, decode_fields, encode_fields, escape, field
from .aws import call_until_free, client, pages

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
RANK = {kind: i for i, kind in enumerate(CREATION_ORDER)}

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


def resource_from_tags(kind: str, tags: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's tags alone (None if it is not ours)."""
    found = decode_fields(tags)
    if found is None or found.provider != "ec2":
        return None
    principal = field(tags, "principal")
    data = {**data, "principal": principal} if principal else data
    # Found by tag, a resource sorts just before its ledger twin, and by dependency among its own kind,
    # so sweep (newest first) tears a machine down in the right order.
    created = found.created - (len(CREATION_ORDER) - RANK.get(kind, 0)) * 1e-4
    return replace(found, kind=kind, data=data, created=created)


def teardown_order(resources: list[Resource]) -> list[Resource]:
    """The order to destroy a machine's resources in: the reverse of their dependencies, newest first."""
    return sorted(resources, key=lambda r: (RANK.get(r.kind, len(RANK)), r.created), reverse=True)


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
            call_until_free(f"delete {what} {found}", getattr(ec2, delete), **params)

    return destroy


def find(resource: Resource, ec2: Any, operation: str, key: str, ident: str, **params: Any) -> list[str]:
    """Ids from the ledger plus any found by tag: one whose id never reached the ledger, or a duplicate
    made by a retried create call that has no idempotency token (CreateVpc, CreateSubnet, ...)."""
    items = pages(ec2, operation, key, Filters=tag_filters(resource), **params)
    return list(dict.fromkeys(ids(resource) + [item[ident] for item in items]))
