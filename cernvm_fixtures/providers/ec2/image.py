"""Import a raw µCernVM "HVM" image (``ucernvm-*.hvm``) into EC2, as the CernVM EC2 guide does.

Steps (each recorded in the ledger before it happens, each resource tagged):
upload the file to ``import_bucket`` in S3, ``import_snapshot`` it (format RAW),
wait for the task, delete the upload, and register an HVM image from the
snapshot with ``SriovNetSupport=simple`` (the guide's ``--sriov simple``),
``EnaSupport=True`` and a scratch volume mapping (the guide maps a 25 GB scratch
snapshot; an EBS mapping of ``scratch_size`` GiB without a snapshot gives the
same empty disk without another snapshot to manage).

VM Import needs the ``vmimport`` service role (or ``import_role``) with read
access to the bucket; see AWS's VM Import/Export guide.

An image the platform has already (an AMI id) is looked up by :func:`find_image`.
Everything created is recorded through a :class:`~.tags.Recorder`, so this module
never needs the provider.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

from ...errors import ConfigError, PermanentError, ProviderError
from ...ledger import Resource
from ..kit import wait_until
from .aws import AWS, BUSY_TIMEOUT, DESTROY_POLL, client, error_code, pages
from .options import Ec2Options
from .tags import RUN_TAG, Recorder, ids, tag_dict, tag_filters, tag_list

PREFIX = "cernvm-fixtures/"
"""Key prefix of uploads in the import bucket (sweep looks there)."""
ROOT_DEVICE = "/dev/xvda"


def find_image(ec2: Any, ami: str, where: str, region: str) -> dict[str, Any]:
    """The AMI as describe-images gives it; ConfigError (starting with ``where``) unless it is available here."""
    found = AWS.call("describe-images", ec2.describe_images, missing_ok=True, ImageIds=[ami])
    images = (found or {}).get("Images") or []
    if not images:
        raise ConfigError(
            f"{where}: AMI {ami} not found in region {region} "
            "(describe-images found nothing; check the id, the region and that the image is shared with you)"
        )
    image = images[0]
    if image.get("State", "available") != "available":
        raise ConfigError(f"{where}: AMI {ami} is {image['State']}, not available")
    return image


def check_bucket(s3: Any, bucket: str, where: str) -> None:
    """The import bucket exists and we may use it (checked before anything is created)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except AWS.errors() as e:
        code = error_code(e)
        if not code:  # not an answer from S3 (botocore could not ask)
            raise ProviderError(f"{where}: S3 bucket {bucket!r}: {AWS.message(e)}") from None
        problem = "does not exist" if code in ("404", "NoSuchBucket", "NotFound") else f"is not accessible ({code})"
        raise ConfigError(f"{where}: S3 bucket {bucket!r} {problem}") from None


def start_import(
    ec2: Any,
    *,
    bucket: str,
    key: str,
    client_token: str,
    role: str | None,
    tags: list[dict[str, str]],
    description: str,
) -> str:
    """Start ``import_snapshot`` of a RAW disk image in S3; returns the import task id."""
    params: dict[str, Any] = {
        "ClientToken": client_token,
        "Description": description,
        "DiskContainer": {
            "Description": description,
            "Format": "RAW",
            "UserBucket": {"S3Bucket": bucket, "S3Key": key},
        },
        "TagSpecifications": [{"ResourceType": "import-snapshot-task", "Tags": tags}],
    }
    if role:
        params["RoleName"] = role
    made = AWS.call("import-snapshot", ec2.import_snapshot, **params)
    return made["ImportTaskId"]


def wait_import(ec2: Any, task_id: str, *, deadline: float, poll: float) -> str:
    """Wait for an import task; returns the snapshot id, raises ProviderError if it failed or ran out of time."""
    seen = {"status": "unknown", "progress": ""}

    def snapshot() -> str | None:
        found = AWS.call(f"describe import task {task_id}", ec2.describe_import_snapshot_tasks, ImportTaskIds=[task_id])
        tasks = found.get("ImportSnapshotTasks") or []
        detail = (tasks[0].get("SnapshotTaskDetail") or {}) if tasks else {}
        status = seen["status"] = detail.get("Status", "unknown")
        seen["progress"] = f" ({detail['Progress']}%)" if detail.get("Progress") else ""
        if status == "completed" and detail.get("SnapshotId"):
            return detail["SnapshotId"]
        if status in ("deleting", "deleted", "error", "failed"):
            raise PermanentError(f"import task {task_id} {status}: {detail.get('StatusMessage') or 'no reason given'}")
        return None

    return wait_until(
        f"import task {task_id} (import_timeout)",
        snapshot,
        deadline,
        poll,
        status=lambda: f"still {seen['status']}{seen['progress']}",
    )


