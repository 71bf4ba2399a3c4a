"""Google Compute Engine through google-cloud-compute: the CernVM GCE recipe, made safe and leak-proof.

What a launch creates (each recorded in the ledger *before* its create call, and labelled with the ledger
entry within GCE's label rules):

* if ``image`` is a local ``.tar.gz``: the tarball as an object in ``bucket`` and an image made from it
  (``images.insert`` with ``rawDisk.source``), both named by the tarball's content hash, so a later run
  reuses them; the run deletes them at the end only when it made them;
* a firewall rule admitting tcp/22 from ``ssh_cidr`` alone, to a network tag no other instance has
  (firewall rules carry no labels: the ledger entry goes into the rule's description);
* the instance, with the run's SSH key in *its own* metadata (``ssh-keys``, ``block-project-ssh-keys``),
  never in project-wide metadata, and the context as the ``user-data`` metadata key.

Every long-running operation is waited for through its zone or global operation, on the same endpoint as
the call that started it. Teardown goes instance, firewall rule, image, object; deletes only what carries
this run's labels; "already gone" is fine. ``leftovers`` finds ours by labels alone, for ``sweep``.

Credentials come only from Application Default Credentials (``google.auth.default()``): the
GOOGLE_APPLICATION_CREDENTIALS file, gcloud's ADC, or the metadata server; nothing secret is logged,
recorded or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from pydantic import Field, ValidationInfo, field_validator

from .. import download, netcheck
from ..errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from ..images import Accepts, local_file
from ..interrupts import signals_deferred
from ..ledger import Owner, Resource
from ..screen import write_png
from .base import Machine, Provider, RemoteMachine, RemoteOptions, console_text

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

TARBALL = Accepts(
    ".tar.gz",
    "an image name, family/FAMILY, or uploads a .tar.gz holding disk.raw "
    "(ucernvm-<branch>.<V>-<R>.cernvm.x86_64.tar.gz)",
)

T = TypeVar("T")

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LABEL_PREFIX = "cvmfx-"
OUR_LABELS = 10
"""Labels cernvm-fixtures sets at most (GCE allows 64 per resource)."""
OBJECT_PREFIX = "cernvm-fixtures/"
METADATA_LIMIT = 256 * 1024
"""Bytes GCE accepts in one metadata value."""

CREATION_ORDER = ("object", "image", "firewall", "instance")
"""Resource kinds in the order they depend on each other; teardown goes the other way."""
RANK = {kind: i for i, kind in enumerate(CREATION_ORDER)}

STOPPED = {"STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED", "REPAIRING"}
DESTROY_TIMEOUT = 600.0
BUSY_TIMEOUT = 120.0
"""How long teardown retries a delete GCE refuses because something still uses the resource."""


# --- clients, lazily ------------------------------------------------------------------------------


def _import(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(
            "the gce provider needs google-cloud-compute and google-cloud-storage: pip install 'cernvm-fixtures[gce]'"
        ) from None


_clients: dict[tuple[str, str | None], Any] = {}
_clients_lock = threading.Lock()


def credentials() -> tuple[Any, str | None]:
    """Application Default Credentials and their project; a clear error when there are none."""
    auth = _import("google.auth")
    exceptions = _import("google.auth.exceptions")
    try:
        return auth.default(scopes=SCOPES)
    except exceptions.DefaultCredentialsError:
        raise ProviderError(
            "google.auth found no Application Default Credentials (it looks at GOOGLE_APPLICATION_CREDENTIALS, "
            "gcloud's `gcloud auth application-default login` and the GCE metadata server); cernvm-fixtures never "
            "reads them from its own config"
        ) from None


def client(kind: str, endpoint: str | None = None) -> Any:
    """One google-cloud client per kind (``InstancesClient``, ``storage``) and endpoint, for the process."""
    key = (kind, endpoint)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            creds, project = credentials()
            client_options = _import("google.api_core.client_options")
            options = client_options.ClientOptions(api_endpoint=endpoint) if endpoint else None
            if kind == "storage":
                storage = _import("google.cloud.storage")
                found = storage.Client(project=project, credentials=creds, client_options=options)
            else:
                found = getattr(_import("google.cloud.compute_v1"), kind)(
                    credentials=creds, transport="rest", client_options=options
                )
            _clients[key] = found
        return found


def reset_clients() -> None:
    """Forget cached clients (e.g. after the credentials in the environment changed)."""
    with _clients_lock:
        _clients.clear()


def reason(error: Exception) -> str:
    """Google's error reason (``notFound``, ``alreadyExists``, ``resourceInUseByAnotherResource``, ...)."""
    found = getattr(error, "reason", None)
    if found:
        return str(found)
    for item in getattr(error, "errors", None) or []:
        if isinstance(item, dict) and item.get("reason"):
            return str(item["reason"])
    return ""


