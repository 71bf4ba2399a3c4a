"""VHDs on Azure: the checks Azure's import needs of the file, and its upload as a page blob named by its content (one
per SHA-256 in a container, sent once, continued after an error or after its uploader died), with the blob's
teardown and sweep.

Functions take a blob client and the machine's :class:`~.tags.Recorder`, never the provider.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ProviderError
from ...ledger import Resource
from ..kit import decode_fields, encode_fields
from .clients import ERRORS, azure_module, blob_service
from .options import AzureOptions
from .tags import COMPLETE_TAG, DIGEST_TAG, Recorder, from_metadata, resource_from_tags, to_metadata

log = logging.getLogger(__name__)

VHD_FOOTER = 512
PAGE = 512
CHUNK = 4 * 1024 * 1024
"""Largest page range one Put Page call may write."""
BLOB_PREFIX = "cernvm-fixtures/"
"""Uploaded VHDs are named by content: ``cernvm-fixtures/<sha256>.vhd`` in the container."""
BLOB_NAME = re.compile(re.escape(BLOB_PREFIX) + r"([0-9a-f]{64}|preflight-[0-9a-f]{16}-[a-z0-9-]+)\.vhd")
"""The name of every blob cernvm-fixtures uploads."""
BLOB_WRITER = "Storage Blob Data Contributor"
"""The Azure built-in role a principal needs to write blobs with an Entra token (RBAC on the data plane)."""
UPLOAD_STALE = 900.0
"""Seconds without a page written after which an unfinished upload's uploader counts as gone, wherever it ran (on
another machine its process cannot be asked): every page written moves the blob's Last-Modified."""
UPLOAD_ATTEMPTS = 5
"""Times an upload continues after an error the SDK's own retries did not cure."""


FIXED = 2
"""The footer's disk type of a fixed-size VHD (3: dynamic, 4: differencing), the only kind Azure takes."""
MIB = 1024 * 1024


def footer_problem(footer: bytes, data_size: int) -> tuple[str, str] | None:
    """What is wrong with a VHD's last 512 bytes for Azure, given the size of the data before them: None, or (kind,
    what is wrong as a predicate), kind ``cookie``, ``type``, ``size`` or ``checksum`` (the VHD specification's
    hard disk footer: cookie ``conectix`` at 0, current size at 48, disk type at 60, checksum at 64: the one's
    complement of the sum of the footer's other bytes). The one reading of the footer: the provider's check before
    an upload and the tests' fake ARM's check of the blob an image is made from."""
    if len(footer) != VHD_FOOTER or footer[:8] != b"conectix":
        return "cookie", "has no VHD footer ('conectix' in its last 512 bytes)"
    disk_type = int.from_bytes(footer[60:64], "big")
    if disk_type != FIXED:
        return "type", f"is a {'dynamic' if disk_type == 3 else f'type {disk_type}'} VHD"
    virtual = int.from_bytes(footer[48:56], "big")
    if virtual != data_size or virtual % MIB:
        return "size", (
            f"has virtual size {virtual} bytes, which is not a whole number of MiB matching the {data_size} bytes of "
            "data"
        )
    checksum = int.from_bytes(footer[64:68], "big")
    computed = ~sum(footer[:64] + footer[68:]) & 0xFFFFFFFF
    if checksum != computed:
        return "checksum", f"has footer checksum {checksum:#010x}, not {computed:#010x} (a damaged footer)"
    return None


def check_vhd(path: Path, where: str) -> int:
    """The size of a fixed-size VHD Azure accepts (footer ``conectix``, fixed, whole MiB of data, its checksum
    right); else a clear error."""
    size = path.stat().st_size
    if size < VHD_FOOTER + MIB:
        raise ConfigError(f"{where}: {path} is {size} bytes: too small for a VHD (at least 1 MiB and a footer)")
    with open(path, "rb") as f:
        f.seek(size - VHD_FOOTER)
        footer = f.read(VHD_FOOTER)
    found = footer_problem(footer, size - VHD_FOOTER)
    if found is None:
        return size
    kind, what = found
    remedy = {
        "cookie": "convert it with qemu-img convert -f raw -O vpc -o subformat=fixed,force_size",
        "type": "Azure takes fixed-size VHDs only (qemu-img convert -O vpc -o subformat=fixed,force_size)",
        "size": "Azure requires that (qemu-img resize, then convert with force_size)",
        "checksum": "Azure refuses it (convert it again)",
    }[kind]
    raise ConfigError(f"{where}: {path} {what}; {remedy}")


