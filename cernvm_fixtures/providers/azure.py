"""Microsoft Azure through the Azure SDK: the CernVM "How to run on Azure" recipe done with ARM, leak-proof.

What a launch creates, each recorded in the ledger (with its full, deterministic ARM id) *before* its
create call and tagged at creation with run id, machine, kind, owner, creation time and expiry:

* unless ``resource_group`` names an existing group: a resource group for the machine, deleted at the end;
* if ``image`` is a local ``.vhd`` (a fixed-size VHD, checked first): a managed image made from a page blob
  in ``storage_account``/``container``, both found by the VHD's SHA-256 (the image's tag, the blob's name),
  so a launch reuses what any run made of the same content; the run deletes at the end only what it made.
  Empty 512-byte pages are not sent; an upload continues after errors, and one whose uploader is gone
  (killed) is taken over and continued where it stopped;
* unless ``subnet_id`` is given: a virtual network with one subnet;
* a network security group whose only inbound rule admits tcp/22 from ``ssh_cidr``;
* a public IP address (``address = "public"``) and a network interface;
* the VM: custom data = the context (base64), the admin user with the run's SSH public key, password
  authentication disabled (the old CLI's throw-away password is not needed with ARM), boot diagnostics on
  (managed storage) so the serial log is readable, OS disk deleted with the VM.

Teardown goes in dependency order (VM, OS disk, NIC, public IP, NSG, VNet, image, blob, group), waits
for each long-running operation, treats "not found" as done and retries while Azure still reports a
resource in use. ``leftovers`` finds our resources by their tags alone (uploaded VHDs by the same entries in
their blob metadata), for ``sweep``.

Credentials come only from azure-identity's DefaultAzureCredential chain (environment, workload
identity, managed identity, Azure CLI, ...); nothing secret is logged, recorded or written.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from .. import netcheck
from ..errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from ..images import Accepts, local_file
from ..ledger import DEFAULT_LIFETIME, Owner, Resource
from ..screen import write_png
from .base import Machine, Provider, RemoteMachine, RemoteOptions, console_text

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

VHD = Accepts(
    ".vhd",
    "an image id (/subscriptions/.../images/...) or uploads a fixed-size VHD "
    "(ucernvm-<branch>.<V>-<R>.cernvm.x86_64.vhd)",
    convertible=(".hdd", ".raw", ".img", ".qcow2", ".vmdk", ".vdi"),
)

TAG_PREFIX = "cernvm-fixtures:"
RUN_TAG, MACHINE_TAG, TARGET_TAG, KIND_TAG = (TAG_PREFIX + k for k in ("run", "machine", "target", "kind"))
OWNER_TAG, CREATED_TAG, EXPIRES_TAG, KEPT_TAG = (TAG_PREFIX + k for k in ("owner", "created", "expires", "kept"))
OWNER_MACHINE_TAG = TAG_PREFIX + "owner-machine"
DIGEST_TAG = TAG_PREFIX + "sha256"
"""On an image made from a VHD: the VHD's SHA-256, so any later launch of the same content reuses the image."""
OUR_TAGS = 10
"""Tags cernvm-fixtures sets on a resource (at most); Azure allows 50."""
OUR_TAG_NAMES = (
    RUN_TAG,
    MACHINE_TAG,
    TARGET_TAG,
    KIND_TAG,
    OWNER_TAG,
    CREATED_TAG,
    EXPIRES_TAG,
    KEPT_TAG,
    OWNER_MACHINE_TAG,
)


def metadata_name(tag: str) -> str:
    """A tag's name as a blob metadata name (those must be identifiers: ``cernvm-fixtures:run`` ->
    ``cernvm_fixtures_run``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", tag)


BLOB_RUN, BLOB_MACHINE, BLOB_OWNER, BLOB_OWNER_MACHINE = map(
    metadata_name, (RUN_TAG, MACHINE_TAG, OWNER_TAG, OWNER_MACHINE_TAG)
)
BLOB_DIGEST, BLOB_COMPLETE = "sha256", "cernvm_fixtures_complete"
"""Blob metadata: the ledger entry as on a tagged resource, the content, and whether every page is written."""
BLOB_PREFIX = "cernvm-fixtures/"
"""Uploaded VHDs are named by content: ``cernvm-fixtures/<sha256>.vhd`` in the container."""
UPLOAD_ATTEMPTS = 5
"""Times an upload continues after an error the SDK's own retries did not cure."""

CREATION_ORDER: tuple[str, ...] = (
    "resource-group",
    "blob",
    "image",
    "virtual-network",
    "security-group",
    "public-ip",
    "network-interface",
    "disk",
    "vm",
)
"""Resource kinds in the order they depend on each other; teardown goes the other way."""
RANK = {kind: i for i, kind in enumerate(CREATION_ORDER)}
ARM_TYPE = {
    "vm": "Microsoft.Compute/virtualMachines",
    "disk": "Microsoft.Compute/disks",
    "image": "Microsoft.Compute/images",
    "network-interface": "Microsoft.Network/networkInterfaces",
    "public-ip": "Microsoft.Network/publicIPAddresses",
    "security-group": "Microsoft.Network/networkSecurityGroups",
    "virtual-network": "Microsoft.Network/virtualNetworks",
}
KIND_OF_TYPE = {v.lower(): k for k, v in ARM_TYPE.items()}
SUFFIX = {
    "resource-group": "rg",
    "image": "image",
    "virtual-network": "vnet",
    "security-group": "nsg",
    "public-ip": "ip",
    "network-interface": "nic",
    "disk": "osdisk",
    "vm": "",
}
BUSY_CODES = {
    "InUseNetworkSecurityGroupCannotBeDeleted",
    "InUseSubnetCannotBeDeleted",
    "NicInUse",
    "PublicIPAddressCannotBeDeleted",
    "OperationNotAllowed",
    "AnotherOperationInProgress",
    "RetryableError",
    "InUseNicCannotBeDeleted",
}
RESERVED_USERS = {
    "administrator",
    "admin",
    "user",
    "user1",
    "test",
    "user2",
    "test1",
    "user3",
    "admin1",
    "1",
    "123",
    "a",
    "actuser",
    "adm",
    "admin2",
    "aspnet",
    "backup",
    "console",
    "david",
    "guest",
    "john",
    "owner",
    "root",
    "server",
    "sql",
    "support",
    "support_388945a0",
    "sys",
    "test2",
    "test3",
    "user4",
    "user5",
}
"""Admin user names Azure refuses for Linux VMs."""
CUSTOM_DATA_LIMIT = 64 * 1024
"""Bytes of custom data Azure accepts (before base64)."""
VHD_FOOTER = 512
PAGE = 512
CHUNK = 4 * 1024 * 1024
"""Largest page range one Put Page call may write."""
BUSY_TIMEOUT = 600.0
"""How long teardown retries a delete Azure refuses because something still uses the resource."""
IMAGE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(images|galleries/[^/]+/images/[^/]+(/versions/[^/]+)?)(/[^/]+)?$",
    re.I,
)