@overload
def call(what: str, fn: Callable[..., T], *, missing_ok: Literal[False] = False, **params: Any) -> T: ...
@overload
def call(what: str, fn: Callable[..., T], *, missing_ok: bool, **params: Any) -> T | None: ...
def call(what: str, fn: Callable[..., T], *, missing_ok: bool = False, **params: Any) -> T | None:
    """Call a google-cloud method; API errors become ProviderError naming ``what`` (never secrets).

    With ``missing_ok`` a 404 returns None.
    """
    api = _import("google.api_core.exceptions")
    try:
        return fn(**params)
    except api.NotFound:
        if missing_ok:
            return None
        raise ProviderError(f"{what}: not found") from None
    except api.GoogleAPICallError as e:
        raise ProviderError(f"{what}: {e.code} {reason(e) or type(e).__name__}: {e.message}") from None
    except api.GoogleAPIError as e:
        raise ProviderError(f"{what}: {e}") from None


def wait_until(what: str, check: Callable[[], T | None], deadline: float, interval: float) -> T:
    """Call ``check`` until it returns a value; ProviderError naming ``what`` at the deadline."""
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise ProviderError(f"{what}: not done by the deadline")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def wait_operation(
    what: str, operation: Any, project: str, zone: str | None, endpoint: str | None, deadline: float
) -> None:
    """Wait for a zone or global operation on ``endpoint`` (never ``operation.result()``, which polls Google's
    public endpoint whatever the client was built with); an operation ending in error raises naming its codes."""
    kind = "ZoneOperationsClient" if zone else "GlobalOperationsClient"
    operations = client(kind, endpoint)
    where = {"project": project, "operation": operation.name, **({"zone": zone} if zone else {})}

    def done() -> Any:
        found = call(f"{what}: wait for {operation.name}", operations.wait, **where)
        return found if found is not None and found.status.name == "DONE" else None

    if operation.status.name == "DONE":
        finished = operation
    else:
        finished = wait_until(f"{what} (operation {operation.name})", done, deadline, 0.0)
    errors = list(finished.error.errors) if finished.error else []
    if errors:
        text = "; ".join(f"{e.code}: {e.message}" for e in errors)
        raise ProviderError(f"{what}: {text}")


# --- options --------------------------------------------------------------------------------------


def _label_problems(labels: dict[str, str], reserved: int = OUR_LABELS) -> list[str]:
    problems = []
    if len(labels) > 64 - reserved:
        problems.append(
            f"{len(labels)} labels, at most {64 - reserved} (GCE allows 64, cernvm-fixtures sets {reserved})"
        )
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            problems.append(f"key {key!r} is not a lowercase letter followed by up to 62 of a-z 0-9 _ -")
        if not LABEL_VALUE.match(value):
            problems.append(f"value {value!r} of {key!r} is not up to 63 of a-z 0-9 _ -")
        if key.startswith(LABEL_PREFIX):
            problems.append(f"key {key!r} uses the prefix {LABEL_PREFIX!r}, which cernvm-fixtures sets itself")
    return problems