def written_ranges(blob_client: Any) -> list[tuple[int, int]]:
    """The (first, last) byte ranges a page blob holds data in, as the service reports them."""
    ranges = ERRORS.call(f"list page ranges of {blob_client.blob_name}", lambda: list(blob_client.list_page_ranges()))
    return sorted((r.start, r.end) for r in ranges if not r.cleared)


def covered(ranges: list[tuple[int, int]], offset: int, length: int) -> bool:
    """Whether bytes ``offset`` .. ``offset + length - 1`` all lie in one of ``ranges`` (merged by the service)."""
    return any(first <= offset and offset + length - 1 <= last for first, last in ranges)


def pages(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of the non-empty runs of 512-byte pages, at most CHUNK bytes each."""
    with open(path, "rb") as f:
        offset = 0
        while chunk := f.read(CHUNK):
            start = None
            for i in range(0, len(chunk), PAGE):
                empty = not chunk[i : i + PAGE].strip(b"\0")
                if not empty and start is None:
                    start = i
                elif empty and start is not None:
                    yield offset + start, chunk[start:i]
                    start = None
            if start is not None:
                yield offset + start, chunk[start:]
            offset += len(chunk)


def blob_account_url(options: AzureOptions) -> str:
    """The blob service a local VHD is uploaded to: ``blob_endpoint``, else the storage account's."""
    return options.blob_endpoint or f"https://{options.storage_account}.blob.core.windows.net"


def blob_metadata(resource: Resource, digest: str, complete: bool = False) -> dict[str, str]:
    """The metadata of an uploaded VHD's blob: the uploader's ledger entry (as on a tagged resource), the content's
    digest and, once every page is written, the complete mark."""
    return to_metadata({**encode_fields(resource), DIGEST_TAG: digest, **({COMPLETE_TAG: "true"} if complete else {})})


def upload_blob(machine: Recorder, blob_client: Any, account_url: str, path: Path, digest: str) -> str | None:
    """The URL of the complete page blob of ``path`` (whose SHA-256 is ``digest``), uploading it (or continuing an
    upload whose uploader is gone) if needed; None while another live machine is uploading it."""
    core = azure_module("azure.core")
    exceptions = azure_module("azure.core.exceptions")
    size = path.stat().st_size
    url = blob_client.url.split("?")[0]

    def read() -> Any:
        try:
            return blob_client.get_blob_properties()
        except exceptions.HttpResponseError as e:
            if e.status_code == 403:  # no data role at all: even reading is refused
                raise role_error(machine.name, blob_client.container_name, account_url, e) from None
            raise

    props = ERRORS.call(f"read blob {blob_client.blob_name}", read, missing_ok=True)
    if props is not None:
        tags = from_metadata(props.metadata or {})
        if tags.get(DIGEST_TAG) != digest or props.size != size or props.blob_type != "PageBlob":
            raise ProviderError(
                f"{machine.name}: blob {blob_client.blob_name} exists but does not hold {path.name} "
                f"(sha256 {tags.get(DIGEST_TAG)}, {props.size} bytes); it was left alone"
            )
        uploader = decode_fields(tags)
        if uploader is None:
            raise ProviderError(
                f"{machine.name}: blob {blob_client.blob_name} has the name and digest of {path.name}'s upload but "
                "no mark of this key: cernvm-fixtures with this key did not upload it (or it was planted), so its "
                "pages are not trusted; it was left alone (delete it, or set CERNVM_FIXTURES_MARK_KEY to the key "
                "that uploaded it)"
            )
        if tags.get(COMPLETE_TAG) == "true":
            log.info("%s: reusing blob %s (same content as %s)", machine.name, blob_client.blob_name, path.name)
            return url
        idle = time.time() - props.last_modified.timestamp() if props.last_modified else 0.0
        if uploader.owner.alive() and idle < UPLOAD_STALE:  # on another machine, only its silence tells
            return None
    check_blob_role(machine, blob_client, account_url, digest)
    blob = machine.record(
        "blob", account_url=account_url, container=blob_client.container_name, blob=blob_client.blob_name
    )
    metadata = blob_metadata(blob, digest)
    try:
        if props is None:
            blob_client.create_page_blob(size, metadata=metadata, match_condition=core.MatchConditions.IfMissing)
        else:  # take over an upload whose uploader is gone; the condition makes one taker win
            blob_client.set_blob_metadata(metadata, etag=props.etag, match_condition=core.MatchConditions.IfNotModified)
            log.info("%s: continuing the interrupted upload of %s", machine.name, blob_client.blob_name)
    except (exceptions.ResourceExistsError, exceptions.ResourceModifiedError):
        machine.forget(blob)  # another machine got there first: nothing of ours to destroy
        return None
    except ERRORS.errors() as e:
        raise ProviderError(f"create page blob {blob_client.blob_name}: {ERRORS.message(e)}") from None
    machine.created(blob, url=url)
    sent = send_pages(machine.name, blob_client, path, resume=props is not None)
    if props is not None:  # pages another uploader wrote: trusted only once the whole blob has the content's digest
        verify_blob(machine.name, blob_client, digest)
    ERRORS.call("mark the upload complete", blob_client.set_blob_metadata, blob_metadata(blob, digest, complete=True))
    log.info("%s: uploaded %s (%d bytes sent of %d)", machine.name, path.name, sent, size)
    machine.created(blob, sent=sent)
    return url


def verify_blob(machine: str, blob_client: Any, digest: str) -> None:
    """The SHA-256 of the whole blob, read back (streamed), must be ``digest``: a taken-over upload is checked
    before it is marked complete and made into the image every later run reuses."""
    found = hashlib.sha256()
    stream = ERRORS.call(f"read back {blob_client.blob_name}", blob_client.download_blob)
    for chunk in stream.chunks():
        found.update(chunk)
    if found.hexdigest() != digest:
        raise ProviderError(
            f"{machine}: the continued upload {blob_client.blob_name} reads back as sha256 {found.hexdigest()}, not "
            f"{digest}: pages the earlier uploader wrote differ from the file; it is not used"
        )


def role_error(name: str, container: str, account_url: str, error: Any) -> ProviderError:
    """What a 403 from the blob service means for an Entra principal: the data role is missing (Azure RBAC)."""
    code = getattr(error, "error_code", None) or "AuthorizationPermissionMismatch"
    return ProviderError(
        f"{name}: the identity may not write blobs in container {container!r} of {account_url} (HTTP 403 {code}): "
        f'it needs the role "{BLOB_WRITER}" on that storage account or container (az role assignment create '
        f'--role "{BLOB_WRITER}" --assignee <principal> --scope <storage account id>); Contributor or Owner on '
        "the account do not let it read or write blob data"
    )


def check_blob_role(machine: Recorder, blob_client: Any, account_url: str, digest: str) -> None:
    """Before an upload: create and delete a 512-byte page blob next to it (recorded first, like every upload), so
    that a principal without a data role on the container fails at once, naming the role, instead of at the first
    page of a multi-GB upload. Azure answers 403 (AuthorizationPermissionMismatch) to one that has only, e.g.,
    Contributor on the account: writing blobs with an Entra token needs "Storage Blob Data Contributor"."""
    exceptions = azure_module("azure.core.exceptions")
    blob_module = azure_module("azure.storage.blob")
    container = blob_client.container_name
    name = f"{BLOB_PREFIX}preflight-{digest[:16]}-{machine.name}.vhd"
    probe = blob_module.BlobClient(account_url, container, name, credential=blob_client.credential)
    entry = machine.record("blob", account_url=account_url, container=container, blob=name)
    try:
        probe.create_page_blob(PAGE, metadata=blob_metadata(entry, digest))
    except exceptions.HttpResponseError as e:
        machine.forget(entry)  # nothing was made
        if e.status_code == 403:
            raise role_error(machine.name, container, account_url, e) from None
        raise ProviderError(f"{machine.name}: blob pre-flight in {container}: {ERRORS.message(e)}") from None
    ERRORS.call(f"delete blob {name}", probe.delete_blob, missing_ok=True)  # its entry stays if this fails
    machine.forget(entry)


def send_pages(machine: str, blob_client: Any, path: Path, resume: bool) -> int:
    """Send the non-empty pages of ``path`` the blob does not hold yet; after an error the SDK's own retries did not
    cure, read what the blob holds and continue from there (up to UPLOAD_ATTEMPTS times). Returns the bytes sent."""
    sent, attempt = 0, 1
    while True:
        held = written_ranges(blob_client) if resume or attempt > 1 else []
        offset = 0
        try:
            for offset, data in pages(path):
                if not covered(held, offset, len(data)):
                    blob_client.upload_page(data, offset=offset, length=len(data))
                    sent += len(data)
            return sent
        except ERRORS.errors() as e:
            if attempt == UPLOAD_ATTEMPTS:
                raise ProviderError(
                    f"upload {blob_client.blob_name} at byte {offset}: {e} (gave up after {attempt} attempts)"
                ) from None
            log.warning("%s: upload of %s stopped at byte %d (%s); continuing", machine, path.name, offset, e)
            attempt += 1


def own_blob(resource: Resource) -> tuple[Any, Any] | None:
    """(blob client, properties) of a recorded upload, None if it is gone or another machine took it over (its
    metadata names that machine now: the blob is left to it)."""
    data = resource.data
    service = blob_service(data["account_url"], data.get("instance_discovery", True))
    blob_client = service.get_blob_client(data["container"], data["blob"])
    props = ERRORS.call(f"read blob {data['blob']}", blob_client.get_blob_properties, missing_ok=True)
    if props is None:
        return None
    uploader = decode_fields(from_metadata(props.metadata or {}))
    if uploader is None or (uploader.run, uploader.name) != (resource.run, resource.name):
        log.info("blob %s: another machine took over its upload; left to it", data["blob"])
        return None
    return blob_client, props


def destroy_blob(resource: Resource) -> None:
    """Delete a recorded upload, unless another machine took it over."""
    found = own_blob(resource)
    if found is not None:
        ERRORS.call(f"delete blob {resource.data['blob']}", found[0].delete_blob, missing_ok=True)


def tag_blob(resource: Resource, tags: Mapping[str, str]) -> None:
    """Merge ``tags`` (the kept mark) into a recorded upload's metadata, unless another machine took it over."""
    found = own_blob(resource)
    if found is not None:
        blob_client, props = found
        metadata = {**(props.metadata or {}), **to_metadata(tags)}
        ERRORS.call(f"tag blob {resource.data['blob']}", blob_client.set_blob_metadata, metadata)


def blob_leftovers(account_url: str, container: str, data: dict[str, Any], recorded: set[str]) -> list[Resource]:
    """Uploaded VHDs in the container whose metadata names a machine no ledger entry names (``data``: what the
    entries carry to reach Azure, see :func:`.clients.entry_data`)."""
    container_client = blob_service(account_url, data["instance_discovery"]).get_container_client(container)
    listing = ERRORS.call(
        f"list blobs in {container}",
        lambda: list(container_client.list_blobs(name_starts_with=BLOB_PREFIX, include=["metadata"])),
        missing_ok=True,
    )
    found = []
    for blob in listing or []:
        where = {"account_url": account_url, "container": container, "blob": blob.name}
        entry = resource_from_tags("blob", from_metadata(blob.metadata or {}), {**data, **where})
        if entry is not None and not BLOB_NAME.fullmatch(blob.name):
            log.warning("%s: carries %s's metadata but is not named as an upload; left alone", blob.name, entry.name)
            continue
        if entry is not None and entry.name not in recorded:
            found.append(entry)
    return found