# --- the SDK, lazily ------------------------------------------------------------------------------


def _sdk() -> None:
    try:
        import azure.identity  # noqa: F401
        import azure.mgmt.compute  # noqa: F401
        import azure.mgmt.network  # noqa: F401
        import azure.mgmt.resource.resources  # noqa: F401
    except ImportError:
        raise ConfigError("the azure provider needs the Azure SDK: pip install 'cernvm-fixtures[azure]'") from None


_credentials: dict[bool, Any] = {}
_lock = threading.Lock()


def credential(instance_discovery: bool = True) -> Any:
    """One DefaultAzureCredential for the process (it caches tokens); the only source of credentials."""
    with _lock:
        found = _credentials.get(instance_discovery)
        if found is None:
            _sdk()
            from azure.identity import DefaultAzureCredential

            found = DefaultAzureCredential(disable_instance_discovery=not instance_discovery)
            _credentials[instance_discovery] = found
        return found


def reset_clients() -> None:
    """Forget cached credentials and clients (e.g. after the environment changed)."""
    with _lock:
        _credentials.clear()
    _client.cache_clear()


@functools.lru_cache(maxsize=32)
def _client(kind: str, subscription: str, endpoint: str | None, instance_discovery: bool, poll: float) -> Any:
    _sdk()
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient

    cls = {
        "compute": ComputeManagementClient,
        "network": NetworkManagementClient,
        "resource": ResourceManagementClient,
    }[kind]
    extra: dict[str, Any] = {"polling_interval": poll}
    if endpoint:
        extra.update(base_url=endpoint, credential_scopes=["https://management.azure.com/.default"])
    return cls(credential(instance_discovery), subscription, **extra)


def client(kind: str, data: dict[str, Any]) -> Any:
    """A management client for a ledger entry's (or the options') subscription and endpoint."""
    return _client(
        kind,
        data["subscription"],
        data.get("endpoint"),
        data.get("instance_discovery", True),
        float(data.get("poll_interval", 5.0)),
    )


def error_code(error: Exception) -> str:
    code = getattr(getattr(error, "error", None), "code", None)
    return str(code or getattr(error, "status_code", "") or "")