class GceOptions(RemoteOptions):
    """Target keys of the ``gce`` provider. The generic ``image`` key is an image, a family or a ``.tar.gz``."""

    project: str | None = None
    """GCP project; default: the project of the Application Default Credentials (or GOOGLE_CLOUD_PROJECT)."""
    zone: str
    """Zone of the instance, e.g. ``europe-west1-b``."""
    machine_type: str = "e2-standard-2"
    """The NIC rules of the profile depend on it: virtio_net, or gVNIC on the types that need it."""
    bucket: str | None = None
    """Cloud Storage bucket a local ``.tar.gz`` image is uploaded to (needed when ``image`` is a file)."""
    network: str = "default"
    subnetwork: str | None = None
    """``regions/REGION/subnetworks/NAME`` or a name in the zone's region; default: the network's own."""
    ssh_cidr: str
    """The runner's own public address (``203.0.113.7/32``): the firewall rule admits tcp/22 from it alone."""
    address: Literal["external", "internal"] = "external"
    """Reach the instance at its external NAT address, or its internal one (from the VPC or via ``jump_host``)."""
    labels: dict[str, str] = {}
    """Extra labels on every resource (GCE rules; ``cvmfx-*`` keys are ours)."""
    disk_size_gb: int = Field(20, ge=10, le=65536)
    """Boot disk size; µCernVM uses the space beyond the image as its scratch area."""
    endpoint: str | None = None
    """Another Compute API endpoint (a private endpoint, or a local test API)."""
    storage_endpoint: str | None = None
    """Another Cloud Storage endpoint (e.g. an emulator)."""
    operation_timeout: float = Field(600.0, gt=0)
    """Seconds one long-running operation (insert, delete, image creation) may take."""
    poll_interval: float = Field(5.0, gt=0)
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud VM takes a minute or two to boot)."""
    display: bool = True
    """A virtual display device (``displayDevice.enableDisplay``): the screen instances.getScreenshot reads, where a
    CernVM image shows what it prints on tty0. No console listener comes with it."""

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not ZONE.match(value):
            raise ValueError("a GCE zone such as 'europe-west1-b'")
        return value

    @field_validator("network", "machine_type")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value.rsplit("/", 1)[-1]):
            raise ValueError("a GCE resource name (lowercase letters, digits and '-', starting with a letter)")
        return value

    @field_validator("endpoint", "storage_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else netcheck.api_endpoint(value)

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, value: str, info: ValidationInfo) -> str:
        return netcheck.ssh_cidr(value, bool(info.data.get("allow_wide_ssh")))

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems = _label_problems(value)
        if problems:
            raise ValueError("valid GCE labels: " + "; ".join(problems))
        return value


# --- labels: the ledger entry on the platform -----------------------------------------------------


def encode(text: str) -> str:
    """Text as a GCE label value: a-z 0-9 _ kept, every other byte as ``-xx`` (reversible)."""
    return "".join(c if re.match(r"[a-z0-9_]", c) else "".join(f"-{b:02x}" for b in c.encode()) for c in text)[:63]


def decode(value: str) -> str:
    return re.sub(rb"-([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode()).decode("utf-8", "replace")


def labels_for(resource: Resource, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The labels of one resource: the user's, then the ledger entry's (which always win)."""
    owner = resource.owner
    labels = dict(extra or {})
    labels.update(
        {
            "cvmfx-run": encode(resource.run),
            "cvmfx-machine": encode(resource.name),
            "cvmfx-target": encode(resource.target),
            "cvmfx-kind": encode(resource.kind),
            "cvmfx-owner-host": encode(owner.host),
            "cvmfx-owner-pid": str(owner.pid),
            "cvmfx-owner-start": owner.start or "",
            "cvmfx-created": f"{resource.created:.6f}".replace(".", "_"),
            "cvmfx-expires": str(int(resource.expires)),
        }
    )
    if resource.kept:
        labels["cvmfx-kept"] = "true"
    return labels


