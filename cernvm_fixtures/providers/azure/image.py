"""Managed images: which ``image`` values name one Azure has (an image or gallery image id), and the image made from a
local VHD, found by its content's digest tag so every launch of the same content in a location shares one.

Functions take the clients and options they need and the machine's :class:`~.tags.Recorder`, never the provider.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

from ...images import Accepts
from ..kit import decode_fields, wait_until
from .clients import ERRORS, azure_module, blob_service, create_recorded
from .options import AzureOptions
from .tags import ARM, DIGEST_TAG, Recorder, split_id
from .vhd import BLOB_PREFIX, blob_account_url, upload_blob

log = logging.getLogger(__name__)

IMAGE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images/[^/]+|galleries/(?P<gallery>[^/]+)/images/(?P<definition>[^/]+)(/versions/(?P<version>[^/]+))?)$",
    re.I,
)
"""An ARM id the VM's ``imageReference.id`` can name: a managed image, or a Compute Gallery image definition (its
latest version) or image version; the names are checked by :func:`image_id_problem`."""
IMAGE_ID_FORMS = (
    "a managed image id (/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Compute/images/<name>) or a "
    "Compute Gallery image id (.../providers/Microsoft.Compute/galleries/<gallery>/images/<definition>, optionally "
    "followed by /versions/<major>.<minor>.<patch>)"
)
GALLERY_NAMES = {
    "gallery": (
        re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.]{0,78}[A-Za-z0-9])?$"),
        "1-80 letters, digits, '_' and '.', starting and ending with a letter or digit",
    ),
    "definition": (
        re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$"),
        "1-80 letters, digits, '_', '-' and '.', starting and ending with a letter or digit",
    ),
    "version": (re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$"), "<major>.<minor>.<patch>, three integers (e.g. 1.0.0)"),
}
"""Azure's rules for the names in a gallery image id, as its errors state them (MicrosoftDocs/azure-docs,
articles/virtual-machines/troubleshooting-shared-images.md: "Gallery name is invalid ...", the image definition's
name, "The image version name should follow Major(int).Minor(int).Patch(int) format")."""
VHD = Accepts(
    ".vhd",
    "an image id (/subscriptions/.../images/...) or uploads a fixed-size VHD "
    "(ucernvm-<branch>.<V>-<R>.cernvm.x86_64.vhd)",
    convertible=(".hdd", ".raw", ".img", ".qcow2", ".vmdk", ".vdi"),
    platform=lambda image: IMAGE_ID.match(image) is not None,
)
"""What the azure provider boots (:func:`cernvm_fixtures.images.resolve`)."""


def image_id_problem(image: str) -> str | None:
    """What is wrong with ``image`` as an ARM image id (None when it is a well-formed one, or no ARM id at all: a
    file or the appliance, which :data:`VHD` judges)."""
    if not image.lower().startswith("/subscriptions/"):
        return None
    found = IMAGE_ID.match(image)
    if found is None:
        return f"{image!r} is not {IMAGE_ID_FORMS}"
    for part, (rule, valid) in GALLERY_NAMES.items():
        name = found[part]
        if name is None:
            continue
        too_big = part == "version" and rule.match(name) and any(int(n) > 2**31 - 1 for n in name.split("."))
        if not rule.match(name) or too_big:
            what = {"gallery": "gallery name", "definition": "image definition name", "version": "version"}[part]
            limit = " (each at most 2147483647)" if too_big else ""
            return f"{image!r}: the {what} {name!r} is not valid; Azure takes {valid}{limit}"
    return None


def find_image(resources: Any, images: Any, digest: str, location: str) -> tuple[str, str | None]:
    """(id, provisioning state) of the best image in ``location`` tagged with this content digest, or ("", None):
    one that succeeded, else one still being made."""
    ours = f"tagName eq '{DIGEST_TAG}' and tagValue eq '{digest}'"
    best: tuple[str, str | None] = ("", None)
    for item in ERRORS.call("list images by content", lambda: list(resources.list(filter=ours))):
        if (item.type or "").lower() != ARM["image"].type.lower() or item.location != location:
            continue
        if decode_fields(item.tags or {}) is None:  # the digest tag is public: anyone may set it on their image
            log.info("image %s carries the content's digest but no mark of this key: not reused", item.id)
            continue
        found = ERRORS.call(f"get image {item.name}", images.get, *split_id(item.id), missing_ok=True)
        state = getattr(found, "provisioning_state", None)
        if state == "Succeeded":
            return item.id, state
        if state in ("Creating", "Updating"):
            best = (item.id, state)
    return best


def image_from_file(
    machine: Recorder, options: AzureOptions, compute: Any, resources: Any, path: Path, where: str
) -> str:
    """The id of the managed image of ``path``'s content in the target's location: one that exists (made by any run)
    is reused; else one is made from the page blob of that content, uploaded first or its interrupted upload
    continued. What this machine makes it records (and deletes at the end); what it reuses it leaves alone.
    ``where`` names the ``share_timeout`` key, for the error when another machine's image or upload takes longer."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: a VHD is gigabytes
    url = blob_account_url(options)
    service = blob_service(url, options.instance_discovery)
    blob_client = service.get_blob_client(options.container, f"{BLOB_PREFIX}{digest}.vhd")
    seen = ""

    def made() -> str | None:
        nonlocal seen
        image_id, state = find_image(resources, compute.images, digest, options.location)
        if state == "Succeeded":
            log.info("%s: reusing image %s (same content as %s)", machine.name, image_id, path.name)
            return image_id
        if state is None:
            blob_url = upload_blob(machine, blob_client, url, path, digest)
            if blob_url is not None:
                return create_image(machine, compute, options, blob_url, digest)
        seen = f"image {image_id}" if state else f"the upload of blob {blob_client.blob_name}"
        return None

    return wait_until(
        f"{machine.name}: waiting for another machine's image of {path.name}",
        made,
        time.monotonic() + options.share_timeout,
        options.poll_interval,
        status=lambda: (
            f"{seen} for {path.name} is still being made by another machine after {options.share_timeout:g} s ({where})"
        ),
    )


def create_image(machine: Recorder, compute: Any, options: AzureOptions, blob_url: str, digest: str) -> str:
    """Make the managed image of an uploaded VHD (tagged with its content's digest); returns its id."""
    models = azure_module("azure.mgmt.compute.models")
    disk = models.ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=blob_url, caching="ReadWrite")
    storage = models.ImageStorageProfile(os_disk=disk)
    properties = models.ImageProperties(hyper_v_generation="V1", storage_profile=storage)
    return create_recorded(machine, compute, options, "image", more_tags={DIGEST_TAG: digest}, properties=properties)