def call(what: str, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
    """Call the SDK; its errors become ProviderError naming ``what`` (never secrets). ``missing_ok``: 404 -> None."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

    try:
        return fn(*args, **kwargs)
    except ResourceNotFoundError:
        if missing_ok:
            return None
        raise ProviderError(f"{what}: not found") from None
    except HttpResponseError as e:
        message = getattr(getattr(e, "error", None), "message", None) or e.message or str(e)
        raise ProviderError(f"{what}: {error_code(e)}: {message}") from None
    except AzureError as e:
        raise ProviderError(f"{what}: {e}") from None


def delete_until_free(what: str, begin: Any, *args: Any) -> None:
    """Start a delete and wait for it; "not found" is done, "in use" is retried until BUSY_TIMEOUT."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            begin(*args).result()
            return
        except ResourceNotFoundError:
            return
        except HttpResponseError as e:
            code = error_code(e)
            if code in ("ResourceGroupNotFound", "ResourceNotFound", "NotFound"):
                return
            if code in BUSY_CODES and time.monotonic() < deadline:
                log.debug("%s: still in use (%s), retrying", what, code)
                time.sleep(2.0)
                continue
            raise ProviderError(f"{what}: {code}: {getattr(e.error, 'message', None) or e.message}") from None


# --- options --------------------------------------------------------------------------------------


class AzureOptions(RemoteOptions):
    """Target keys of the ``azure`` provider. The generic ``image`` key is an image id or a local ``.vhd``."""

    subscription: str | None = None
    """Subscription id; default: AZURE_SUBSCRIPTION_ID from the environment."""
    location: str = "westeurope"
    resource_group: str | None = None
    """An existing resource group (only our own resources in it are deleted); default: one per machine, deleted."""
    vm_size: str = "Standard_D2s_v3"
    """A trait of the instance (profiles may vary by it); eth0 is the synthetic hv_netvsc NIC on every size."""
    storage_account: str | None = None
    """Storage account a local ``.vhd`` image is uploaded to (needed when ``image`` is a file)."""
    container: str = "cernvm-images"
    blob_endpoint: str | None = None
    """The blob service URL; default ``https://<storage_account>.blob.core.windows.net`` (tests: an emulator)."""
    endpoint: str | None = None
    """Another Azure Resource Manager endpoint (a sovereign cloud, or a local fake in tests)."""
    instance_discovery: bool = True
    """Microsoft Entra instance discovery; false for an authority it does not know (Azure Stack, a test endpoint)."""
    subnet_id: str | None = None
    """An existing subnet to attach the NIC to; default: a virtual network with one subnet per machine."""
    vnet_cidr: str = "10.77.0.0/16"
    ssh_cidr: str
    """The runner's own public address (``203.0.113.7/32``): the NSG admits tcp/22 from it alone."""
    address: Literal["public", "private"] = "public"
    admin_user: str = "cernvm"
    """The VM's admin account (Azure requires one; it gets the run's key, no password)."""
    tags: dict[str, str] = {}
    poll_interval: float = Field(5.0, gt=0)
    """Seconds between Azure polls of long-running operations."""
    slowdown: float = Field(5.0, ge=1.0)
    share_timeout: float = Field(3600.0, gt=0)
    """Seconds a launch waits for another machine's upload or image of the same VHD before giving up."""
    ssh_certificate: str | None = None
    """An X.509 certificate made from your SSH key, as CernVM's Azure recipe has it (``openssl req -x509 -new
    -key ~/.ssh/id_rsa -out cert.pem``): the admin user gets the certificate's public key, not the run's."""
    ssh_key: str | None = Field(None, validate_default=True)
    """The unencrypted private key ``ssh_certificate`` was made from; the harness logs in with it."""

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, value: str, info: ValidationInfo) -> str:
        return netcheck.ssh_cidr(value, bool(info.data.get("allow_wide_ssh")))

    @field_validator("admin_user")
    @classmethod
    def _admin(cls, value: str) -> str:
        if value.lower() in RESERVED_USERS or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
            raise ValueError(
                "a Linux user name of 1-32 lowercase letters, digits, _ and - that Azure does not "
                "reserve (root, admin, administrator, ... are refused)"
            )
        return value

    @field_validator("endpoint", "blob_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https://[^\s/]+", value):
            raise ValueError("an https:// URL (Azure's clients send bearer tokens over HTTPS only)")
        return value.rstrip("/") if value else value

    @field_validator("ssh_certificate")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None:
            certificate_public_key(value)
        return value

    @field_validator("ssh_key")
    @classmethod
    def _certificate_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "ssh_certificate" not in info.data:
            return value  # the certificate itself was refused; that error says enough
        certificate = info.data["ssh_certificate"]
        if certificate is None and value is not None:
            raise ValueError("no ssh_key without ssh_certificate (the certificate made from this key)")
        if certificate is not None and value is None:
            raise ValueError("the private key ssh_certificate was made from (the harness logs in with it)")
        if certificate is not None and value is not None:
            certificate_public_key(certificate, value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        if len(value) > 50 - OUR_TAGS:
            problems.append(
                f"{len(value)} tags, at most {50 - OUR_TAGS} (Azure allows 50, cernvm-fixtures sets up to {OUR_TAGS})"
            )
        for key, text in value.items():
            if not 1 <= len(key) <= 512 or re.search(r"[<>%&\\?/]", key):
                problems.append(f"name {key!r}: 1-512 characters without < > % & \\ ? /")
            if len(text) > 256:
                problems.append(f"value of {key!r} is {len(text)} characters, Azure allows 256")
            if key.startswith(TAG_PREFIX) or key.lower().startswith(("azure", "microsoft", "windows")):
                problems.append(f"name {key!r} is reserved (by Azure or cernvm-fixtures)")
        if problems:
            raise ValueError("valid Azure tags: " + "; ".join(problems))
        return value


def certificate_public_key(certificate: str, key: str | None = None) -> str:
    """The OpenSSH public key an X.509 certificate holds (RSA of 2048 bits or more, or Ed25519: what Azure
    takes), checked against ``key``, the private key it was made from, which the SSH transport must read.
    Problems are ValueErrors saying what was expected."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    cert_path = Path(certificate).expanduser()
    try:
        raw = cert_path.read_bytes()
    except OSError as e:
        raise ValueError(f"a readable certificate file ({cert_path}: {e.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw)
    except ValueError:
        raise ValueError(
            f"an X.509 certificate (PEM or DER) made from your SSH key, e.g. with openssl req -x509 -new "
            f"-key ~/.ssh/id_rsa -out cert.pem ({cert_path} is none)"
        ) from None
    public = cert.public_key()
    held = f"{public.key_size}-bit RSA" if isinstance(public, rsa.RSAPublicKey) else type(public).__name__
    if not (isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048) and not isinstance(
        public, ed25519.Ed25519PublicKey
    ):
        raise ValueError(f"a certificate of an RSA key of 2048 bits or more or of an Ed25519 key ({held} key)")
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    if key is not None:
        _check_private_key(Path(key).expanduser(), line, cert_path)
    return line


def _check_private_key(key_path: Path, public_line: str, cert_path: Path) -> None:
    import paramiko

    try:
        private = paramiko.PKey.from_path(key_path)
    except OSError as e:
        raise ValueError(f"a readable private key file ({key_path}: {e.strerror})") from None
    except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "no password given"
        raise ValueError(f"an unencrypted private key ({key_path} is encrypted; it is only read)") from None
    except (paramiko.SSHException, ValueError):
        raise ValueError(
            f"a private key in OpenSSH or PEM format ({key_path} is not; ssh-keygen -p -f KEY rewrites it)"
        ) from None
    if public_line.split()[1] != private.get_base64():
        raise ValueError(f"the private key {cert_path} was made from (their public keys differ)")


# --- tags and ids ---------------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_text(owner: Owner) -> str:
    return f"{owner.host}/{owner.pid}/{owner.start or '-'}"


def parse_owner(text: str, machine: str | None) -> Owner:
    """The owner written by :func:`owner_text` (a tag or blob metadata value)."""
    host, _, rest = text.partition("/")
    pid, _, start = rest.partition("/")
    return Owner(host or "unknown", int(pid) if pid.isdigit() else 0, None if start in ("", "-") else start, machine)


def tag_dict(resource: Resource, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of one resource: user tags, then cernvm-fixtures' own (which always win)."""
    owner = resource.owner
    tags = dict(extra or {})
    tags.update(
        {
            RUN_TAG: resource.run,
            MACHINE_TAG: resource.name,
            TARGET_TAG: resource.target,
            KIND_TAG: resource.kind,
            OWNER_TAG: owner_text(owner),
            CREATED_TAG: f"{resource.created:.6f}",
            EXPIRES_TAG: iso(resource.expires),
        }
    )
    if owner.machine:
        tags[OWNER_MACHINE_TAG] = owner.machine
    if resource.kept:
        tags[KEPT_TAG] = "true"
    return tags


def resource_from_tags(kind: str, tags: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's tags alone (None if it is not ours)."""
    machine, run = tags.get(MACHINE_TAG), tags.get(RUN_TAG)
    if not machine or not run:
        return None
    owner = parse_owner(tags.get(OWNER_TAG, ""), tags.get(OWNER_MACHINE_TAG))
    try:
        created = float(tags.get(CREATED_TAG, ""))
    except ValueError:
        created = 0.0
    try:
        expires = datetime.strptime(tags.get(EXPIRES_TAG, ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        expires = created + DEFAULT_LIFETIME if created else 1.0
    created -= (len(CREATION_ORDER) - RANK.get(kind, 0)) * 1e-4
    return Resource(
        provider="azure",
        kind=kind,
        name=machine,
        run=run,
        target=tags.get(TARGET_TAG, ""),
        data=data,
        owner=owner,
        created=created,
        expires=expires,
        kept=tags.get(KEPT_TAG) == "true",
    )


def teardown_order(resources: list[Resource]) -> list[Resource]:
    """The order to destroy resources in: the reverse of their dependencies, newest first."""
    return sorted(resources, key=lambda r: (RANK.get(r.kind, len(RANK)), r.created), reverse=True)


def split_id(resource_id: str) -> tuple[str, str]:
    """(resource group, name) of an ARM resource id."""
    parts = resource_id.strip("/").split("/")
    return parts[3], parts[-1]


# --- VHD ------------------------------------------------------------------------------------------


def check_vhd(path: Path, where: str) -> int:
    """The size of a fixed-size VHD Azure accepts (footer ``conectix``, whole MiB of data); else a clear error."""
    size = path.stat().st_size
    if size < VHD_FOOTER + 1024 * 1024:
        raise ConfigError(f"{where}: {path} is {size} bytes: too small for a VHD (at least 1 MiB and a footer)")
    with open(path, "rb") as f:
        f.seek(size - VHD_FOOTER)
        footer = f.read(VHD_FOOTER)
    if footer[:8] != b"conectix":
        raise ConfigError(
            f"{where}: {path} has no VHD footer ('conectix' in its last 512 bytes); convert it with "
            "qemu-img convert -f raw -O vpc -o subformat=fixed,force_size"
        )
    disk_type = int.from_bytes(footer[60:64], "big")
    if disk_type != 2:
        raise ConfigError(
            f"{where}: {path} is a {'dynamic' if disk_type == 3 else f'type {disk_type}'} VHD; Azure "
            "takes fixed-size VHDs only (qemu-img convert -O vpc -o subformat=fixed,force_size)"
        )
    virtual = int.from_bytes(footer[48:56], "big")
    if virtual != size - VHD_FOOTER or virtual % (1024 * 1024):
        raise ConfigError(
            f"{where}: {path}: virtual size {virtual} bytes is not a whole number of MiB matching the "
            f"file ({size - VHD_FOOTER} bytes of data); Azure requires that (qemu-img resize, then "
            "convert with force_size)"
        )
    return size


def written_ranges(blob_client: Any) -> list[tuple[int, int]]:
    """The (first, last) byte ranges a page blob holds data in, as the service reports them."""
    ranges = call(f"list page ranges of {blob_client.blob_name}", lambda: list(blob_client.list_page_ranges()))
    return sorted((r.start, r.end) for r in ranges if not r.cleared)


def covered(ranges: list[tuple[int, int]], offset: int, length: int) -> bool:
    """Whether bytes ``offset`` .. ``offset + length - 1`` all lie in one of ``ranges`` (merged by the service)."""
    return any(first <= offset and offset + length - 1 <= last for first, last in ranges)


def pages(path: Path) -> Any:
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


# --- the provider ---------------------------------------------------------------------------------


class AzureProvider(Provider[AzureOptions, "AzureMachine"]):
    """Launches CernVM on Microsoft Azure (or any endpoint speaking ARM)."""

    name = "azure"
    no_power_button = (
        "not implemented for Azure yet (a power-off without skip_shutdown could: Azure asks the guest to shut down "
        "before it stops the VM)"
    )
    Options = AzureOptions
    creation_order: ClassVar[tuple[str, ...]] = CREATION_ORDER

    @functools.cached_property
    def subscription(self) -> str:
        found = self.options.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not found:
            raise ConfigError(
                f"{self.target.where('subscription')}: not set, and AZURE_SUBSCRIPTION_ID is not in the environment"
            )
        return found

    @property
    def data(self) -> dict[str, Any]:
        """What every ledger entry carries to reach Azure again without the config."""
        o = self.options
        return {
            "subscription": self.subscription,
            "endpoint": o.endpoint,
            "instance_discovery": o.instance_discovery,
            "poll_interval": o.poll_interval,
        }

    def client(self, kind: str) -> Any:
        return client(kind, self.data)

    def group_name(self, machine: Machine) -> str:
        return self.options.resource_group or f"{machine.name}-rg"

    def arm_id(self, machine: Machine, kind: str) -> str:
        name = machine.name + (f"-{SUFFIX[kind]}" if SUFFIX[kind] else "")
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.group_name(machine)}/providers/"
            f"{ARM_TYPE[kind]}/{name}"
        )

    def machine(self, name: str) -> AzureMachine:
        return AzureMachine(self, name)

    @functools.cached_property
    def public_key(self) -> str:
        """The admin user's SSH key: the certificate's (``ssh_certificate``), else the run's own."""
        o = self.options
        if o.ssh_certificate is None:
            return self.run.public_key
        try:
            return certificate_public_key(o.ssh_certificate, o.ssh_key)
        except ValueError as e:  # the files changed since the config was loaded
            raise ConfigError(f"{self.target.where('ssh_certificate')}: expected {e}") from None

    def _record(self, machine: Machine, kind: str, **data: Any) -> Resource:
        return self.record(machine, kind, machine.name, **self.data, **data)

    def created(self, resource: Resource, **data: Any) -> None:
        resource.data.update(data)
        self.run.ledger.update(resource)

    def tags(self, resource: Resource) -> dict[str, str]:
        return tag_dict(resource, self.options.tags)

    # -- configuration checks, all before anything is created

    def check_credentials(self) -> None:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            credential(self.options.instance_discovery).get_token("https://management.azure.com/.default")
        except ClientAuthenticationError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ProviderError(
                f"{self.target.where()}: azure-identity's DefaultAzureCredential found no usable credentials "
                f"({first}); log in with 'az login' or set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET; "
                "cernvm-fixtures never reads them from its own config"
            ) from None

    def check_size(self) -> None:
        skus = call(
            "list VM sizes",
            lambda: list(self.client("compute").resource_skus.list(filter=f"location eq '{self.options.location}'")),
        )
        names = {s.name for s in skus if s.resource_type == "virtualMachines" and not s.restrictions}
        if names and self.options.vm_size not in names:
            raise ConfigError(
                f"{self.target.where('vm_size')}: {self.options.vm_size!r} is not offered in "
                f"{self.options.location} (available: {', '.join(sorted(names))})"
            )

    def image_source(self) -> tuple[str, str | Path]:
        image = self.target.image
        if IMAGE_ID.match(image):
            return "id", image
        if image.lower().startswith("/subscriptions/"):
            raise ConfigError(f"{self.target.where('image')}: {image!r} is not a managed image or gallery image id")
        path = local_file(self.target, VHD)
        check_vhd(path, self.target.where("image"))
        if not self.options.storage_account and not self.options.blob_endpoint:
            raise ConfigError(f"{self.target.where('storage_account')}: required to upload {path.name}")
        return "file", path

    # -- creation

    def launch(self, machine: AzureMachine, context: Context) -> None:
        o = self.options
        source, image = self.image_source()
        admin_key = self.public_key  # a certificate is read and checked before anything exists
        custom_data = context.render()
        if len(custom_data) > CUSTOM_DATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: custom data is {len(custom_data)} bytes; Azure accepts {CUSTOM_DATA_LIMIT}"
            )
        self.check_credentials()
        self.check_size()
        resource_client = self.client("resource")
        group = self.group_name(machine)
        if o.resource_group:
            if not call("check resource group", resource_client.resource_groups.check_existence, group):
                raise ConfigError(f"{self.target.where('resource_group')}: resource group {group!r} does not exist")
        else:
            if call("check resource group", resource_client.resource_groups.check_existence, group):
                raise ProviderError(f"{machine.name}: resource group {group!r} exists already (a name collision)")
            rg = self._record(machine, "resource-group", group=group)
            call(
                f"create resource group {group}",
                resource_client.resource_groups.create_or_update,
                group,
                {"location": o.location, "tags": self.tags(rg)},
            )
            self.created(rg, id=f"/subscriptions/{self.subscription}/resourceGroups/{group}")
        image_id = str(image) if source == "id" else self._image_from_file(machine, Path(image))
        subnet_id = o.subnet_id or self._create_network(machine)
        nic_id = self._create_nic(machine, subnet_id)
        self._create_vm(machine, image_id, nic_id, custom_data, admin_key)

    def _begin(self, resource: Resource, what: str, begin: Any, *args: Any) -> Any:
        poller = call(what, begin, *args)
        self.created(resource, id=resource.data["id"])
        return poller

    def _image_from_file(self, machine: Machine, path: Path) -> str:
        """The managed image of ``path``'s content in ``location``: one that exists (made by any run) is reused;
        else one is made from the page blob of that content, uploaded first or its interrupted upload continued.
        What this machine makes it records and deletes at the end; what it reuses it leaves alone."""
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()  # streamed: a VHD is gigabytes
        o = self.options
        url = blob_account_url(o)
        blob_client = blob_service(url, o.instance_discovery).get_blob_client(o.container, f"{BLOB_PREFIX}{digest}.vhd")
        deadline = time.monotonic() + o.share_timeout
        while True:
            image_id, state = self._find_image(digest)
            if state == "Succeeded":
                log.info("%s: reusing image %s (same content as %s)", machine.name, image_id, path.name)
                return image_id
            if state is None:
                blob_url = self._blob(machine, blob_client, url, path, digest)
                if blob_url is not None:
                    return self._create_image(machine, blob_url, digest)
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"{machine.name}: {'image ' + image_id if state else 'the upload of blob ' + blob_client.blob_name}"
                    f" for {path.name} is still being made by another machine after {o.share_timeout:g} s "
                    f"({self.target.where('share_timeout')})"
                )
            time.sleep(o.poll_interval)

    def _find_image(self, digest: str) -> tuple[str, str | None]:
        """(id, provisioning state) of the best image in ``location`` tagged with this content digest, or ("", None):
        one that succeeded, else one still being made."""
        resources, images = self.client("resource").resources, self.client("compute").images
        ours = f"tagName eq '{DIGEST_TAG}' and tagValue eq '{digest}'"
        best: tuple[str, str | None] = ("", None)
        for item in call("list images by content", lambda: list(resources.list(filter=ours))):
            if (item.type or "").lower() != ARM_TYPE["image"].lower() or item.location != self.options.location:
                continue
            found = call(f"get image {item.name}", images.get, *split_id(item.id), missing_ok=True)
            state = getattr(found, "provisioning_state", None)
            if state == "Succeeded":
                return item.id, state
            if state in ("Creating", "Updating"):
                best = (item.id, state)
        return best

    def _blob(self, machine: Machine, blob_client: Any, account_url: str, path: Path, digest: str) -> str | None:
        """The URL of the complete page blob of ``path``, uploading it (or continuing an upload whose owner is
        gone) if needed; None while another live machine is uploading it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        size = path.stat().st_size
        url = blob_client.url.split("?")[0]
        try:
            props = blob_client.get_blob_properties()
        except ResourceNotFoundError:
            props = None
        except Exception as e:  # noqa: BLE001 - the SDK's own error, named
            raise ProviderError(f"read blob {blob_client.blob_name}: {e}") from None
        if props is not None:
            meta = props.metadata or {}
            if meta.get(BLOB_DIGEST) != digest or props.size != size or props.blob_type != "PageBlob":
                raise ProviderError(
                    f"{machine.name}: blob {blob_client.blob_name} exists but does not hold {path.name} "
                    f"(sha256 {meta.get(BLOB_DIGEST)}, {props.size} bytes); it was left alone"
                )
            if meta.get(BLOB_COMPLETE) == "true":
                log.info("%s: reusing blob %s (same content as %s)", machine.name, blob_client.blob_name, path.name)
                return url
            if parse_owner(meta.get(BLOB_OWNER, ""), meta.get(BLOB_OWNER_MACHINE)).alive():
                return None
        blob = self._record(
            machine, "blob", account_url=account_url, container=blob_client.container_name, blob=blob_client.blob_name
        )
        metadata = {**{metadata_name(k): v for k, v in tag_dict(blob).items()}, BLOB_DIGEST: digest}
        try:
            if props is None:
                blob_client.create_page_blob(size, metadata=metadata, match_condition=MatchConditions.IfMissing)
            else:  # take over an upload whose owner is gone; the condition makes one taker win
                blob_client.set_blob_metadata(metadata, etag=props.etag, match_condition=MatchConditions.IfNotModified)
                log.info("%s: continuing the interrupted upload of %s", machine.name, blob_client.blob_name)
        except (ResourceExistsError, ResourceModifiedError):
            self.run.ledger.forget(blob)  # another machine got there first: nothing of ours to destroy
            machine.resources.remove(blob)
            return None
        except Exception as e:  # noqa: BLE001 - the SDK's own error, named
            raise ProviderError(f"create page blob {blob_client.blob_name}: {e}") from None
        self.created(blob, url=url)
        sent = self._upload(machine, blob_client, path, resume=props is not None)
        call("mark the upload complete", blob_client.set_blob_metadata, {**metadata, BLOB_COMPLETE: "true"})
        log.info("%s: uploaded %s (%d bytes sent of %d)", machine.name, path.name, sent, size)
        self.created(blob, sent=sent)
        return url

    def _upload(self, machine: Machine, blob_client: Any, path: Path, resume: bool) -> int:
        """Send the non-empty pages of ``path`` the blob does not hold yet; after an error the SDK's own retries
        did not cure, read what the blob holds and continue from there (up to UPLOAD_ATTEMPTS times)."""
        from azure.core.exceptions import AzureError

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
            except AzureError as e:
                if attempt == UPLOAD_ATTEMPTS:
                    raise ProviderError(
                        f"upload {blob_client.blob_name} at byte {offset}: {e} (gave up after {attempt} attempts)"
                    ) from None
                log.warning("%s: upload of %s stopped at byte %d (%s); continuing", machine.name, path.name, offset, e)
                attempt += 1

    def _create_image(self, machine: Machine, blob_url: str, digest: str) -> str:
        from azure.mgmt.compute import models

        image = self._record(machine, "image", id=self.arm_id(machine, "image"))
        group, name = split_id(image.data["id"])
        body = models.Image(
            location=self.options.location,
            tags={**self.tags(image), DIGEST_TAG: digest},
            properties=models.ImageProperties(
                hyper_v_generation="V1",
                storage_profile=models.ImageStorageProfile(
                    os_disk=models.ImageOSDisk(
                        os_type="Linux", os_state="Generalized", blob_uri=blob_url, caching="ReadWrite"
                    )
                ),
            ),
        )
        poller = self._begin(
            image, f"create image {name}", self.client("compute").images.begin_create_or_update, group, name, body
        )
        call(f"create image {name}", poller.result)
        return image.data["id"]

    def _create_network(self, machine: Machine) -> str:
        from azure.mgmt.network import models

        o = self.options
        network = self.client("network")
        vnet = self._record(machine, "virtual-network", id=self.arm_id(machine, "virtual-network"))
        group, name = split_id(vnet.data["id"])
        prefix = max(24, int(o.vnet_cidr.split("/")[1]))
        subnet_cidr = str(next(ipaddress.IPv4Network(o.vnet_cidr).subnets(new_prefix=prefix)))
        subnet = models.Subnet(name="default", properties=models.SubnetPropertiesFormat(address_prefix=subnet_cidr))
        properties = models.VirtualNetworkPropertiesFormat(
            address_space=models.AddressSpace(address_prefixes=[o.vnet_cidr]), subnets=[subnet]
        )
        body = models.VirtualNetwork(location=o.location, tags=self.tags(vnet), properties=properties)
        poller = self._begin(
            vnet, f"create virtual network {name}", network.virtual_networks.begin_create_or_update, group, name, body
        )
        call(f"create virtual network {name}", poller.result)
        return f"{vnet.data['id']}/subnets/default"

    def _create_nic(self, machine: Machine, subnet_id: str) -> str:
        from azure.mgmt.network import models

        o = self.options
        network = self.client("network")
        nsg = self._record(machine, "security-group", id=self.arm_id(machine, "security-group"))
        group, name = split_id(nsg.data["id"])
        rule = models.SecurityRule(
            name="ssh-from-runner",
            properties=models.SecurityRulePropertiesFormat(
                description="cernvm-fixtures: SSH from the test runner",
                protocol="Tcp",
                source_port_range="*",
                destination_port_range="22",
                source_address_prefix=o.ssh_cidr,
                destination_address_prefix="*",
                access="Allow",
                priority=1000,
                direction="Inbound",
            ),
        )
        properties = models.NetworkSecurityGroupPropertiesFormat(security_rules=[rule])
        nsg_body = models.NetworkSecurityGroup(location=o.location, tags=self.tags(nsg), properties=properties)
        poller = self._begin(
            nsg,
            f"create network security group {name}",
            network.network_security_groups.begin_create_or_update,
            group,
            name,
            nsg_body,
        )
        call(f"create network security group {name}", poller.result)

        public = None
        if o.address == "public":
            ip = self._record(machine, "public-ip", id=self.arm_id(machine, "public-ip"))
            group, name = split_id(ip.data["id"])
            ip_body = models.PublicIPAddress(
                location=o.location,
                tags=self.tags(ip),
                sku=models.PublicIPAddressSku(name="Standard"),
                properties=models.PublicIPAddressPropertiesFormat(public_ip_allocation_method="Static"),
            )
            poller = self._begin(
                ip, f"create public IP {name}", network.public_ip_addresses.begin_create_or_update, group, name, ip_body
            )
            call(f"create public IP {name}", poller.result)
            public = models.PublicIPAddress(id=ip.data["id"])

        nic = self._record(machine, "network-interface", id=self.arm_id(machine, "network-interface"))
        group, name = split_id(nic.data["id"])
        config = models.NetworkInterfaceIPConfiguration(
            name="ipconfig1",
            properties=models.NetworkInterfaceIPConfigurationPropertiesFormat(
                subnet=models.Subnet(id=subnet_id), public_ip_address=public, primary=True
            ),
        )
        nic_body = models.NetworkInterface(
            location=o.location,
            tags=self.tags(nic),
            properties=models.NetworkInterfacePropertiesFormat(
                ip_configurations=[config], network_security_group=models.NetworkSecurityGroup(id=nsg.data["id"])
            ),
        )
        poller = self._begin(
            nic,
            f"create network interface {name}",
            network.network_interfaces.begin_create_or_update,
            group,
            name,
            nic_body,
        )
        call(f"create network interface {name}", poller.result)
        return nic.data["id"]

    def _create_vm(self, machine: AzureMachine, image_id: str, nic_id: str, custom_data: bytes, admin_key: str) -> None:
        from azure.mgmt.compute import models

        o = self.options
        disk = self._record(machine, "disk", id=self.arm_id(machine, "disk"))
        vm = self._record(machine, "vm", id=self.arm_id(machine, "vm"))
        group, name = split_id(vm.data["id"])
        key = models.SshPublicKey(path=f"/home/{o.admin_user}/.ssh/authorized_keys", key_data=admin_key)
        properties = models.VirtualMachineProperties(
            hardware_profile=models.HardwareProfile(vm_size=o.vm_size),
            storage_profile=models.StorageProfile(
                image_reference=models.ImageReference(id=image_id),
                os_disk=models.OSDisk(
                    name=split_id(disk.data["id"])[1],
                    create_option="FromImage",
                    delete_option="Delete",
                    caching="ReadWrite",
                    managed_disk=models.ManagedDiskParameters(storage_account_type="Standard_LRS"),
                ),
            ),
            os_profile=models.OSProfile(
                computer_name=name[:64],
                admin_username=o.admin_user,
                custom_data=base64.b64encode(custom_data).decode(),
                linux_configuration=models.LinuxConfiguration(
                    disable_password_authentication=True, ssh=models.SshConfiguration(public_keys=[key])
                ),
            ),
            network_profile=models.NetworkProfile(
                network_interfaces=[
                    models.NetworkInterfaceReference(
                        id=nic_id, properties=models.NetworkInterfaceReferenceProperties(primary=True)
                    )
                ]
            ),
            diagnostics_profile=models.DiagnosticsProfile(boot_diagnostics=models.BootDiagnostics(enabled=True)),
        )
        body = models.VirtualMachine(location=o.location, tags=self.tags(vm), properties=properties)
        compute = self.client("compute")
        machine.poller = self._begin(
            vm, f"create VM {name}", compute.virtual_machines.begin_create_or_update, group, name, body
        )
        log.info("%s: creating VM %s (%s) in %s", machine.name, name, o.vm_size, o.location)

    # -- teardown

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        data = resource.data
        if resource.kind == "blob":
            return _destroy_blob(resource)
        if not data.get("subscription") or not data.get("id") and not data.get("group"):
            raise ProviderError(f"{resource.name}: ledger entry for {resource.kind} has no subscription or id")
        if resource.kind == "resource-group":
            group = data.get("group") or split_id(data["id"] + "/x")[0]
            groups = client("resource", data).resource_groups
            found = call(f"get resource group {group}", groups.get, group, missing_ok=True)
            if found is None:
                return None
            if (found.tags or {}).get(RUN_TAG) != resource.run:
                log.warning("resource group %s belongs to another run; left alone", group)
                return None
            return delete_until_free(
                f"delete resource group {group}", client("resource", data).resource_groups.begin_delete, group
            )
        group, name = split_id(data["id"])
        compute, network = client("compute", data), client("network", data)
        begin = {
            "vm": compute.virtual_machines.begin_delete,
            "disk": compute.disks.begin_delete,
            "image": compute.images.begin_delete,
            "network-interface": network.network_interfaces.begin_delete,
            "public-ip": network.public_ip_addresses.begin_delete,
            "security-group": network.network_security_groups.begin_delete,
            "virtual-network": network.virtual_networks.begin_delete,
        }.get(resource.kind)
        if begin is None:
            raise ProviderError(f"azure cannot destroy unknown resource kind {resource.kind!r}")
        delete_until_free(f"delete {resource.kind} {name}", begin, group, name)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """Boot diagnostics' screenshot of the recorded VM (subscription and id from the ledger)."""
        data = resource.data
        if resource.kind != "vm" or not data.get("subscription") or not data.get("id"):
            raise ScreenUnavailable(f"{resource.name}: an azure {resource.kind} has no screen (its VM has)")
        group, name = split_id(data["id"])
        return boot_screenshot(client("compute", data), group, name, path)

    @classmethod
    def leftovers(cls, target: Any, recorded: set[str]) -> list[Resource]:
        """Resources and groups tagged by cernvm-fixtures, and VHDs it uploaded (by their metadata), whose
        machine no ledger entry names."""
        options: AzureOptions = target.options
        subscription = options.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not subscription:
            raise ConfigError(
                f"{target.origin}: targets.{target.name}.subscription: not set, and "
                "AZURE_SUBSCRIPTION_ID is not in the environment"
            )
        data = {
            "subscription": subscription,
            "endpoint": options.endpoint,
            "instance_discovery": options.instance_discovery,
            "poll_interval": options.poll_interval,
        }
        resources = client("resource", data)
        found = []
        ours = f"tagName eq '{RUN_TAG}'"
        for group in call("list resource groups", lambda: list(resources.resource_groups.list(filter=ours))):
            tags = group.tags or {}
            if tags.get(MACHINE_TAG) not in recorded:
                entry = resource_from_tags("resource-group", tags, {**data, "id": group.id, "group": group.name})
                found.append(entry)
        for item in call("list resources", lambda: list(resources.resources.list(filter=ours))):
            tags = item.tags or {}
            kind = KIND_OF_TYPE.get((item.type or "").lower())
            if kind and tags.get(MACHINE_TAG) not in recorded:
                found.append(resource_from_tags(kind, tags, {**data, "id": item.id}))
        if options.storage_account or options.blob_endpoint:
            found.extend(blob_leftovers(options, data, recorded))
        return teardown_order([r for r in found if r is not None])


