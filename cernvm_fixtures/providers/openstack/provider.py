"""The provider and its machine: checks before anything is created, then key pair, security group, server and
floating IP, each recorded first; Nova's state of the server for the wait; its console and addresses."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ... import images
from ...errors import ConfigError, PermanentError, ProviderError
from ...ledger import Resource
from ..base import Machine, PlatformState, Provider, RemoteMachine, console_text
from ..kit import encode_fields, wait_until
from . import destroy
from .api import SDK, conflict, connection, openstacksdk
from .fields import MARKER, from_fields, keypair_name, publish_resource_lifetime, server_tags, tag_fields, tag_list
from .options import OpenStackOptions

if TYPE_CHECKING:
    from ...config import Target
    from ...context import Context
    from ...doctor import Check

log = logging.getLogger(__name__)

CREATION_ORDER: tuple[str, ...] = ("image", "keypair", "security-group", "server", "floating-ip")
"""Resource kinds in the order they depend on each other; teardown goes the other way."""
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
GLANCE = images.Accepts(
    ".hdd",
    f"a Glance image (exact name or id) or uploads a file ({', '.join(DISK_FORMATS)}; a release: its .hdd)",
    other_files=tuple(DISK_FORMATS),
    platform=lambda image: True,
    appliance=lambda built: built.iso,
)
"""What the ``image`` key names: the appliance's ISO, a release's .hdd or a local file to upload; anything else is
a Glance image's exact name or id (:meth:`OpenStackProvider.find_image`)."""
USER_DATA_LIMIT = 65535
"""Bytes of base64-encoded user data Nova accepts."""
FAILED = ("ERROR", "DELETED", "SHUTOFF", "SOFT_DELETED")
"""Server states from which a server being built never becomes ACTIVE."""
UPLOAD_TIMEOUT = 3600.0
"""How long Glance may take to make an uploaded image active."""
GIB = 1024**3
PORT_TIMEOUT = 600.0
"""How long a launch with a floating IP waits for Nova to allocate the server's port (scheduling comes first)."""


def disk_format(path: Path) -> str:
    return DISK_FORMATS[path.suffix.lower()]


