"""Teardown and sweep from ledger entries and tags alone: each kind deleted by its recorded id (waiting for the
operation, "not found" is done, "in use" retried), a resource group only if its tags name the entry's run, and the
resources, groups and uploaded VHDs whose tags (or metadata) name a machine no ledger entry names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...errors import ProviderError
from ...ledger import Resource
from ..kit import field, named_as
from .clients import BUSY_TIMEOUT, ERRORS, client, entry_data, subscription_id
from .tags import ARM, KIND_OF_TYPE, RUN_TAG, resource_from_tags, resource_name, split_id
from .vhd import blob_account_url, blob_leftovers, destroy_blob

if TYPE_CHECKING:
    from ...config import Target

log = logging.getLogger(__name__)


def destroy_resource(resource: Resource) -> None:
    """Destroy one recorded resource from its ledger data alone; one already gone is fine."""
    data = resource.data
    if resource.kind == "blob":
        return destroy_blob(resource)
    if not data.get("subscription") or not data.get("id") and not data.get("group"):
        raise ProviderError(f"{resource.name}: ledger entry for {resource.kind} has no subscription or id")
    if resource.kind == "resource-group":
        return destroy_group(resource)
    arm = ARM.get(resource.kind)
    if arm is None:
        raise ProviderError(f"azure cannot destroy unknown resource kind {resource.kind!r}")
    begin = getattr(client(arm.client, data), arm.operations).begin_delete
    group, name = split_id(data["id"])
    ERRORS.delete_until_free(
        f"delete {resource.kind} {name}", lambda: begin(group, name).result(), timeout=BUSY_TIMEOUT
    )


def destroy_group(resource: Resource) -> None:
    """Delete a machine's resource group with everything in it, unless its tags name another run (or none)."""
    data = resource.data
    group = data.get("group") or split_id(data["id"] + "/x")[0]
    groups = client("resource", data).resource_groups
    found = ERRORS.call(f"get resource group {group}", groups.get, group, missing_ok=True)
    if found is None:
        return
    if field(found.tags or {}, "run") != resource.run:
        log.warning("resource group %s belongs to another run; left alone", group)
        return
    ERRORS.delete_until_free(
        f"delete resource group {group}", lambda: groups.begin_delete(group).result(), timeout=BUSY_TIMEOUT
    )


def leftovers(target: Target, recorded: set[str]) -> list[Resource]:
    """Resources and groups tagged by cernvm-fixtures, and VHDs it uploaded (by their metadata), whose machine no
    ledger entry names: only those whose tags carry this key's mark, whose own name is the one the entry's machine
    gives that kind, inside the target's ``resource_group`` or the machine's own group (so forged or copied tags on a
    foreign group or resource get nothing deleted)."""
    options = target.options
    data = entry_data(subscription_id(target), options)
    resources = client("resource", data)
    ours = f"tagName eq '{RUN_TAG}'"
    found: list[Resource] = []

    def add(kind: str | None, tags: dict[str, str] | None, where: dict[str, Any]) -> None:
        entry = resource_from_tags(kind, tags or {}, {**data, **where}) if kind else None
        if entry is None or entry.name in recorded:
            return
        group, name = split_id(where["id"] + ("/x" if kind == "resource-group" else ""))
        if kind == "resource-group":
            name = group
        allowed = {options.resource_group} if options.resource_group else {resource_name(entry.name, "resource-group")}
        if group not in allowed:
            log.warning(
                "%s: tagged as %s's but outside its resource group %s; left alone",
                where["id"],
                entry.name,
                " or ".join(sorted(allowed)),
            )
            return
        if named_as(entry, name, resource_name(entry.name, entry.kind)):
            found.append(entry)

    for group in ERRORS.call("list resource groups", lambda: list(resources.resource_groups.list(filter=ours))):
        if not options.resource_group:  # a configured group is the user's: never ours to delete
            add("resource-group", group.tags, {"id": group.id, "group": group.name})
    for item in ERRORS.call("list resources", lambda: list(resources.resources.list(filter=ours))):
        add(KIND_OF_TYPE.get((item.type or "").lower()), item.tags, {"id": item.id})
    if options.storage_account or options.blob_endpoint:
        found.extend(blob_leftovers(blob_account_url(options), options.container, data, recorded))
    return found