def blob_service(account_url: str, instance_discovery: bool) -> Any:
    """A blob service client with the one credential of the process."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(account_url, credential=credential(instance_discovery))


def blob_account_url(options: AzureOptions) -> str:
    return options.blob_endpoint or f"https://{options.storage_account}.blob.core.windows.net"


def blob_leftovers(options: AzureOptions, data: dict[str, Any], recorded: set[str]) -> list[Resource]:
    """Uploaded VHDs in the target's container whose metadata names a machine no ledger entry names."""
    url = blob_account_url(options)
    container = blob_service(url, options.instance_discovery).get_container_client(options.container)
    listing = call(
        f"list blobs in {options.container}",
        lambda: list(container.list_blobs(name_starts_with=BLOB_PREFIX, include=["metadata"])),
        missing_ok=True,
    )
    found = []
    for blob in listing or []:
        meta = blob.metadata or {}
        tags = {tag: meta[metadata_name(tag)] for tag in OUR_TAG_NAMES if metadata_name(tag) in meta}
        if tags.get(MACHINE_TAG) not in recorded:
            where = {"account_url": url, "container": options.container, "blob": blob.name}
            entry = resource_from_tags("blob", tags, {**data, **where})
            if entry is not None:
                found.append(entry)
    return found


def _destroy_blob(resource: Resource) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    data = resource.data
    service = blob_service(data["account_url"], data.get("instance_discovery", True))
    blob_client = service.get_blob_client(data["container"], data["blob"])
    try:
        meta = blob_client.get_blob_properties().metadata or {}
        if (meta.get(BLOB_RUN), meta.get(BLOB_MACHINE)) != (resource.run, resource.name):
            log.info("blob %s: another machine took over its upload; left to it", data["blob"])
            return
        blob_client.delete_blob()
    except ResourceNotFoundError:
        pass


