"""The image an instance boots: one GCE already has (a name, ``family/F`` or a ``projects/...`` link, looked up by
:func:`find_image`), or one made from a local file (:func:`upload_image`): a disk is archived the way GCE imports it
(:mod:`.tarball`), a given ``.tar.gz`` is checked to be such an archive, and the tarball becomes an object in the
bucket, then ``images.insert`` with ``rawDisk.source``, both named by the tarball's content hash, so a later run
reuses them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ProviderError
from ...images import Accepts
from ...interrupts import signals_deferred
from ...ledger import Resource
from ..kit import decode_fields, encode_fields
from .api import ERRORS, compute_v1, wait_operation
from .labels import OBJECT_PREFIX
from .options import GceOptions
from .tarball import DISKS, GIB, build, check, is_disk

STORAGE = "https://storage.googleapis.com"
"""How an image's ``rawDisk.source`` names a Cloud Storage object."""

log = logging.getLogger(__name__)

LINK = re.compile(r"^projects/(?P<project>[^/]+)/global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))$")
"""An image or image family as ``images.insert``'s sourceImage takes it."""


def image_link(image: str, project: str) -> str:
    """A partial URL for ``instances.insert``'s sourceImage: ``NAME``, ``family/F``, or ``projects/P/global/...``."""
    if image.startswith("projects/"):
        return image
    return f"projects/{project}/global/images/{image}"


def platform_image(image: str) -> bool:
    """Whether an ``image`` value names an image GCE may have: a name, ``family/F`` or a ``projects/...`` link."""
    return LINK.match(image_link(image, "project")) is not None


TARBALL = Accepts(
    ".tar.gz",
    "an image name, family/FAMILY, projects/P/global/images/[family/]NAME, or uploads a .tar.gz holding disk.raw "
    "(ucernvm-<branch>.<V>-<R>.cernvm.x86_64.tar.gz), or a disk it archives so (" + "/".join(DISKS) + ")",
    platform=platform_image,
    other_files=DISKS,
)
"""What the gce provider boots (:func:`..images.resolve`)."""


def check_disk_size(options: GceOptions, image_gb: int, image: str, where: str) -> None:
    """GCE refuses a boot disk smaller than its image ("Requested disk size cannot be smaller than the image
    size"): say so before anything is created, naming ``disk_size_gb`` (``where``) and the size that would do."""
    if options.disk_size_gb < image_gb:
        raise ConfigError(
            f"{where}: {options.disk_size_gb} GB is smaller than image {image} ({image_gb} GB), and GCE makes no "
            f"boot disk smaller than its image: set disk_size_gb = {image_gb} or more"
        )


def find_image(images: Any, link: str, where: str) -> tuple[str, int]:
    """The image or family ``link`` names, checked to exist and be READY, with its size in GB (0 if GCE does not
    say); ConfigError starting with ``where``."""
    match = LINK.match(link)
    assert match is not None, f"not an image link: {link}"
    if match["family"]:
        found = ERRORS.call(
            f"get image family {match['family']}",
            images.get_from_family,
            missing_ok=True,
            project=match["project"],
            family=match["family"],
        )
    else:
        found = ERRORS.call(
            f"get image {match['name']}", images.get, missing_ok=True, project=match["project"], image=match["name"]
        )
    if found is None:
        raise ConfigError(
            f"{where}: image {link} not found (check the name, the project and that the image is shared with you)"
        )
    if found.status and found.status != "READY":
        raise ConfigError(f"{where}: image {link} is {found.status}, not READY")
    return link, int(found.disk_size_gb or 0)


def check_bucket(storage: Any, bucket: str | None, tarball: Path, where: str) -> str:
    """The bucket a tarball is uploaded to: set, existing and readable; ConfigError starting with ``where``."""
    if not bucket:
        raise ConfigError(
            f"{where}: required to upload {tarball.name}: the Cloud Storage bucket images.insert reads it from"
        )
    if ERRORS.call("get bucket", storage.lookup_bucket, bucket_name=bucket) is None:
        raise ConfigError(f"{where}: Cloud Storage bucket {bucket!r} does not exist (or you may not read it)")
    return bucket