def resource_from_labels(labels: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's labels alone (None if it is not ours)."""
    if not labels.get("cvmfx-run") or not labels.get("cvmfx-machine") or labels.get("cvmfx-kind") not in RANK:
        return None
    pid = labels.get("cvmfx-owner-pid", "")
    owner = Owner(
        decode(labels.get("cvmfx-owner-host", "")) or "unknown",
        int(pid) if pid.isdigit() else 0,
        labels.get("cvmfx-owner-start") or None,
    )
    try:
        created = float(labels.get("cvmfx-created", "").replace("_", "."))
    except ValueError:
        created = 0.0
    expires = labels.get("cvmfx-expires", "")
    kind = decode(labels["cvmfx-kind"])
    return Resource(
        provider="gce",
        kind=kind,
        name=decode(labels["cvmfx-machine"]),
        run=decode(labels["cvmfx-run"]),
        target=decode(labels.get("cvmfx-target", "")),
        data=data,
        owner=owner,
        # found by label, a resource sorts just before its ledger twin and by dependency within a machine
        created=created - (len(CREATION_ORDER) - RANK[kind]) * 1e-4,
        expires=float(expires) if expires.isdigit() else 1.0,
        kept=labels.get("cvmfx-kept") == "true",
    )


def description_for(resource: Resource) -> str:
    """A firewall rule's description: it has no labels, so the same label set goes here, as JSON."""
    return "cernvm-fixtures " + json.dumps(labels_for(resource), sort_keys=True, separators=(",", ":"))


def labels_in_description(description: str) -> dict[str, str]:
    if not description.startswith("cernvm-fixtures {"):
        return {}
    try:
        found = json.loads(description.split(" ", 1)[1])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def ours(labels: dict[str, str], resource: Resource) -> bool:
    """Whether a resource found by name carries this ledger entry's run and machine (else it is someone else's)."""
    run, machine = decode(labels.get("cvmfx-run", "")), decode(labels.get("cvmfx-machine", ""))
    return run == resource.run and machine == resource.name


# --- images ---------------------------------------------------------------------------------------


def image_link(image: str, project: str) -> str:
    """A partial URL for ``images.insert``'s sourceImage: ``NAME``, ``family/F``, or ``projects/P/global/...``."""
    if image.startswith("projects/"):
        return image
    if image.startswith("family/"):
        return f"projects/{project}/global/images/{image}"
    return f"projects/{project}/global/images/{image}"


def content_hash(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the provider ---------------------------------------------------------------------------------


class GceProvider(Provider[GceOptions, "GceMachine"]):
    """Launches CernVM on Google Compute Engine (or any endpoint speaking its API)."""

    name = "gce"
    no_power_button = (
        "not implemented for GCE yet (instances.stop could: GCE sends the guest an ACPI shutdown and powers it off "
        "after a grace period)"
    )
    Options = GceOptions
    creation_order: ClassVar[tuple[str, ...]] = CREATION_ORDER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: GceOptions = self.target.options

    @property
    def project(self) -> str:
        if self.options.project:
            return self.options.project
        _, project = credentials()
        if not project:
            raise ConfigError(
                f"{self.target.where('project')}: not set, and the Application Default Credentials name "
                'no project (set project = "my-project" or GOOGLE_CLOUD_PROJECT)'
            )
        return project

    def compute(self, kind: str) -> Any:
        return client(kind, self.options.endpoint)

    def machine(self, name: str) -> GceMachine:
        return GceMachine(self, name)

    def _record(self, machine: Machine, kind: str, name: str, **data: Any) -> Resource:
        o = self.options
        return self.record(
            machine,
            kind,
            machine.name,
            gce_name=name,
            project=self.project,
            zone=o.zone,
            endpoint=o.endpoint,
            storage_endpoint=o.storage_endpoint,
            **data,
        )

    def created(self, resource: Resource, **data: Any) -> None:
        resource.data.update(data)
        self.run.ledger.update(resource)

    def drop(self, machine: Machine, resource: Resource) -> None:
        """Forget a recorded resource that was never made (e.g. the name belongs to someone else)."""
        self.run.ledger.forget(resource)
        machine.resources.remove(resource)

    def deadline(self) -> float:
        return time.monotonic() + self.options.operation_timeout

    # -- checks, all before anything is created

    def check_image(self, project: str) -> tuple[str, Path | None]:
        """(sourceImage link, None) for an existing image, or (image name to make, tarball) for a file."""
        image = self.target.image
        remote = download.is_release(image) or download.is_url(image)
        if remote or image.endswith(".tar.gz") or "/" in image and Path(image).expanduser().exists():
            path = local_file(self.target, TARBALL)
            if not self.options.bucket:
                raise ConfigError(
                    f"{self.target.where('bucket')}: required to upload {path.name}: the Cloud Storage "
                    "bucket images.insert reads it from"
                )
            bucket = call(
                "get bucket",
                client("storage", self.options.storage_endpoint).lookup_bucket,
                bucket_name=self.options.bucket,
            )
            if bucket is None:
                raise ConfigError(
                    f"{self.target.where('bucket')}: Cloud Storage bucket {self.options.bucket!r} "
                    "does not exist (or you may not read it)"
                )
            return f"cvmfx-{content_hash(path)[:24]}", path.resolve()
        link = image_link(image, project)
        match = re.match(r"^projects/([^/]+)/global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))$", link)
        if not match:
            raise ConfigError(
                f"{self.target.where('image')}: {image!r}: the gce provider boots an image name, "
                "family/FAMILY, projects/P/global/images/[family/]NAME, or uploads a local .tar.gz"
            )
        images = self.compute("ImagesClient")
        if match["family"]:
            found = call(
                f"get image family {match['family']}",
                images.get_from_family,
                missing_ok=True,
                project=match[1],
                family=match["family"],
            )
        else:
            found = call(
                f"get image {match['name']}", images.get, missing_ok=True, project=match[1], image=match["name"]
            )
        if found is None:
            raise ConfigError(
                f"{self.target.where('image')}: image {link} not found (check the name, the project and "
                "that the image is shared with you)"
            )
        if found.status and found.status != "READY":
            raise ConfigError(f"{self.target.where('image')}: image {link} is {found.status}, not READY")
        return link, None

    def check_placement(self, project: str) -> None:
        o = self.options
        machine_type = o.machine_type.rsplit("/", 1)[-1]
        if (
            call(
                "get machine type",
                self.compute("MachineTypesClient").get,
                missing_ok=True,
                project=project,
                zone=o.zone,
                machine_type=machine_type,
            )
            is None
        ):
            raise ConfigError(
                f"{self.target.where('machine_type')}: {machine_type!r} is not a machine type of zone "
                f"{o.zone} in project {project} (gcloud compute machine-types list --zones {o.zone})"
            )
        network = o.network.rsplit("/", 1)[-1]
        if (
            call("get network", self.compute("NetworksClient").get, missing_ok=True, project=project, network=network)
            is None
        ):
            raise ConfigError(f"{self.target.where('network')}: network {network!r} not found in project {project}")

    # -- creation

    def launch(self, machine: GceMachine, context: Context) -> None:
        project = self.project
        user_data = context.render().decode()
        if len(user_data.encode()) > METADATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: user data is {len(user_data.encode())} bytes; GCE accepts "
                f"{METADATA_LIMIT} in one metadata value"
            )
        source, tarball = self.check_image(project)
        self.check_placement(project)
        if tarball is not None:
            source = self._upload_image(machine, project, source, tarball)
        tag = machine.name
        self._create_firewall(machine, project, tag)
        self._create_instance(machine, project, source, tag, user_data)

    def _upload_image(self, machine: GceMachine, project: str, name: str, tarball: Path) -> str:
        """The image made from the tarball: reused when an image of that content exists, else uploaded and made."""
        images = self.compute("ImagesClient")
        link = f"projects/{project}/global/images/{name}"
        if call(f"get image {name}", images.get, missing_ok=True, project=project, image=name) is not None:
            log.info("%s: reusing image %s (same content)", machine.name, name)
            return link
        bucket_name = self.options.bucket
        assert bucket_name is not None
        key = f"{OBJECT_PREFIX}{name}.tar.gz"
        upload = self._record(machine, "object", key, bucket=bucket_name)
        blob = client("storage", self.options.storage_endpoint).bucket(bucket_name).blob(key, chunk_size=8 << 20)
        blob.metadata = labels_for(upload, self.options.labels)
        log.info("%s: uploading %s to gs://%s/%s", machine.name, tarball.name, bucket_name, key)
        call(
            f"upload gs://{bucket_name}/{key}",
            blob.upload_from_filename,
            filename=str(tarball),
            content_type="application/gzip",
        )
        self.created(upload, id=key)

        image = self._record(machine, "image", name)
        compute_v1 = _import("google.cloud.compute_v1")
        body = compute_v1.Image(
            name=name,
            raw_disk=compute_v1.RawDisk(source=f"https://storage.googleapis.com/{bucket_name}/{key}"),
            labels=labels_for(image, self.options.labels),
            guest_os_features=[compute_v1.GuestOsFeature(type_="VIRTIO_SCSI_MULTIQUEUE")],
            description=f"CernVM image uploaded by cernvm-fixtures from {tarball.name}",
        )
        with signals_deferred():  # the operation's name must reach the ledger: see _find
            operation = call(f"insert image {name}", images.insert_unary, project=project, image_resource=body)
            self.created(image, operation=operation.name)
        wait_operation(f"create image {name}", operation, project, None, self.options.endpoint, self.deadline())
        return link

    def _create_firewall(self, machine: GceMachine, project: str, tag: str) -> None:
        """One ingress rule: tcp/22 from ``ssh_cidr`` to this instance's own network tag."""
        o = self.options
        name = f"{machine.name}-ssh"
        rule = self._record(machine, "firewall", name)
        compute_v1 = _import("google.cloud.compute_v1")
        network = o.network if "/" in o.network else f"projects/{project}/global/networks/{o.network}"
        body = compute_v1.Firewall(
            name=name,
            network=network,
            direction="INGRESS",
            priority=1000,
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])],
            source_ranges=[o.ssh_cidr],
            target_tags=[tag],
            description=description_for(rule),
        )
        api = _import("google.api_core.exceptions")
        with signals_deferred():  # the operation's name must reach the ledger: see _find
            try:
                operation = self.compute("FirewallsClient").insert_unary(project=project, firewall_resource=body)
            except api.Conflict:
                self.drop(machine, rule)
                raise ProviderError(
                    f"{machine.name}: a firewall rule named {name} already exists in project {project} "
                    "and is not this run's; it was left alone"
                ) from None
            except api.GoogleAPICallError as e:
                raise ProviderError(f"insert firewall {name}: {e.code} {reason(e)}: {e.message}") from None
            self.created(rule, operation=operation.name)
        wait_operation(f"create firewall rule {name}", operation, project, None, o.endpoint, self.deadline())

    def _create_instance(self, machine: GceMachine, project: str, source: str, tag: str, user_data: str) -> None:
        o = self.options
        compute_v1 = _import("google.cloud.compute_v1")
        instance = self._record(machine, "instance", machine.name)
        labels = labels_for(instance, o.labels)
        interface = compute_v1.NetworkInterface(
            network=o.network if "/" in o.network else f"projects/{project}/global/networks/{o.network}"
        )
        if o.subnetwork:
            region = o.zone.rsplit("-", 1)[0]
            subnetwork = o.subnetwork
            interface.subnetwork = subnetwork if "/" in subnetwork else f"regions/{region}/subnetworks/{subnetwork}"
        if o.address == "external":
            interface.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        body = compute_v1.Instance(
            name=machine.name,
            machine_type=f"zones/{o.zone}/machineTypes/{o.machine_type.rsplit('/', 1)[-1]}",
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    type_="PERSISTENT",
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=source, disk_size_gb=o.disk_size_gb, labels=labels
                    ),
                )
            ],
            network_interfaces=[interface],
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key="ssh-keys", value=f"{o.user}:{self.run.public_key}"),
                    compute_v1.Items(key="block-project-ssh-keys", value="true"),
                    compute_v1.Items(key="user-data", value=user_data),
                ]
            ),
            tags=compute_v1.Tags(items=[tag]),
            labels=labels,
            scheduling=compute_v1.Scheduling(automatic_restart=False, on_host_maintenance="TERMINATE"),
            display_device=compute_v1.DisplayDevice(enable_display=o.display),
        )
        api = _import("google.api_core.exceptions")
        with signals_deferred():  # the operation's name must reach the ledger: see _find
            try:
                instances = self.compute("InstancesClient")
                operation = instances.insert_unary(project=project, zone=o.zone, instance_resource=body)
            except api.Conflict:
                self.drop(machine, instance)
                raise ProviderError(
                    f"{machine.name}: an instance of that name already exists in {o.zone}; left alone"
                ) from None
            except api.GoogleAPICallError as e:
                raise ProviderError(f"insert instance {machine.name}: {e.code} {reason(e)}: {e.message}") from None
            self.created(instance, operation=operation.name)
        machine.project = project
        wait_operation(f"create instance {machine.name}", operation, project, o.zone, o.endpoint, self.deadline())
        log.info("%s: launched in %s/%s (%s, %s)", machine.name, project, o.zone, o.machine_type, source)

    # -- teardown

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        handler = _DESTROY.get(resource.kind)
        if handler is None:
            raise ProviderError(f"gce cannot destroy unknown resource kind {resource.kind!r}")
        handler(resource)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """The screen of the recorded instance (project, zone and endpoint from the ledger)."""
        d = resource.data
        if resource.kind != "instance" or not d.get("project") or not d.get("zone"):
            raise ScreenUnavailable(f"{resource.name}: a gce {resource.kind} has no screen (its instance has)")
        instances = client("InstancesClient", d.get("endpoint"))
        name = d.get("gce_name") or resource.name
        return instance_screenshot(instances, d["project"], d["zone"], name, path)

    @classmethod
    def leftovers(cls, target: Any, recorded: set[str]) -> list[Resource]:
        """Resources labelled by cernvm-fixtures in the target's project and zone whose machine no ledger names."""
        options: GceOptions = target.options
        project = options.project or credentials()[1]
        if not project:
            raise ConfigError(f"{target.where('project')}: not set, and the credentials name no project")
        data = {
            "project": project,
            "zone": options.zone,
            "endpoint": options.endpoint,
            "storage_endpoint": options.storage_endpoint,
        }
        compute_v1 = _import("google.cloud.compute_v1")
        ledger_filter = "labels.cvmfx-run:*"
        found: list[tuple[dict[str, str], str]] = []
        instances = client("InstancesClient", options.endpoint)
        request = compute_v1.ListInstancesRequest(project=project, zone=options.zone, filter=ledger_filter)
        for item in call("list instances", lambda: list(instances.list(request=request))) or []:
            found.append((dict(item.labels), item.name))
        images = client("ImagesClient", options.endpoint)
        request = compute_v1.ListImagesRequest(project=project, filter=ledger_filter)
        for item in call("list images", lambda: list(images.list(request=request))) or []:
            found.append((dict(item.labels), item.name))
        firewalls = client("FirewallsClient", options.endpoint)
        for item in call("list firewalls", lambda: list(firewalls.list(project=project))) or []:
            labels = labels_in_description(item.description)
            if labels:
                found.append((labels, item.name))
        if options.bucket:
            storage = client("storage", options.storage_endpoint)
            blobs = call("list objects", lambda: list(storage.list_blobs(options.bucket, prefix=OBJECT_PREFIX)))
            for blob in blobs or []:
                found.append((dict(blob.metadata or {}), blob.name))
        resources = []
        for labels, name in found:
            extra = {"bucket": options.bucket} if labels.get("cvmfx-kind") == "object" else {}
            resource = resource_from_labels(labels, {**data, **extra, "gce_name": name})
            if resource is not None and resource.name not in recorded:
                resources.append(resource)
        return sorted(resources, key=lambda r: (RANK[r.kind], r.created), reverse=True)