def file_digest(path: Path, algo: str) -> str:
    """The hexdigest of ``path`` in ``algo`` (a hashlib name, as Glance's ``os_hash_algo`` is)."""
    digest = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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

    def find_image(self, wanted: str) -> Any:
        """The one Glance image whose id or exact name is ``wanted``; else a ConfigError listing what exists."""
        found = list(SDK.call("list images", self.conn().image.images))
        by_id = [i for i in found if i.id == wanted]
        matches = by_id or [i for i in found if i.name == wanted]
        where = self.target.where("image")
        if not matches:
            names = sorted({f"{i.name!r}" for i in found if i.status == "active"})
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
        flavors = list(SDK.call("list flavors", self.conn().compute.flavors))
        found = [f for f in flavors if self.options.flavor in (f.id, f.name)]
        if len(found) != 1:
            raise ConfigError(
                f"{self.target.where('flavor')}: {len(found)} flavors match {self.options.flavor!r}; "
                f"flavors: {', '.join(sorted(f.name for f in flavors))}"
            )
        return found[0]

    def check_root_disk(self, flavor: Any, size: int, min_disk: int, what: str) -> None:
        """The image fits the flavor's root disk as Nova checks it (size and ``min_disk``; a 0 GB root disk is
        Nova's policy question, not checked here): else a ConfigError naming both, before anything is created."""
        disk = int(flavor.disk or 0)
        needed = max(size, min_disk * GIB)
        if disk and needed > disk * GIB:
            raise ConfigError(
                f"{self.target.where('flavor')}: flavor {flavor.name!r} has a {disk} GB root disk, {what} needs "
                f"{needed} bytes (size {size}, min_disk {min_disk} GB): Nova would refuse the server"
            )

    def find_network(self, wanted: str | None, key: str, external: bool) -> Any:
        listed = SDK.call("list networks", self.conn().network.networks)
        networks = [n for n in listed if bool(n.is_router_external) == external]
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

    def launch(self, machine: OpenStackMachine, context: Context) -> None:
        options = self.options
        image = images.resolve(self.target, GLANCE)
        user_data = base64.b64encode(context.render()).decode()
        if len(user_data) > USER_DATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: user data is {len(user_data)} bytes base64; Nova accepts {USER_DATA_LIMIT}"
            )
        glance = self.find_image(image.platform) if image.platform is not None else None
        flavor = self.find_flavor()
        network = self.find_network(options.network, "network", external=False)
        pool = None
        if options.floating_ip_pool:
            pool = self.find_network(options.floating_ip_pool, "floating_ip_pool", external=True)
        machine.traits["flavor"] = flavor.name
        if glance is not None:
            what = f"image {glance.name!r} ({glance.id})"
            self.check_root_disk(flavor, int(glance.size or 0), int(glance.min_disk or 0), what)
        else:
            assert image.file is not None, "images.resolve gives a file or a platform image"
            self.check_root_disk(flavor, image.file.stat().st_size, 0, str(image.file))
        if glance is None:
            assert image.file is not None
            glance = self.upload_image(machine, image.file)
        self.create_keypair(machine)
        group_id = self.create_security_group(machine)

        server = self._record(machine, "server")
        fields = encode_fields(server)
        drive: dict[str, Any] = {"config_drive": True} if options.config_drive else {}  # Nova refuses null
        made = SDK.call(
            "create server",
            self.conn().compute.create_server,
            name=machine.name,
            image_id=glance.id,
            flavor_id=flavor.id,
            networks=[{"uuid": network.id}],
            key_name=keypair_name(machine.name),
            security_groups=[{"name": group_id}],
            user_data=user_data,
            metadata={**options.properties, **fields},
            tags=server_tags(fields),
            **drive,
        )
        machine.server_id = made.id
        self.created(server, id=made.id)
        log.info("%s: created server %s (%s, image %s)", machine.name, made.id, flavor.name, glance.id)
        if pool is not None:
            machine.floating = self.attach_floating_ip(machine, pool.id)

    def create_keypair(self, machine: Machine) -> None:
        """A key pair holding the run's public key, named as the machine plus its name's mark (``keypair_name``)."""
        key = self._record(machine, "keypair", key_name=keypair_name(machine.name))
        try:
            self.conn().compute.create_keypair(name=key.data["key_name"], public_key=self.run.public_key)
        except SDK.errors() as e:
            if conflict(e):  # a key pair of that name exists and is not ours (it has no tags to tell): keep it
                self.forget(machine, key)
            raise ProviderError(f"create key pair: {SDK.message(e)}") from None
        self.created(key, id=key.data["key_name"])

    def upload_image(self, machine: Machine, path: Path) -> Any:
        """The Glance image holding ``path``: one with the same digest in its ``os_hash_algo`` (Glance's
        ``hashing_algorithm``: sha512 by default, sha256 on some clouds), else uploaded now (and recorded)."""
        conn = self.conn()
        digests: dict[str, str] = {}

        def digest(algo: str) -> str | None:
            if algo not in hashlib.algorithms_available:
                return None
            if algo not in digests:
                digests[algo] = file_digest(path, algo)
            return digests[algo]

        project = conn.current_project_id
        for found in SDK.call("list images", conn.image.images, tag=MARKER):
            if found.status != "active" or not found.hash_algo or found.hash_value != digest(found.hash_algo):
                continue
            # the same bytes, but an image's properties (kernel_id, os_command_line, hw_*) choose what boots too:
            # only one this project made with this key's mark is reused, never a shared or planted one
            if found.owner != project or from_fields("image", tag_fields(found.tags or []), {}) is None:
                log.info(
                    "%s: image %s has the content of %s but is not provably ours: not reused",
                    machine.name,
                    found.id,
                    path.name,
                )
                continue
            log.info("%s: reusing image %s (same %s as %s)", machine.name, found.id, found.hash_algo, path.name)
            return found
        resource = self._record(machine, "image", file=str(path))
        made = SDK.call(
            "create image",
            conn.image.create_image,
            f"{machine.name}-{path.name}",
            disk_format=disk_format(path),
            container_format="bare",
            allow_duplicates=True,
            tags=tag_list(encode_fields(resource)),
            visibility="private",
        )
        self.created(resource, id=made.id)
        with path.open("rb") as data:
            made.data = data
            response = SDK.call(f"upload {path.name}", made.upload, conn.image)
        SDK.call(f"upload {path.name}", openstacksdk().exceptions.raise_from_response, response)

        def active() -> Any:
            found = SDK.call(f"get image {made.id}", conn.image.get_image, made.id)
            if found.status == "killed":
                raise PermanentError(f"{machine.name}: Glance killed image {made.id} while taking {path.name}")
            return found if found.status == "active" else None

        deadline = time.monotonic() + UPLOAD_TIMEOUT
        done = wait_until(f"{machine.name}: image {made.id} active", active, deadline, self.options.poll_interval)
        if done.hash_value is not None:
            expected = digest(done.hash_algo or "")
            if expected is None:
                raise ProviderError(
                    f"{machine.name}: Glance hashed {path.name} with {done.hash_algo!r}, which hashlib does not offer "
                    f"({', '.join(sorted(hashlib.algorithms_guaranteed))}): the upload cannot be checked"
                )
            if done.hash_value != expected:
                raise ProviderError(
                    f"{machine.name}: Glance computed {done.hash_algo} {done.hash_value} for {path.name}, "
                    f"expected {expected}"
                )
        return done

    def create_security_group(self, machine: Machine) -> str:
        """A group admitting tcp/22 from ``ssh_cidr`` alone; its id."""
        conn = self.conn()
        cidr = ipaddress.ip_network(self.options.ssh_cidr)
        resource = self._record(machine, "security-group")
        group = SDK.call(
            "create security group",
            conn.network.create_security_group,
            name=machine.name,
            description=f"cernvm-fixtures {machine.name}: SSH from {cidr} only",
        )
        self.created(resource, id=group.id)
        SDK.call("tag security group", conn.network.set_tags, group, tag_list(encode_fields(resource)))
        SDK.call(
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

    def attach_floating_ip(self, machine: OpenStackMachine, pool_id: str) -> str:
        """A floating IP from the pool on the server's port once Nova has allocated it (recorded first); its
        address. A server that fails before it has a port ends the wait (PermanentError with Nova's fault)."""
        conn = self.conn()

        def port() -> Any:
            ports = list(SDK.call("list ports", conn.network.ports, device_id=machine.server_id))
            if ports:
                return ports[0]
            state = machine.platform_state()
            if state is not None and state.failure is not None:
                raise PermanentError(f"{machine.name} is {state.status}: {state.failure}")
            return None

        deadline = time.monotonic() + PORT_TIMEOUT
        found = wait_until(f"{machine.name}: a port for the floating IP", port, deadline, self.options.poll_interval)
        resource = self._record(machine, "floating-ip")
        ip = SDK.call(
            "create floating ip",
            conn.network.create_ip,
            floating_network_id=pool_id,
            port_id=found.id,
            description=machine.name,
        )
        self.created(resource, id=ip.id, address=ip.floating_ip_address)
        SDK.call("tag floating ip", conn.network.set_tags, ip, tag_list(encode_fields(resource)))
        return ip.floating_ip_address

    # -- teardown, from platform data alone (:mod:`.destroy`)

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        destroy.destroy(resource)

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """SDK, credentials and where they point, as the SDK's own chain resolves them (:mod:`.checks`)."""
        from .checks import openstack_checks

        return openstack_checks(target)

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources of ours (by tag, by name for key pairs) whose machine no ledger entry names."""
        return destroy.leftovers(target, recorded)


class OpenStackMachine(RemoteMachine):
    """One Nova server plus what was created for it."""

    def __init__(self, provider: OpenStackProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: OpenStackProvider = provider
        self.options: OpenStackOptions = provider.options
        self.server_id: str | None = None
        self.floating: str | None = None
        """The floating IP's address once attached (``address = "floating"``)."""
        self.slowdown = self.options.slowdown
        self.traits.update(kind="vm", cloud=self.options.cloud or "", address=self.options.address)
        self._server: Any = None

    def _conn(self) -> Any:
        return self.provider.conn()

    def platform_state(self) -> PlatformState | None:
        """Nova's status of the server (one call): ACTIVE runs; ERROR, DELETED, SHUTOFF and SOFT_DELETED never
        will (with Nova's fault message); None while Nova does not list it yet."""
        if self.server_id is None:
            raise ProviderError(f"{self.name}: no server was created")
        get = self._conn().compute.get_server
        server = SDK.call(f"get server {self.server_id}", get, self.server_id, missing_ok=True)
        if server is None:
            return None
        self._server = server
        if server.status in FAILED:
            fault = (server.fault or {}).get("message") or f"server {self.server_id}, without a fault message"
            return PlatformState(server.status, failure=fault)
        task = f" (task {server.task_state})" if server.task_state else ""
        return PlatformState(server.status + task, running=server.status == "ACTIVE")

    def platform_address(self) -> str:
        """The fixed or floating address Neutron gave the server (``address`` option)."""
        if self.options.address == "floating":
            if self.floating is None:
                raise ProviderError(f"{self.name}: no floating IP attached")
            return self.floating
        if self._server is None:
            self.platform_state()
        for entries in (getattr(self._server, "addresses", None) or {}).values():
            for entry in entries:
                if entry.get("OS-EXT-IPS:type", "fixed") == "fixed" and entry.get("version", 4) == 4:
                    return entry["addr"]
        raise ProviderError(f"{self.name}: server {self.server_id} has no fixed address")

    @property
    def exists(self) -> bool:
        return self.server_id is not None

    def console_log(self) -> str:
        """Nova's console output (os-getConsoleOutput) so far; kept after the server is gone."""
        server_id = self.server_id
        if server_id is None:
            return self._console
        return self.kept_console(
            lambda: console_text(self._conn().compute.get_server_console_output(server_id).get("output") or "")
        )

    def publish_lifetime(self) -> None:
        """The kept mark and new expiry onto the server's metadata and the tags of its security group, floating IP
        and uploaded image, so a sweep from the platform alone leaves them too; tries each, then raises one error."""
        refused = []
        for resource in self.resources:
            try:
                publish_resource_lifetime(self._conn(), resource)
            except ProviderError as e:
                refused.append(str(e))
        if refused:
            raise ProviderError("; ".join(refused))