def tarball_of(image: Path, where: str) -> Path:
    """The tarball to upload for a local image file: a disk archived as GCE imports it (cached), or the given
    ``.tar.gz`` as it is (:func:`upload_image` checks it before uploading)."""
    return build(image, where) if is_disk(image) else image


def content_hash(path: Path) -> str:
    """The SHA-256 of a file, hex (names the uploaded object and the image made from it)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def upload_image(
    images: Any,
    storage: Any,
    tarball: Path,
    options: GceOptions,
    project: str,
    *,
    record: Callable[..., Resource],
    created: Callable[..., None],
    machine: str,
    where: Callable[[str], str],
) -> str:
    """The link of the image made from ``tarball`` for ``machine``: an image of that content is reused, else the
    tarball is checked (:func:`.tarball.check`, and that ``disk_size_gb`` holds its disk: a ConfigError starting with
    ``where(key)`` before anything is created), uploaded to the target's bucket and the image made from it, each
    recorded first (``record(kind, name, **data)``, then ``created(resource, **data)``) and carrying the target's
    labels and its entry's fields."""
    bucket = options.bucket
    assert bucket is not None, "check_bucket first"
    name = f"cvmfx-{content_hash(tarball)[:24]}"
    link = f"projects/{project}/global/images/{name}"
    found = ERRORS.call(f"get image {name}", images.get, missing_ok=True, project=project, image=name)
    key = f"{OBJECT_PREFIX}{name}.tar.gz"
    if found is not None:
        source = found.raw_disk.source if found.raw_disk else ""
        if decode_fields(dict(found.labels)) is None or source != f"{STORAGE}/{bucket}/{key}":
            raise ProviderError(
                f"{where('image')}: image {name} exists in project {project} but was not made by cernvm-fixtures with "
                f"this key from gs://{bucket}/{key} (its labels carry no mark of this state directory's key, or it "
                f"was made from {source or 'something else'}): it is not reused, since whoever made it chose what "
                "boots with the run's key; delete it, or set CERNVM_FIXTURES_MARK_KEY to the key that made it"
            )
        log.info("%s: reusing image %s (same content, made by this key)", machine, name)
        check_disk_size(options, int(found.disk_size_gb or 0), name, where("disk_size_gb"))
        return link
    disk_gb = check(tarball, where("image")) // GIB
    check_disk_size(options, disk_gb, tarball.name, where("disk_size_gb"))
    log.info("%s: %s holds a %d GiB disk.raw", machine, tarball.name, disk_gb)
    upload = record("object", key, bucket=bucket)
    blob = storage.bucket(bucket).blob(key, chunk_size=8 << 20)
    blob.metadata = {**options.labels, **encode_fields(upload)}
    log.info("%s: uploading %s to gs://%s/%s", machine, tarball.name, bucket, key)
    ERRORS.call(
        f"upload gs://{bucket}/{key}", blob.upload_from_filename, filename=str(tarball), content_type="application/gzip"
    )
    created(upload, id=key)

    image = record("image", name)
    compute = compute_v1()
    body = compute.Image(
        name=name,
        raw_disk=compute.RawDisk(source=f"{STORAGE}/{bucket}/{key}"),
        labels={**options.labels, **encode_fields(image)},
        guest_os_features=[compute.GuestOsFeature(type_="VIRTIO_SCSI_MULTIQUEUE")],
        description=f"CernVM image uploaded by cernvm-fixtures from {tarball.name}",
    )
    with signals_deferred():  # the operation's name must reach the ledger: see teardown.find
        operation = ERRORS.call(f"insert image {name}", images.insert_unary, project=project, image_resource=body)
        created(image, operation=operation.name)
    deadline = time.monotonic() + options.operation_timeout
    wait_operation(f"create image {name}", operation, project, None, options.endpoint, deadline)
    return link