# --- teardown, one function per kind -------------------------------------------------------------


def _find(resource: Resource, zone: str | None, lookup: Callable[[], T | None]) -> T | None:
    """What ``lookup`` finds of the resource; if nothing, after the insert operation the ledger entry recorded has
    finished: until it has, GCE shows no resource, and a teardown that found nothing would forget what appears a
    moment later (a run interrupted right after the insert)."""
    found = lookup()
    d = resource.data
    name = d.get("operation")
    if found is not None or not name:
        return found
    kind = "ZoneOperationsClient" if zone else "GlobalOperationsClient"
    operations = client(kind, d.get("endpoint"))
    where = {"project": d["project"], "operation": name, **({"zone": zone} if zone else {})}

    def finished() -> bool | None:
        found = call(f"{resource.name}: wait for {name}", operations.wait, missing_ok=True, **where)
        return True if found is None or found.status.name == "DONE" else None

    wait_until(f"{resource.name}: its create operation {name}", finished, time.monotonic() + DESTROY_TIMEOUT, 0.0)
    return lookup()


def instance_screenshot(instances: Any, project: str, zone: str, name: str, path: Path) -> Path:
    """instances.getScreenshot (a PNG in base64; only of an instance with a display device), written to ``path``."""
    import base64

    try:
        found = call(f"screenshot of {name}", instances.get_screenshot, project=project, zone=zone, instance=name)
    except ProviderError as e:
        raise ScreenUnavailable(f"{name}: GCE gave no screenshot: {e}") from None
    try:
        image = base64.b64decode(found.contents, validate=True)
    except ValueError:
        raise ScreenUnavailable(f"{name}: GCE's screenshot is not base64") from None
    return write_png(image, path, f"{name}: GCE's screenshot")


