"""OpenStack through openstacksdk: the CernVM "How to run on OpenStack" recipe, least privilege, leak-proof.

What a launch creates (each recorded in the ledger *before* its create call and
labelled with run id, machine, target, kind, owner, creation time and expiry):

* if ``image`` is a local file (``.iso``, ``.qcow2``, ``.raw``; the appliance ISO
  in tests): a Glance image uploaded from it, unless an image with the same
  SHA-512 (Glance's ``os_hash_value``) exists already; deleted at the end only
  when this run uploaded it;
* a key pair holding the run's public key;
* a security group whose only ingress rule is tcp/22 from ``ssh_cidr`` (never
  0.0.0.0/0; Neutron's default egress rules stay: CernVM needs HTTP out for cvmfs);
* the server, with the context as user data (cloud-init and ``[ucernvm-begin]``
  pass through untouched), ``properties`` plus the ledger entry as server
  metadata, and server tags naming the run and the machine;
* with ``address = "floating"``: a floating IP from ``floating_ip_pool``.

Teardown goes the other way (floating IP, server, security group, key pair,
uploaded image); everything already gone is fine; a security group Neutron still
sees in use (409, ports are released asynchronously) is retried.
``leftovers`` finds ours by tags and names alone, for ``sweep``.

Credentials come only from openstacksdk's own chain (``clouds.yaml``,
``OS_CLOUD``, ``OS_*`` variables); the target names a cloud, never a password.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .. import download, netcheck
from ..errors import ConfigError, PermanentError, ProviderError
from ..images import APPLIANCE, Accepts, local_file
from ..ledger import DEFAULT_LIFETIME, Owner, Resource
from .base import Machine, Provider, RemoteMachine, RemoteOptions, console_text

if TYPE_CHECKING:
    from ..config import Target
    from ..context import Context

log = logging.getLogger(__name__)

MARKER = "cernvm-fixtures"
"""The tag every resource of ours carries (servers, security groups, floating IPs, images)."""
PREFIX = MARKER + ":"
CREATION_ORDER: tuple[str, ...] = ("image", "keypair", "security-group", "server", "floating-ip")
"""Resource kinds in the order they depend on each other; teardown goes the other way."""
RANK = {kind: i for i, kind in enumerate(CREATION_ORDER)}
DISK_FORMATS = {
    ".iso": "iso",
    ".qcow2": "qcow2",
    ".hdd": "raw",
    ".raw": "raw",
    ".img": "raw",
    ".hvm": "raw",
    ".vmdk": "vmdk",
    ".vdi": "vdi",
    ".vhd": "vhd",
}
"""Local image files the provider uploads, and the Glance ``disk_format`` of each (container ``bare``)."""
SERVER_TAG_LENGTH = 60
"""Nova: a server tag is 1-60 characters without ',' or '/'; at most 50 per server."""
USER_DATA_LIMIT = 65535
"""Bytes of base64-encoded user data Nova accepts."""
RUN_NAME = re.compile(r"^cvmfx-[0-9a-f]{8}-")
"""Machine names as Run.name() makes them: what a key pair of ours (which has no tags) is called."""

DESTROY_TIMEOUT = 600.0
BUSY_TIMEOUT = 300.0
DESTROY_POLL = 1.0


# --- openstacksdk, lazily ---------------------------------------------------------------------------


def _openstack() -> Any:
    try:
        import openstack
    except ImportError:
        raise ConfigError(
            "the openstack provider needs openstacksdk: pip install 'cernvm-fixtures[openstack]'"
        ) from None
    return openstack


_connections: dict[str | None, Any] = {}
_connections_lock = threading.Lock()


def connection(cloud: str | None) -> Any:
    """One openstacksdk connection per cloud name for the process (None: OS_CLOUD / OS_* variables)."""
    with _connections_lock:
        found = _connections.get(cloud)
        if found is None:
            openstack = _openstack()
            try:
                found = openstack.connect(cloud=cloud) if cloud else openstack.connect()
            except openstack.exceptions.ConfigException as e:
                where = f"cloud {cloud!r}" if cloud else "OS_CLOUD / OS_* variables"
                raise ConfigError(
                    f"openstacksdk cannot configure {where}: {e} (it reads clouds.yaml, "
                    "OS_CLOUD and OS_* variables; cernvm-fixtures never holds a password)"
                ) from None
            _connections[cloud] = found
        return found


def reset_connections() -> None:
    """Forget cached connections (e.g. after clouds.yaml or the environment changed)."""
    with _connections_lock:
        for conn in _connections.values():
            conn.close()
        _connections.clear()


def call(what: str, fn: Any, *args: Any, missing_ok: bool = False, **params: Any) -> Any:
    """Call openstacksdk; its errors become ProviderError naming ``what``. With ``missing_ok`` a 404 is None."""
    openstack = _openstack()
    try:
        return fn(*args, **params)
    except openstack.exceptions.NotFoundException:
        if missing_ok:
            return None
        raise ProviderError(f"{what}: not found") from None
    except openstack.exceptions.HttpException as e:
        raise ProviderError(f"{what}: HTTP {e.status_code}: {e.details or e.message}") from None
    except openstack.exceptions.SDKException as e:
        raise ProviderError(f"{what}: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("keystoneauth1"):
            raise ProviderError(f"{what}: {e}") from None
        raise


def call_until_free(what: str, fn: Any, *args: Any, timeout: float = BUSY_TIMEOUT) -> None:
    """A delete that Neutron/Nova may refuse with 409 while something still uses the resource: retried; 404 is fine."""
    openstack = _openstack()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fn(*args)
            return
        except openstack.exceptions.NotFoundException:
            return
        except openstack.exceptions.ConflictException as e:
            if time.monotonic() > deadline:
                raise ProviderError(f"{what}: still in use after {timeout:.0f} s: {e.details or e.message}") from None
            log.debug("%s: in use (%s), retrying", what, e.details)
            time.sleep(DESTROY_POLL)
        except openstack.exceptions.SDKException as e:
            raise ProviderError(f"{what}: {e}") from None


# --- options ----------------------------------------------------------------------------------------


class OpenStackOptions(RemoteOptions):
    """Target keys of the ``openstack`` provider. The generic ``image`` key is a Glance image or a local file."""

    cloud: str | None = None
    """The cloud's name in clouds.yaml; default: OS_CLOUD or the OS_* variables (openstacksdk's own chain)."""
    flavor: str = "cvm.medium"
    """Flavor name or id (CERN's documented flavor is cvm.medium)."""
    network: str | None = None
    """Network name or id to attach the server to; default: the project's only network."""
    properties: dict[str, str] = {"cern-services": "false"}
    """Server metadata (``--property``); the documentation recommends cern-services=false for a faster creation."""
    ssh_cidr: str
    """The runner's own address as a CIDR (``203.0.113.7/32``): the security group admits tcp/22 from it alone."""
    config_drive: bool = False
    """Also hand the context to the server on a config drive (CernVM reads the metadata service otherwise)."""
    address: Literal["fixed", "floating"] = "fixed"
    """Reach the server at its fixed address (e.g. from inside the cloud, or via ``jump_host``) or a floating IP."""
    floating_ip_pool: str | None = None
    """External network to allocate the floating IP from (needed with ``address = "floating"``)."""
    poll_interval: float = Field(2.0, gt=0)
    """Seconds between API polls while waiting."""
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud server takes minutes to build and boot)."""

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, value: str, info: ValidationInfo) -> str:
        return netcheck.ssh_cidr(value, bool(info.data.get("allow_wide_ssh")))

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [
            f"{k!r}: keys and values are 1-255 and 0-255 characters"
            for k, v in value.items()
            if not 1 <= len(k) <= 255 or len(v) > 255
        ]
        problems += [f"{k!r} is set by cernvm-fixtures itself" for k in value if k.startswith(PREFIX)]
        if problems:
            raise ValueError("server metadata Nova accepts: " + "; ".join(problems))
        return value

    @model_validator(mode="after")
    def _floating_needs_pool(self) -> OpenStackOptions:
        if self.address == "floating" and not self.floating_ip_pool:
            raise ValueError('address = "floating" needs floating_ip_pool (the external network to allocate from)')
        return self


# --- labels: the ledger entry as flat key/value fields on a resource ---------------------------------


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels(resource: Resource, kind: str | None = None) -> dict[str, str]:
    """The ledger entry as flat fields (no '/' or ',' anywhere, so the same fields fit Nova and Neutron tags)."""
    owner = resource.owner
    found = {
        PREFIX + "run": resource.run,
        PREFIX + "machine": resource.name,
        PREFIX + "target": resource.target,
        PREFIX + "kind": kind or resource.kind,
        PREFIX + "owner": f"{owner.host}|{owner.pid}|{owner.start or '-'}".replace(",", ";").replace("/", "|"),
        PREFIX + "created": f"{resource.created:.6f}",
        PREFIX + "expires": iso(resource.expires),
    }
    if resource.kept:
        found[PREFIX + "kept"] = "true"
    return found


def tags(resource: Resource, kind: str | None = None) -> list[str]:
    """Neutron and Glance tags: the marker plus ``key=value`` for every label (each well under 255 characters)."""
    return [MARKER] + [f"{k}={v}" for k, v in labels(resource, kind).items()]


def server_tags(resource: Resource) -> list[str]:
    """Nova server tags (60 characters at most): the marker, run and machine; the rest goes into metadata."""
    short = [MARKER, f"run={resource.run}", f"machine={resource.name}"]
    return [t for t in short if len(t) <= SERVER_TAG_LENGTH]


def resource_from_labels(kind: str, found: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's labels alone (None if it is not ours)."""
    machine, run = found.get(PREFIX + "machine"), found.get(PREFIX + "run")
    if not machine or not run:
        return None
    host, _, rest = found.get(PREFIX + "owner", "").partition("|")
    pid, _, start = rest.partition("|")
    owner = Owner(host or "unknown", int(pid) if pid.isdigit() else 0, None if start in ("", "-") else start)
    try:
        created = float(found.get(PREFIX + "created", ""))
    except ValueError:
        created = 0.0
    try:
        expires = (
            datetime.strptime(found.get(PREFIX + "expires", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        )
    except ValueError:
        expires = created + DEFAULT_LIFETIME if created else 1.0
    created -= (len(CREATION_ORDER) - RANK.get(kind, 0)) * 1e-4
    return Resource(
        provider="openstack",
        kind=kind,
        name=machine,
        run=run,
        target=found.get(PREFIX + "target", ""),
        data=data,
        owner=owner,
        created=created,
        expires=expires,
        kept=found.get(PREFIX + "kept") == "true",
    )


def labels_from_tags(found: list[str]) -> dict[str, str]:
    return dict(t.split("=", 1) for t in found if "=" in t and t.startswith(PREFIX))


def disk_format(path: Path) -> str:
    return DISK_FORMATS[path.suffix.lower()]


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- the provider -----------------------------------------------------------------------------------


class OpenStackProvider(Provider[OpenStackOptions, "OpenStackMachine"]):
    """Launches CernVM on an OpenStack cloud (CERN's, or any speaking Keystone v3, Nova, Neutron and Glance v2)."""

    name = "openstack"
    no_power_button = (
        "not implemented for OpenStack yet (a server stop, os-stop, could: Nova asks the guest to shut down cleanly "
        "before it powers the server off)"
    )
    Options = OpenStackOptions
    no_screen = "OpenStack's compute API has no screenshot call (only remote console URLs for a person's browser)"
    creation_order: ClassVar[tuple[str, ...]] = CREATION_ORDER

    def conn(self) -> Any:
        return connection(self.options.cloud)

    # -- configuration checks, all before anything is created

    def image_source(self) -> tuple[str, str | Path]:
        """("file", path) for the appliance or a local image file, else ("glance", name-or-id)."""
        image = self.target.image
        if image == APPLIANCE or image.startswith(APPLIANCE + ":"):
            from .. import appliance

            return "file", appliance.build(image.partition(":")[2] or "ok").iso
        boots = f"a Glance image or uploads a file ({', '.join(DISK_FORMATS)}; a release: its .hdd)"
        if download.is_release(image):
            return "file", local_file(self.target, Accepts(".hdd", boots, fmt="hdd"))
        suffix = Path(download.parse(image).name if download.is_url(image) else image).suffix.lower()
        if download.is_url(image):
            return "file", local_file(self.target, Accepts(suffix if suffix in DISK_FORMATS else ".hdd", boots))
        path = Path(image).expanduser()
        if suffix in DISK_FORMATS and (path.is_file() or "/" in image):
            if not path.is_file():
                raise ConfigError(f"{self.target.where('image')}: {image!r} does not exist")
            return "file", path.resolve()
        return "glance", image

    def find_image(self, wanted: str) -> Any:
        """The one Glance image whose id or exact name is ``wanted``; else a ConfigError listing what exists."""
        conn = self.conn()
        images = list(call("list images", conn.image.images))
        by_id = [i for i in images if i.id == wanted]
        matches = by_id or [i for i in images if i.name == wanted]
        where = self.target.where("image")
        if not matches:
            names = sorted({f"{i.name!r}" for i in images if i.status == "active"})
            raise ConfigError(
                f"{where}: no image named {wanted!r} (exact match; names contain spaces, brackets "
                f"and dates). Images: {', '.join(names) or 'none'}"
            )
        if len(matches) > 1:
            listed = ", ".join(f"{i.id} ({i.status}, created {i.created_at})" for i in matches)
            raise ConfigError(f"{where}: {len(matches)} images are named {wanted!r}: {listed}; use the id")
        if matches[0].status != "active":
            raise ConfigError(f"{where}: image {wanted!r} ({matches[0].id}) is {matches[0].status}, not active")
        return matches[0]

    def find_flavor(self) -> Any:
        conn = self.conn()
        flavors = list(call("list flavors", conn.compute.flavors))
        found = [f for f in flavors if self.options.flavor in (f.id, f.name)]
        if len(found) != 1:
            raise ConfigError(
                f"{self.target.where('flavor')}: {len(found)} flavors match {self.options.flavor!r}; "
                f"flavors: {', '.join(sorted(f.name for f in flavors))}"
            )
        return found[0]

    def find_network(self, wanted: str | None, key: str, external: bool) -> Any:
        conn = self.conn()
        networks = [n for n in call("list networks", conn.network.networks) if bool(n.is_router_external) == external]
        found = [n for n in networks if wanted in (n.id, n.name)] if wanted else networks
        if len(found) != 1:
            what = "external networks" if external else "networks"
            raise ConfigError(
                f"{self.target.where(key)}: {len(found)} {what} match {wanted or '(any)'}; "
                f"{what}: {', '.join(sorted(n.name for n in networks)) or 'none'}"
            )
        return found[0]

    # -- creation

    def machine(self, name: str) -> OpenStackMachine:
        return OpenStackMachine(self, name)

    def _record(self, machine: Machine, kind: str, **data: Any) -> Resource:
        return self.record(machine, kind, machine.name, cloud=self.options.cloud, **data)

    def created(self, resource: Resource, **data: Any) -> None:
        """Add what the platform returned (the id) to a resource's ledger entry."""
        resource.data.update(data)
        self.run.ledger.update(resource)

    def forget(self, machine: Machine, resource: Resource) -> None:
        """Drop a ledger entry for something the cloud refused to create (nothing of ours to destroy)."""
        self.run.ledger.forget(resource)
        machine.resources.remove(resource)

    def launch(self, machine: OpenStackMachine, context: Context) -> None:
        o = self.options
        conn = self.conn()
        source, image = self.image_source()
        user_data = base64.b64encode(context.render()).decode()
        if len(user_data) > USER_DATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: user data is {len(user_data)} bytes base64; Nova accepts {USER_DATA_LIMIT}"
            )
        glance = self.find_image(str(image)) if source == "glance" else None
        flavor = self.find_flavor()
        network = self.find_network(o.network, "network", external=False)
        pool = self.find_network(o.floating_ip_pool, "floating_ip_pool", external=True) if o.floating_ip_pool else None
        machine.traits["flavor"] = flavor.name
        if glance is None:
            glance = self.upload_image(machine, Path(image))
        image_id = glance.id

        key = self._record(machine, "keypair", key_name=machine.name)
        try:
            conn.compute.create_keypair(name=machine.name, public_key=self.run.public_key)
        except _openstack().exceptions.ConflictException as e:
            # A key pair of that name exists and is not ours (it has no tags to tell): never delete it.
            self.forget(machine, key)
            raise ProviderError(f"create key pair: HTTP 409: {e.details or e.message}") from None
        except _openstack().exceptions.SDKException as e:
            raise ProviderError(f"create key pair: {e}") from None
        self.created(key, id=machine.name)

        group_id = self.create_security_group(machine)

        server = self._record(machine, "server")
        metadata = {**o.properties, **labels(server)}
        made = call(
            "create server",
            conn.compute.create_server,
            name=machine.name,
            image_id=image_id,
            flavor_id=flavor.id,
            networks=[{"uuid": network.id}],
            key_name=machine.name,
            security_groups=[{"name": group_id}],
            user_data=user_data,
            metadata=metadata,
            tags=server_tags(server),
            config_drive=o.config_drive or None,
        )
        machine.server_id = made.id
        self.created(server, id=made.id)
        log.info("%s: created server %s (%s, image %s)", machine.name, made.id, flavor.name, image_id)
        if pool is not None:
            machine.pool_id = pool.id

    def upload_image(self, machine: Machine, path: Path) -> Any:
        """The Glance image holding ``path``: one with the same SHA-512, else uploaded now (and recorded)."""
        conn = self.conn()
        digest = sha512(path)
        for found in call("list images", conn.image.images):
            if found.hash_value == digest and found.status == "active":
                log.info("%s: reusing image %s (same sha512 as %s)", machine.name, found.id, path.name)
                return found
        resource = self._record(machine, "image", file=str(path))
        made = call(
            "create image",
            conn.image.create_image,
            f"{machine.name}-{path.name}",
            disk_format=disk_format(path),
            container_format="bare",
            allow_duplicates=True,
            tags=tags(resource),
            visibility="private",
        )
        self.created(resource, id=made.id)
        with path.open("rb") as data:
            made.data = data
            response = call(f"upload {path.name}", made.upload, conn.image)
        _openstack().exceptions.raise_from_response(response)
        done = call(
            "wait for image",
            conn.image.wait_for_status,
            made,
            "active",
            failures=["killed"],
            interval=self.options.poll_interval,
            wait=3600,
        )
        if done.hash_value not in (None, digest):
            raise ProviderError(
                f"{machine.name}: Glance computed sha512 {done.hash_value} for {path.name}, expected {digest}"
            )
        return done

    def create_security_group(self, machine: Machine) -> str:
        """A group admitting tcp/22 from ``ssh_cidr`` alone."""
        conn = self.conn()
        cidr = ipaddress.ip_network(self.options.ssh_cidr)
        resource = self._record(machine, "security-group")
        group = call(
            "create security group",
            conn.network.create_security_group,
            name=machine.name,
            description=f"cernvm-fixtures {machine.name}: SSH from {cidr} only",
        )
        self.created(resource, id=group.id)
        call("tag security group", conn.network.set_tags, group, tags(resource))
        call(
            "create security group rule",
            conn.network.create_security_group_rule,
            security_group_id=group.id,
            direction="ingress",
            ethertype=f"IPv{cidr.version}",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix=str(cidr),
            description="cernvm-fixtures: SSH from the test runner",
        )
        return group.id

    def attach_floating_ip(self, machine: OpenStackMachine) -> str:
        """A floating IP from the pool on the server's port (recorded first); its address."""
        conn = self.conn()
        ports = list(call("list ports", conn.network.ports, device_id=machine.server_id))
        if not ports:
            raise ProviderError(f"{machine.name}: server {machine.server_id} has no port to attach a floating IP to")
        resource = self._record(machine, "floating-ip")
        ip = call(
            "create floating ip",
            conn.network.create_ip,
            floating_network_id=machine.pool_id,
            port_id=ports[0].id,
            description=machine.name,
        )
        self.created(resource, id=ip.id, address=ip.floating_ip_address)
        call("tag floating ip", conn.network.set_tags, ip, tags(resource))
        return ip.floating_ip_address

    # -- teardown

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        handler = _DESTROY.get(resource.kind)
        if handler is None:
            raise ProviderError(f"openstack cannot destroy unknown resource kind {resource.kind!r}")
        handler(resource, connection(resource.data.get("cloud")))

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources of ours (by tag, by name for key pairs) whose machine no ledger entry names."""
        options: OpenStackOptions = target.options
        conn = connection(options.cloud)
        data = {"cloud": options.cloud}
        found: list[Resource] = []

        def add(kind: str, fields: dict[str, str], ident: str, **extra: Any) -> None:
            resource = resource_from_labels(kind, fields, {**data, "id": ident, **extra})
            if resource is not None and resource.name not in recorded:
                found.append(resource)

        for server in call("list servers", conn.compute.servers, tags=MARKER):
            add("server", dict(server.metadata or {}), server.id)
        for group in call("list security groups", conn.network.security_groups, tags=MARKER):
            add("security-group", labels_from_tags(group.tags), group.id)
        for ip in call("list floating ips", conn.network.ips, tags=MARKER):
            add("floating-ip", labels_from_tags(ip.tags), ip.id)
        for image in call("list images", conn.image.images, tag=MARKER):
            add("image", labels_from_tags(image.tags), image.id)
        machines = {r.name: r for r in found}
        for key in call("list key pairs", conn.compute.keypairs):
            if RUN_NAME.match(key.name) and key.name not in recorded:
                found.append(keypair_leftover(key, machines.get(key.name), target.name, data))
        return sorted(found, key=lambda r: (RANK.get(r.kind, len(RANK)), r.created), reverse=True)


def keypair_leftover(key: Any, twin: Resource | None, target: str, data: dict[str, Any]) -> Resource:
    """A key pair of ours has only its name: it shares owner and expiry with its machine's other resources, or
    without any, expires a lifetime after Nova's created_at (so a live run elsewhere keeps its key)."""
    base = {
        "provider": "openstack",
        "kind": "keypair",
        "name": key.name,
        "run": key.name.split("-")[1],
        "data": {**data, "id": key.name, "key_name": key.name},
    }
    if twin is not None:
        return Resource(
            **base,
            target=twin.target,
            owner=twin.owner,
            created=twin.created - 1e-3,
            expires=twin.expires,
            kept=twin.kept,
        )
    try:
        created = datetime.fromisoformat(str(key.created_at).replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()
    except ValueError:
        created = 0.0
    return Resource(
        **base,
        target=target,
        owner=Owner("unknown", 0, None),
        created=created,
        expires=created + DEFAULT_LIFETIME if created else 1.0,
    )


# --- teardown, one function per kind ----------------------------------------------------------------


def _ids(resource: Resource, found: list[Any]) -> list[str]:
    ids = [resource.data["id"]] if resource.data.get("id") else []
    return list(dict.fromkeys(ids + [item.id for item in found]))


def _destroy_server(resource: Resource, conn: Any) -> None:
    tagged = call("list servers", conn.compute.servers, tags=f"machine={resource.name}")
    ids = _ids(resource, [s for s in tagged if s.name == resource.name])
    for server_id in ids:
        call(f"delete server {server_id}", conn.compute.delete_server, server_id, ignore_missing=True)
    deadline = time.monotonic() + DESTROY_TIMEOUT
    for server_id in ids:
        while call(f"get server {server_id}", conn.compute.get_server, server_id, missing_ok=True) is not None:
            if time.monotonic() > deadline:
                raise ProviderError(f"{resource.name}: server {server_id} not deleted after {DESTROY_TIMEOUT:.0f} s")
            time.sleep(DESTROY_POLL)


def _destroy_floating_ip(resource: Resource, conn: Any) -> None:
    tagged = call("list floating ips", conn.network.ips, tags=f"{PREFIX}machine={resource.name}")
    for ip_id in _ids(resource, list(tagged)):
        call(f"delete floating ip {ip_id}", conn.network.delete_ip, ip_id, ignore_missing=True)


def _destroy_security_group(resource: Resource, conn: Any) -> None:
    named = call("list security groups", conn.network.security_groups, name=resource.name)
    for group_id in _ids(resource, list(named)):
        call_until_free(
            f"delete security group {group_id}",
            functools.partial(conn.network.delete_security_group, group_id, ignore_missing=False),
        )


def _destroy_keypair(resource: Resource, conn: Any) -> None:
    name = resource.data.get("key_name") or resource.name
    call(f"delete key pair {name}", conn.compute.delete_keypair, name, ignore_missing=True)


def _destroy_image(resource: Resource, conn: Any) -> None:
    tagged = call("list images", conn.image.images, tag=f"{PREFIX}machine={resource.name}")
    for image_id in _ids(resource, list(tagged)):
        call(f"delete image {image_id}", conn.image.delete_image, image_id, ignore_missing=True)


_DESTROY = {
    "floating-ip": _destroy_floating_ip,
    "server": _destroy_server,
    "security-group": _destroy_security_group,
    "keypair": _destroy_keypair,
    "image": _destroy_image,
}


# --- the machine ------------------------------------------------------------------------------------


class OpenStackMachine(RemoteMachine):
    """One Nova server plus what was created for it."""

    def __init__(self, provider: OpenStackProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: OpenStackProvider = provider
        self.options: OpenStackOptions = provider.options
        self.server_id: str | None = None
        self.pool_id: str | None = None
        self.slowdown = self.options.slowdown
        self.traits.update(kind="vm", cloud=self.options.cloud or "", address=self.options.address)
        self._server: Any = None
        self._floating: str | None = None
        self._console = ""

    def _conn(self) -> Any:
        return self.provider.conn()

    def server(self) -> Any:
        if self.server_id is None:
            raise ProviderError(f"{self.name}: no server was created")
        self._server = call(f"get server {self.server_id}", self._conn().compute.get_server, self.server_id)
        return self._server

    def wait_running(self, deadline: float) -> None:
        status = "unknown"
        while True:
            server = self.server()
            status = server.status
            if status == "ACTIVE":
                break
            if status in ("ERROR", "DELETED", "SHUTOFF", "SOFT_DELETED"):
                fault = (server.fault or {}).get("message")
                raise PermanentError(f"server {self.server_id} is {status}" + (f": {fault}" if fault else ""))
            if time.monotonic() > deadline:
                raise ProviderError(f"server {self.server_id} still {status} (task {server.task_state})")
            time.sleep(max(0.0, min(self.options.poll_interval, deadline - time.monotonic())))
        if self.pool_id is not None and self._floating is None:
            self._floating = self.provider.attach_floating_ip(self)

    def platform_address(self) -> str:
        """The fixed or floating address Neutron gave the server (``address`` option)."""
        if self.options.address == "floating":
            if self._floating is None:
                raise ProviderError(f"{self.name}: no floating IP attached yet")
            return self._floating
        server = self._server or self.server()
        for entries in (server.addresses or {}).values():
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == "fixed" and entry.get("version", 4) == 4:
                    return entry["addr"]
        raise ProviderError(f"{self.name}: server {self.server_id} has no fixed address")

    @property
    def exists(self) -> bool:
        return self.server_id is not None

    def console_log(self) -> str:
        """Nova's console output (os-getConsoleOutput) so far; kept after the server is gone."""
        if self.server_id is None:
            return self._console
        try:
            found = self._conn().compute.get_server_console_output(self.server_id)
            text = console_text(found.get("output") or "")
        except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
            log.debug("%s: no console output: %s", self.name, e)
            return self._console
        if text:
            self._console = text
        return self._console

    def keep(self) -> None:
        """Mark kept in the ledger and on the server's metadata (a tag-based sweep then leaves it alone)."""
        super().keep()
        if self.server_id is None:
            return
        server = next((r for r in self.resources if r.kind == "server"), None)
        if server is not None:
            try:
                call(
                    "mark server kept",
                    self._conn().compute.set_server_metadata,
                    self.server_id,
                    **{PREFIX + "kept": "true", PREFIX + "expires": iso(server.expires)},  # type: ignore[arg-type]
                )
            except ProviderError as e:
                log.warning("%s: could not mark the server kept: %s", self.name, e)

    def destroy(self) -> None:
        """Destroy in dependency order (floating IP first, uploaded image last), whatever the recording order."""
        self.resources.sort(key=lambda r: (RANK.get(r.kind, len(RANK)), r.created))
        super().destroy()
