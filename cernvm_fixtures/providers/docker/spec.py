"""What Docker is asked to create, as pure functions (unit-tested without a daemon): the container's spec, the name
an imported tarball gets, and the labels that carry a resource's ledger entry (the kit's fields)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...dirs import state_dir
from ...ledger import Resource
from ..kit import FIELD_PREFIX, decode_fields, encode_fields, field

LABEL_RUN = FIELD_PREFIX + "run"
"""Every container, image and volume cernvm-fixtures creates carries this label (sweep filters on it)."""
UP_LINE = "cernvm-fixtures: /init is up"
"""What the container's main process prints once ``/init`` has prepared the container."""
KEEPALIVE = ["/init", "sh", "-c", f"echo '{UP_LINE}'; exec sleep 2147483647"]


def container_spec(
    *,
    name: str,
    image: str,
    mode: str,
    network: str,
    environment: Mapping[str, str],
    repositories: Mapping[str, Path],
    shared: Mapping[str, Path],
    labels: Mapping[str, str],
    hostname: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``client.containers.create`` for one machine (pure; unit-tested).

    Equivalent to ``docker create [--security-opt seccomp=unconfined] --network N
    -v /cvmfs/REPO:/cvmfs/REPO:ro -v DIR:/mnt/shared/NAME -e ... IMAGE /init sh -c
    'echo ...; exec sleep ...'``.
    """
    mounts = [
        {"Type": "bind", "Source": str(path), "Target": f"/cvmfs/{repo}", "ReadOnly": True}
        for repo, path in repositories.items()
    ]
    mounts += [
        {"Type": "bind", "Source": str(path), "Target": f"/mnt/shared/{folder}", "ReadOnly": False}
        for folder, path in shared.items()
    ]
    spec: dict[str, Any] = {
        "image": image,
        "command": list(KEEPALIVE),
        "name": name,
        "hostname": hostname or name,
        "environment": dict(environment),
        "labels": dict(labels),
        "network_mode": network,
        "mounts": mounts,
        "detach": True,
        "tty": False,
        "stdin_open": False,
    }
    if mode == "parrot":
        spec["security_opt"] = ["seccomp=unconfined"]  # parrot needs ptrace; only in this mode
    return spec


def image_ref(run_id: str, digest: str) -> str:
    """The name an imported tarball gets in a run: one per run and content."""
    return f"cvmfx-{run_id}:{digest[:16]}"


def resource_labels(resource: Resource, state: Path | None = None) -> dict[str, str]:
    """The labels that let ``sweep`` find and judge a resource without the ledger: its entry's fields, plus
    the state directory it was made under (for people and tests; sweep never trusts a path from a label)."""
    return encode_fields(resource, state=str(state or state_dir()))


def import_changes(labels: Mapping[str, str]) -> list[str]:
    """Labels as a Dockerfile instruction for ``docker import --change`` (field values need no quoting)."""
    return ["LABEL " + " ".join(f"{key}={value}" for key, value in labels.items())]


def resource_from_labels(labels: Mapping[str, str] | None) -> Resource | None:
    """The docker ledger entry the labels carry; None if they are not ours."""
    found = decode_fields(labels or {})
    return found if found is not None and found.provider == "docker" else None


def labelled_state(labels: Mapping[str, str] | None) -> str | None:
    """The state directory recorded in the labels (informational only)."""
    return field(labels or {}, "state")