def _destroy_instance(resource: Resource) -> None:
    d = resource.data
    instances = client("InstancesClient", d.get("endpoint"))
    name = d.get("gce_name") or resource.name

    found = _find(
        resource,
        d.get("zone"),
        lambda: call(
            f"get instance {name}", instances.get, missing_ok=True, project=d["project"], zone=d["zone"], instance=name
        ),
    )
    if found is None:
        return
    if not ours(dict(found.labels), resource):
        log.warning("%s: instance %s does not carry this run's labels; left alone", resource.name, name)
        return
    operation = call(
        f"delete instance {name}",
        instances.delete_unary,
        missing_ok=True,
        project=d["project"],
        zone=d["zone"],
        instance=name,
    )
    if operation is not None:
        wait_operation(
            f"delete instance {name}",
            operation,
            d["project"],
            d["zone"],
            d.get("endpoint"),
            time.monotonic() + DESTROY_TIMEOUT,
        )


def _destroy_firewall(resource: Resource) -> None:
    d = resource.data
    firewalls = client("FirewallsClient", d.get("endpoint"))
    name = d.get("gce_name") or f"{resource.name}-ssh"

    found = _find(
        resource,
        None,
        lambda: call(f"get firewall {name}", firewalls.get, missing_ok=True, project=d["project"], firewall=name),
    )
    if found is None:
        return
    if not ours(labels_in_description(found.description), resource):
        log.warning("%s: firewall rule %s does not carry this run's labels; left alone", resource.name, name)
        return
    operation = call(
        f"delete firewall {name}", firewalls.delete_unary, missing_ok=True, project=d["project"], firewall=name
    )
    if operation is not None:
        wait_operation(
            f"delete firewall {name}",
            operation,
            d["project"],
            None,
            d.get("endpoint"),
            time.monotonic() + DESTROY_TIMEOUT,
        )


