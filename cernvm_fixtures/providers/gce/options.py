"""The ``gce`` target's keys, checked when the config loads (GCE's naming and label rules, the SSH source range)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ... import netcheck
from ..base import RemoteOptions, SshCidr
from .labels import NAME, ZONE, label_problems


def _zone(value: str) -> str:
    if not ZONE.match(value):
        raise ValueError("a GCE zone such as 'europe-west1-b'")
    return value


def _name(value: str) -> str:
    if not NAME.match(value.rsplit("/", 1)[-1]):
        raise ValueError("a GCE resource name (lowercase letters, digits and '-', starting with a letter)")
    return value


SUBNETWORK = re.compile(
    r"^(?:https://[^/]+/compute/v1/)?(?:projects/(?P<project>[^/]+)/)?"
    r"regions/(?P<region>[^/]+)/subnetworks/(?P<name>[^/]+)$"
)
"""A subnetwork as the Compute API's NetworkInterface.subnetwork takes it (a full or partial URL), with its parts."""


def _subnetwork(value: str | None) -> str | None:
    if value is None or NAME.match(value) or SUBNETWORK.match(value):
        return value
    raise ValueError(
        "a subnetwork name (of the zone's region), regions/REGION/subnetworks/NAME or "
        "projects/PROJECT/regions/REGION/subnetworks/NAME"
    )


def _endpoint(value: str | None) -> str | None:
    return None if value is None else netcheck.api_endpoint(value)


def _labels(value: dict[str, str]) -> dict[str, str]:
    problems = label_problems(value)
    if problems:
        raise ValueError("valid GCE labels: " + "; ".join(problems))
    return value


Name = Annotated[str, AfterValidator(_name)]
Endpoint = Annotated[str | None, AfterValidator(_endpoint)]


class GceOptions(RemoteOptions):
    """Target keys of the ``gce`` provider. The generic ``image`` key is an image, a family or a ``.tar.gz``."""

    project: str | None = None
    """GCP project; default: the project of the Application Default Credentials (or GOOGLE_CLOUD_PROJECT)."""
    zone: Annotated[str, AfterValidator(_zone)]
    """Zone of the instance, e.g. ``europe-west1-b``."""
    machine_type: Name = "e2-standard-2"
    """The NIC rules of the profile depend on it: virtio_net, or gVNIC on the types that need it."""
    bucket: str | None = None
    """Cloud Storage bucket a local ``.tar.gz`` image is uploaded to (needed when ``image`` is a file)."""
    network: Name = "default"
    subnetwork: Annotated[str | None, AfterValidator(_subnetwork)] = None
    """``regions/REGION/subnetworks/NAME`` or a name in the zone's region; default: the network's own."""
    ssh_cidr: SshCidr
    """The runner's own public address (``203.0.113.7/32``): the firewall rule admits tcp/22 from it alone."""
    address: Literal["external", "internal"] = "external"
    """Reach the instance at its external NAT address, or its internal one (from the VPC or via ``jump_host``)."""
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = {}
    """Extra labels on every resource (GCE rules; ``cvmfx-*`` keys are ours)."""
    disk_size_gb: int = Field(20, ge=10, le=65536)
    """Boot disk size; µCernVM uses the space beyond the image as its scratch area."""
    endpoint: Endpoint = None
    """Another Compute API endpoint (a private endpoint, or a local test API)."""
    storage_endpoint: Endpoint = None
    """Another Cloud Storage endpoint (e.g. an emulator)."""
    operation_timeout: float = Field(600.0, gt=0)
    """Seconds one long-running operation (insert, delete, image creation) may take."""
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud VM takes a minute or two to boot)."""
    display: bool = True
    """A virtual display device (``displayDevice.enableDisplay``): the screen instances.getScreenshot reads, where a
    CernVM image shows what it prints on tty0. No console listener comes with it."""

    def subnetwork_link(self) -> str | None:
        """The subnetwork as a partial URL (a bare name is the one of that name in the zone's region), or None."""
        if not self.subnetwork:
            return None
        if "/" in self.subnetwork:
            return self.subnetwork
        return f"regions/{self.zone.rsplit('-', 1)[0]}/subnetworks/{self.subnetwork}"

    def network_link(self, project: str) -> str:
        """The network as a partial URL (a bare name is the project's own)."""
        return self.network if "/" in self.network else f"projects/{project}/global/networks/{self.network}"