# --- the machine ----------------------------------------------------------------------------------


def boot_screenshot(compute: Any, group: str, name: str, path: Path) -> Path:
    """Boot diagnostics' screenshot of the VM (a blob behind a short-lived SAS URI), written as PNG. Errors name
    the HTTP status, never the URI (its signature is a secret)."""
    import requests

    try:
        found = call(
            f"boot diagnostics of {name}", compute.virtual_machines.retrieve_boot_diagnostics_data, group, name
        )
    except ProviderError as e:
        raise ScreenUnavailable(f"{name}: Azure gave no screenshot: {e}") from None
    uri = found.console_screenshot_blob_uri
    if not uri:
        raise ScreenUnavailable(f"{name}: boot diagnostics hold no screenshot of the VM")
    try:
        response = requests.get(uri, timeout=60)
    except requests.RequestException as e:
        raise ScreenUnavailable(
            f"{name}: the boot diagnostics screenshot could not be read: {type(e).__name__}"
        ) from None
    if response.status_code != 200:
        raise ScreenUnavailable(f"{name}: the boot diagnostics screenshot: HTTP {response.status_code}")
    return write_png(response.content, path, f"{name}: Azure's boot diagnostics screenshot")


class AzureMachine(RemoteMachine):
    """One Azure VM plus what was created for it."""

    def __init__(self, provider: AzureProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: AzureProvider = provider
        self.options: AzureOptions = provider.options
        self.slowdown = self.options.slowdown
        self.poller: Any = None
        self.traits.update(
            kind="vm", vm_size=self.options.vm_size, location=self.options.location, address=self.options.address
        )
        self._console = ""

    @property
    def group(self) -> str:
        return self.provider.group_name(self)

    @property
    def key_file(self) -> Path:
        return Path(self.options.ssh_key).expanduser() if self.options.ssh_key else self.provider.run.key_file

    def wait_running(self, deadline: float) -> None:
        """The VM's create operation finished with provisioning state Succeeded (Failed stops at once)."""
        if self.poller is None:
            raise ProviderError(f"{self.name}: no VM was created")
        from azure.core.exceptions import HttpResponseError

        try:
            self.poller.result(timeout=max(0.0, deadline - time.monotonic()))
        except HttpResponseError as e:
            message = getattr(getattr(e, "error", None), "message", None) or e.message
            raise PermanentError(f"VM {self.name} provisioning failed: {error_code(e)}: {message}") from None
        if not self.poller.done():
            raise ProviderError(f"VM {self.name} still {self.poller.status()}")

    def platform_address(self) -> str:
        network = self.provider.client("network")
        if self.options.address == "public":
            ip = call("get public IP", network.public_ip_addresses.get, self.group, f"{self.name}-ip")
            address = ip.properties.ip_address if ip.properties else None
        else:
            nic = call("get network interface", network.network_interfaces.get, self.group, f"{self.name}-nic")
            configs = nic.properties.ip_configurations or []
            address = configs[0].properties.private_ip_address if configs and configs[0].properties else None
        if not address:
            raise ProviderError(f"{self.name}: the VM has no {self.options.address} address")
        return address

    @property
    def exists(self) -> bool:
        return self.poller is not None

    def screenshot(self, path: Path) -> Path:
        if self.poller is None:
            raise ScreenUnavailable(f"{self.name}: no VM was created")
        return boot_screenshot(self.provider.client("compute"), self.group, self.name, path)

    def console_log(self) -> str:
        """The serial log from boot diagnostics (kept after the VM is gone)."""
        try:
            import requests

            compute = self.provider.client("compute")
            found = compute.virtual_machines.retrieve_boot_diagnostics_data(self.group, self.name)
            uri = found.serial_console_log_blob_uri
            if uri:
                response = requests.get(uri, timeout=30)
                response.raise_for_status()
                self._console = console_text(response.text) or self._console
        except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
            log.debug("%s: no serial log: %s", self.name, type(e).__name__)
        return self._console

    def destroy(self) -> None:
        """Destroy in dependency order (VM first, resource group last), whatever order things were recorded in."""
        self.resources.sort(key=lambda r: (RANK.get(r.kind, len(RANK)), r.created))
        super().destroy()