def _destroy_image(resource: Resource) -> None:
    d = resource.data
    images = client("ImagesClient", d.get("endpoint"))
    name = d["gce_name"]

    found = _find(
        resource, None, lambda: call(f"get image {name}", images.get, missing_ok=True, project=d["project"], image=name)
    )
    if found is None:
        return
    if not ours(dict(found.labels), resource):
        log.warning("%s: image %s does not carry this run's labels; left alone", resource.name, name)
        return
    api = _import("google.api_core.exceptions")

    def delete() -> Any:
        try:
            return images.delete_unary(project=d["project"], image=name)
        except api.NotFound:
            return False
        except api.Conflict as e:
            if reason(e) == "resourceInUseByAnotherResource":
                log.debug("image %s still in use: %s", name, e.message)
                return None
            raise ProviderError(f"delete image {name}: {e.code} {reason(e)}: {e.message}") from None
        except api.GoogleAPICallError as e:
            raise ProviderError(f"delete image {name}: {e.code} {reason(e)}: {e.message}") from None

    operation = wait_until(f"delete image {name} (still in use)", delete, time.monotonic() + BUSY_TIMEOUT, 2.0)
    if operation is not False:
        wait_operation(
            f"delete image {name}", operation, d["project"], None, d.get("endpoint"), time.monotonic() + DESTROY_TIMEOUT
        )


def _destroy_object(resource: Resource) -> None:
    d = resource.data
    bucket, key = d.get("bucket"), d.get("gce_name")
    if not bucket or not key:
        return
    blob = client("storage", d.get("storage_endpoint")).bucket(bucket).get_blob(key)
    if blob is None:
        return
    if not ours(dict(blob.metadata or {}), resource):
        log.warning("%s: gs://%s/%s does not carry this run's labels; left alone", resource.name, bucket, key)
        return
    call(f"delete gs://{bucket}/{key}", blob.delete, missing_ok=True)


_DESTROY: dict[str, Callable[[Resource], None]] = {
    "instance": _destroy_instance,
    "firewall": _destroy_firewall,
    "image": _destroy_image,
    "object": _destroy_object,
}


# --- the machine ----------------------------------------------------------------------------------


