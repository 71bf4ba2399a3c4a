"""Teardown from the ledger data alone (Compute resources alike, objects in a bucket), and the search for
leftovers by label, for ``sweep``.

Each destroy deletes only what carries its entry's run and machine (a resource of the same name is someone
else's, left alone) and waits for the delete's operation; "already gone" is fine.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ...errors import ProviderError
from ...ledger import Resource
from ..kit import decode_fields, named_as
from .api import ERRORS, client, compute_v1, finished_operation, wait_operation
from .labels import CREATION_ORDER, OBJECT_PREFIX, labels_in_description, ours
from .options import GceOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

DESTROY_TIMEOUT = 600.0
"""How long teardown waits for one operation (a delete, or the create it must see finish first)."""
BUSY_TIMEOUT = 120.0
"""How long teardown retries a delete GCE refuses because something still uses the resource."""


def find(resource: Resource, zone: str | None, lookup: Callable[[], T | None]) -> T | None:
    """What ``lookup`` finds of the resource; if nothing, after the insert operation the ledger entry recorded has
    finished: until it has, GCE shows no resource, and a teardown that found nothing would forget what appears a
    moment later (a run interrupted right after the insert)."""
    found = lookup()
    data = resource.data
    name = data.get("operation")
    if found is not None or not name:
        return found
    deadline = time.monotonic() + DESTROY_TIMEOUT
    what = f"{resource.name}: its create operation"
    finished_operation(what, name, data["project"], zone, data.get("endpoint"), deadline, missing_ok=True)
    return lookup()


@dataclass(frozen=True)
class Kind:
    """How teardown reaches one kind of Compute resource."""

    client: str
    """The client class (``InstancesClient``...)."""
    param: str
    """The name's parameter in get and delete calls."""
    zonal: bool
    labels: Callable[[Any], dict[str, str]]
    """Where the entry's fields are on what ``get`` returned."""
    suffix: str = ""
    """GCE's name is the machine's plus this, where the ledger entry holds none (``gce_name``)."""


COMPUTE = {
    "instance": Kind("InstancesClient", "instance", True, lambda found: dict(found.labels)),
    "firewall": Kind(
        "FirewallsClient", "firewall", False, lambda found: labels_in_description(found.description), "-ssh"
    ),
    "image": Kind("ImagesClient", "image", False, lambda found: dict(found.labels)),
}


def destroy_compute(resource: Resource) -> None:
    """Delete a recorded instance (its boot disk goes with it), firewall rule or image, retried while GCE says
    another resource still uses it (a disk made from the image goes away with its instance); wait for the delete."""
    kind = COMPUTE[resource.kind]
    data = resource.data
    service = client(kind.client, data.get("endpoint"))
    name = data.get("gce_name") or resource.name + kind.suffix
    zone = data.get("zone") if kind.zonal else None
    where = {"project": data["project"], **({"zone": zone} if zone else {}), kind.param: name}
    get = f"get {resource.kind} {name}"
    found = find(resource, zone, lambda: ERRORS.call(get, service.get, missing_ok=True, **where))
    if found is None:
        return
    if not ours(kind.labels(found), resource):
        log.warning("%s: %s %s does not carry this run's labels; left alone", resource.name, resource.kind, name)
        return
    what, started = f"delete {resource.kind} {name}", []
    ERRORS.delete_until_free(what, lambda: started.append(service.delete_unary(**where)), timeout=BUSY_TIMEOUT)
    if started:
        deadline = time.monotonic() + DESTROY_TIMEOUT
        wait_operation(what, started[0], data["project"], zone, data.get("endpoint"), deadline)


def destroy_object(resource: Resource) -> None:
    """Delete the recorded upload from its bucket."""
    data = resource.data
    bucket, key = data.get("bucket"), data.get("gce_name")
    if not bucket or not key:
        return
    blob = client("storage", data.get("storage_endpoint")).bucket(bucket).get_blob(key)
    if blob is None:
        return
    if not ours(dict(blob.metadata or {}), resource):
        log.warning("%s: gs://%s/%s does not carry this run's labels; left alone", resource.name, bucket, key)
        return
    ERRORS.call(f"delete gs://{bucket}/{key}", blob.delete, missing_ok=True)


DESTROY: dict[str, Callable[[Resource], None]] = {
    "instance": destroy_compute,
    "firewall": destroy_compute,
    "image": destroy_compute,
    "object": destroy_object,
}


def destroy(resource: Resource) -> None:
    """Destroy one recorded resource of any kind; ProviderError for a kind gce never records."""
    handler = DESTROY.get(resource.kind)
    if handler is None:
        raise ProviderError(f"gce cannot destroy unknown resource kind {resource.kind!r}")
    handler(resource)


IMAGE_NAME = re.compile(r"cvmfx-[0-9a-f]{24}")
"""An uploaded image's name: its content's hash (see :func:`.image.upload_image`)."""


def expected_name(entry: Resource, own: str) -> str:
    """The name GCE knows the entry's resource by when cernvm-fixtures made it: the machine's for an instance, plus
    ``-ssh`` for its firewall rule; an image and its object are named by content (``own``, if it has that form)."""
    if entry.kind == "image":
        return own if IMAGE_NAME.fullmatch(own) else "cvmfx-<24 hex digits>"
    if entry.kind == "object":
        return (
            own
            if own.startswith(OBJECT_PREFIX)
            and IMAGE_NAME.fullmatch(own[len(OBJECT_PREFIX) : -7])
            and own.endswith(".tar.gz")
            else f"{OBJECT_PREFIX}cvmfx-<24 hex digits>.tar.gz"
        )
    return entry.name + COMPUTE[entry.kind].suffix


def leftovers(options: GceOptions, project: str, recorded: set[str]) -> list[Resource]:
    """Resources labelled by cernvm-fixtures in the project and zone whose machine no ledger names."""
    data = {
        "project": project,
        "zone": options.zone,
        "endpoint": options.endpoint,
        "storage_endpoint": options.storage_endpoint,
    }
    compute = compute_v1()
    ledger_filter = "labels.cvmfx-run:*"
    found: list[tuple[dict[str, str], str]] = []
    instances = client("InstancesClient", options.endpoint)
    request = compute.ListInstancesRequest(project=project, zone=options.zone, filter=ledger_filter)
    found += [
        (dict(item.labels), item.name)
        for item in ERRORS.call("list instances", lambda: list(instances.list(request=request)))
    ]
    images = client("ImagesClient", options.endpoint)
    listing = compute.ListImagesRequest(project=project, filter=ledger_filter)
    found += [
        (dict(item.labels), item.name)
        for item in ERRORS.call("list images", lambda: list(images.list(request=listing)))
    ]
    firewalls = client("FirewallsClient", options.endpoint)
    for item in ERRORS.call("list firewalls", lambda: list(firewalls.list(project=project))):
        found.append((labels_in_description(item.description), item.name))
    if options.bucket:
        storage = client("storage", options.storage_endpoint)
        blobs = ERRORS.call("list objects", lambda: list(storage.list_blobs(options.bucket, prefix=OBJECT_PREFIX)))
        found += [(dict(blob.metadata or {}), blob.name) for blob in blobs]
    resources = []
    for labels, name in found:
        entry = decode_fields(labels)
        if entry is None or entry.provider != "gce" or entry.kind not in CREATION_ORDER or entry.name in recorded:
            continue
        if not named_as(entry, name, expected_name(entry, name)):
            continue
        extra = {"bucket": options.bucket} if entry.kind == "object" else {}
        resources.append(replace(entry, data={**data, **extra, "gce_name": name}))
    return resources