def registration(
    name: str, snapshot_id: str, arch: str, scratch_size: int, tags: list[dict[str, str]]
) -> dict[str, Any]:
    """The register_image parameters: HVM, SR-IOV (``simple``) and ENA, root from the snapshot, plus scratch."""
    mappings: list[dict[str, Any]] = [
        {
            "DeviceName": ROOT_DEVICE,
            "Ebs": {"SnapshotId": snapshot_id, "DeleteOnTermination": True, "VolumeType": "gp3"},
        }
    ]
    if scratch_size > 0:
        mappings.append(
            {
                "DeviceName": "/dev/sdb",
                "Ebs": {"VolumeSize": scratch_size, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        )
    return {
        "Name": name,
        "Description": f"cernvm-fixtures {name}",
        "Architecture": "arm64" if arch == "aarch64" else "x86_64",
        "VirtualizationType": "hvm",
        "RootDeviceName": ROOT_DEVICE,
        "SriovNetSupport": "simple",
        "EnaSupport": True,
        "BootMode": "uefi" if arch == "aarch64" else "legacy-bios",
        "BlockDeviceMappings": mappings,
        "TagSpecifications": [{"ResourceType": "image", "Tags": tags}],
    }


class ImportClients(NamedTuple):
    """The clients an import talks to: EC2, S3, and the one for the VM Import calls (a seam for tests)."""

    ec2: Any
    s3: Any
    importer: Any


def import_image(
    clients: ImportClients, recorder: Recorder, options: Ec2Options, path: Path, arch: str
) -> dict[str, Any]:
    """Upload, import and register ``path``; returns the image as describe_images would (the parts we use)."""
    ec2, s3, importer = clients
    key = f"{PREFIX}{recorder.name}/{path.name}"
    bucket = options.import_bucket
    if bucket is None:  # the provider checks it first; keep the promise for any other caller
        raise ConfigError(f"import_bucket: needed to import the image file {path}")
    upload = recorder.record("s3-object", bucket=bucket, key=key)
    _upload(s3, path, bucket, key, tag_dict(upload, extra=options.tags))

    snapshot = recorder.record("snapshot", client_token=f"{recorder.name}-import")
    snapshot_tags = tag_list(tag_dict(snapshot, extra=options.tags))
    task_id = start_import(
        importer,
        bucket=bucket,
        key=key,
        client_token=snapshot.data["client_token"],
        role=options.import_role,
        tags=snapshot_tags,
        description=f"cernvm-fixtures {recorder.name}: {path.name}",
    )
    recorder.created(snapshot, import_task_id=task_id)
    deadline = time.monotonic() + options.import_timeout
    snapshot_id = wait_import(importer, task_id, deadline=deadline, poll=options.poll_interval)
    recorder.created(snapshot, id=snapshot_id)
    AWS.call("tag snapshot", ec2.create_tags, Resources=[snapshot_id], Tags=snapshot_tags)
    recorder.drop(upload)

    image = recorder.record("image")
    image_tags = tag_list(tag_dict(image, extra=options.tags))
    params = registration(recorder.name, snapshot_id, arch, options.scratch_size, image_tags)
    made = AWS.call("register-image", ec2.register_image, **params)
    image_id = made["ImageId"]
    recorder.created(image, id=image_id)
    AWS.call("tag image", ec2.create_tags, Resources=[image_id], Tags=image_tags)
    state = {"now": "pending"}

    def available() -> bool | None:
        found = AWS.call(f"describe {image_id}", ec2.describe_images, missing_ok=True, ImageIds=[image_id])
        state["now"] = ((found or {}).get("Images") or [{}])[0].get("State", "pending")
        if state["now"] in ("failed", "invalid", "error", "deregistered"):
            raise PermanentError(f"{recorder.name}: image {image_id} is {state['now']}")
        return True if state["now"] == "available" else None

    wait_until(
        f"{recorder.name}: image {image_id} (import_timeout)",
        available,
        time.monotonic() + options.import_timeout,
        options.poll_interval,
        status=lambda: f"still {state['now']}",
    )
    return {
        "ImageId": image_id,
        "RootDeviceName": ROOT_DEVICE,
        "BlockDeviceMappings": params["BlockDeviceMappings"],
        "Architecture": params["Architecture"],
    }


def _upload(s3: Any, path: Path, bucket: str, key: str, tags: dict[str, str]) -> None:
    """Upload with the ledger entry as object metadata (S3 allows only 10 object tags; the run id is one)."""
    from boto3.exceptions import S3UploadFailedError  # type: ignore[import-untyped]

    run = {k: v for k, v in tags.items() if k == RUN_TAG}
    try:
        AWS.call(
            f"upload {path.name} to s3://{bucket}/{key}",
            s3.upload_file,
            Filename=str(path),
            Bucket=bucket,
            Key=key,
            ExtraArgs={"Metadata": tags, "Tagging": urlencode(run)},
        )
    except S3UploadFailedError as e:
        raise ProviderError(f"upload {path.name} to s3://{bucket}/{key}: {e}") from None


def uploaded_objects(s3: Any, bucket: str) -> list[tuple[str, dict[str, str]]]:
    """(key, ledger fields) of every upload under our prefix in the import bucket (for sweep)."""
    found = []
    for item in pages(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=PREFIX):
        head = AWS.call(
            f"metadata of s3://{bucket}/{item['Key']}", s3.head_object, missing_ok=True, Bucket=bucket, Key=item["Key"]
        )
        found.append((item["Key"], dict((head or {}).get("Metadata", {}))))
    return found


def destroy_snapshot(resource: Resource, region: str, endpoint: str | None) -> None:
    """Delete the imported snapshot of a ledger entry (see :func:`remove_snapshot`)."""
    remove_snapshot(resource, client("ec2", region, endpoint))


def remove_snapshot(resource: Resource, ec2: Any) -> None:
    """Delete the imported snapshot; an import still running is cancelled, a finished one's snapshot deleted."""
    found_ids = ids(resource)
    task_id = resource.data.get("import_task_id")
    if not found_ids and task_id:
        found = AWS.call(
            f"describe import task {task_id}",
            ec2.describe_import_snapshot_tasks,
            missing_ok=True,
            ImportTaskIds=[task_id],
        )
        for task in (found or {}).get("ImportSnapshotTasks", []):
            detail = task.get("SnapshotTaskDetail") or {}
            if detail.get("SnapshotId"):
                found_ids.append(detail["SnapshotId"])
            elif detail.get("Status") == "active":
                AWS.call(f"cancel import task {task_id}", ec2.cancel_import_task, missing_ok=True, ImportTaskId=task_id)
    tagged = pages(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=tag_filters(resource))
    found_ids = list(dict.fromkeys(found_ids + [s["SnapshotId"] for s in tagged]))
    for snapshot_id in found_ids:
        delete = functools.partial(ec2.delete_snapshot, SnapshotId=snapshot_id)
        AWS.delete_until_free(f"delete snapshot {snapshot_id}", delete, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)


def destroy_image(resource: Resource, region: str, endpoint: str | None) -> None:
    """Deregister the image, found by id, by tag or by its name."""
    ec2 = client("ec2", region, endpoint)
    found = AWS.call("describe-images", ec2.describe_images, Owners=["self"], Filters=tag_filters(resource))
    named = AWS.call(
        "describe-images", ec2.describe_images, Owners=["self"], Filters=[{"Name": "name", "Values": [resource.name]}]
    )
    listed = found.get("Images", []) + named.get("Images", [])
    image_ids = list(dict.fromkeys(ids(resource) + [i["ImageId"] for i in listed]))
    for image_id in image_ids:
        AWS.call(f"deregister {image_id}", ec2.deregister_image, missing_ok=True, ImageId=image_id)


def destroy_s3_object(resource: Resource, region: str, endpoint: str | None) -> None:
    """Delete the upload from the import bucket."""
    s3 = client("s3", region, endpoint)
    bucket, key = resource.data.get("bucket"), resource.data.get("key")
    if bucket and key:
        AWS.call(f"delete s3://{bucket}/{key}", s3.delete_object, missing_ok=True, Bucket=bucket, Key=key)