class GceMachine(RemoteMachine):
    """One GCE instance plus what was created for it."""

    def __init__(self, provider: GceProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: GceProvider = provider
        self.options: GceOptions = provider.options
        self.project: str | None = None
        self.instance_id: str | None = None
        """The instance's name once created (kept under EC2's attribute name, which the login command reads)."""
        self.slowdown = self.options.slowdown
        self.traits.update(
            kind="vm", machine_type=self.options.machine_type, zone=self.options.zone, address=self.options.address
        )
        self._described: Any = None
        self._console = ""
        self._console_next = 0
        self._console_lock = threading.Lock()

    def _instances(self) -> Any:
        return self.provider.compute("InstancesClient")

    def describe(self) -> Any:
        """The instance as GCE describes it now (None if it does not exist)."""
        if self.project is None:
            raise ProviderError(f"{self.name}: no instance was created")
        found = call(
            f"get instance {self.name}",
            self._instances().get,
            missing_ok=True,
            project=self.project,
            zone=self.options.zone,
            instance=self.name,
        )
        if found is not None:
            self._described = found
            self.instance_id = self.name
        return found

    def wait_running(self, deadline: float) -> None:
        seen = ["unknown"]

        def running() -> bool | None:
            instance = self.describe()
            if instance is None:
                return None
            seen[0] = instance.status
            if instance.status == "RUNNING":
                return True
            if instance.status in STOPPED:
                message = f": {instance.status_message}" if instance.status_message else ""
                raise PermanentError(f"{self.name} is {instance.status}{message}")
            return None

        try:
            wait_until(f"{self.name} running", running, deadline, self.options.poll_interval)
        except PermanentError:
            raise
        except ProviderError:
            raise ProviderError(f"{self.name} still {seen[0]}") from None

    def platform_address(self) -> str:
        """The external NAT or internal address GCE gave the instance (``address`` option)."""
        instance = self._described or self.describe()
        interfaces = list(instance.network_interfaces) if instance is not None else []
        if self.options.address == "external":
            value = next((c.nat_i_p for n in interfaces for c in n.access_configs if c.nat_i_p), "")
        else:
            value = next((n.network_i_p for n in interfaces if n.network_i_p), "")
        if not value:
            raise ProviderError(f"{self.name}: has no {self.options.address} address")
        return value

    @property
    def exists(self) -> bool:
        return self.instance_id is not None

    def console_log(self) -> str:
        """Serial port 1 so far, read on from the last ``next`` offset (nothing read twice, gaps marked)."""
        if self.project is None:
            return self._console
        with self._console_lock:
            try:
                request = _import("google.cloud.compute_v1").GetSerialPortOutputInstanceRequest(
                    project=self.project, zone=self.options.zone, instance=self.name, port=1, start=self._console_next
                )
                found = self._instances().get_serial_port_output(request=request)
            except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
                log.debug("%s: no serial output: %s", self.name, e)
                return self._console
            if found.start > self._console_next:
                self._console += (
                    f"\n[cernvm-fixtures: {found.start - self._console_next} bytes of serial output "
                    "were discarded by GCE before they could be read]\n"
                )
            self._console += console_text(found.contents)
            self._console_next = max(self._console_next, found.next_)
            return self._console

    def screenshot(self, path: Path) -> Path:
        if self.project is None:
            raise ScreenUnavailable(f"{self.name}: no instance was created")
        if not self.options.display:
            raise ScreenUnavailable(f"{self.name}: the instance has no display device (the target's display = false)")
        return instance_screenshot(self._instances(), self.project, self.options.zone, self.name, path)

    def keep(self) -> None:
        """Mark kept in the ledger and on the instance's labels (a label sweep then leaves it alone)."""
        super().keep()
        project = self.project
        instance = self.describe() if project else None
        if project is None or instance is None:
            return
        labels = dict(instance.labels)
        labels["cvmfx-kept"] = "true"
        labels["cvmfx-expires"] = str(int(max(r.expires for r in self.resources)))
        compute_v1 = _import("google.cloud.compute_v1")
        request = compute_v1.InstancesSetLabelsRequest(labels=labels, label_fingerprint=instance.label_fingerprint)
        try:
            operation = call(
                f"label {self.name} kept",
                self._instances().set_labels_unary,
                project=self.project,
                zone=self.options.zone,
                instance=self.name,
                instances_set_labels_request_resource=request,
            )
            wait_operation(
                f"label {self.name} kept",
                operation,
                project,
                self.options.zone,
                self.options.endpoint,
                self.provider.deadline(),
            )
        except ProviderError as e:
            log.warning("%s: could not label as kept: %s", self.name, e)

    def destroy(self) -> None:
        """Destroy in dependency order (instance, firewall rule, image, object), whatever the recording order."""
        self.resources.sort(key=lambda r: (RANK.get(r.kind, len(RANK)), r.created))
        super().destroy()


__all__ = ["GceMachine", "GceOptions", "GceProvider"]
