"""A stateful OpenStack (Keystone v3, Nova, Neutron, Glance v2) on 127.0.0.1 for the openstack provider's tests.

The real openstacksdk talks to it over HTTP: version discovery, token auth with a
catalog, microversion negotiation, pagination, waiters and error mapping all run
as against a cloud. The version documents are the ones openstacksdk's own unit
tests use (``openstack/tests/unit/fixtures/*.json``, shipped in its wheel), with
their example hosts replaced by this server; the token is keystoneauth's own
``fixture.v3.Token``. Resource bodies follow the API reference. Every Nova
response is checked, before it leaves, against tempest's response schema for
the request's microversion (:mod:`.tempest_schemas`): one that drifts is answered
500 with tempest's message and recorded as a violation; Neutron and Glance bodies
(tempest has no schemas for them) are compared in a test with the SDK's own
example bodies. Server-create and server-metadata requests are validated by
Nova's own schemas for the requested microversion (:mod:`.nova_schemas`, with
Nova's 400 message); the maximum microversion is a knob (upstream's 2.53, or
current Nova's). Errors come in Nova's
(``{"itemNotFound": {...}}``) and Neutron's (``{"NeutronError": {...}}``) shapes.

Nothing here runs a machine: servers are records. Addresses are taken from the
documentation ranges (192.0.2.0/24, 198.51.100.0/24) and must never be
connected to; a test that needs SSH sends it to a stand-in. Tests see and steer it through the fake protocol
(tests/fakes/server.py): hooks on each call, and the violations it records (its own failures).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import secrets
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..server import Call, FakeHandler, FakeServer, decoded
from . import neutron_rules, nova_schemas, tempest_schemas

PROJECT_ID = uuid.uuid4().hex
USER_ID = uuid.uuid4().hex
MAX_MICROVERSION = "2.53"
"""What compute-version.json (upstream) announces: the fake's default maximum microversion."""
CURRENT_MICROVERSION = "2.104"
"""Nova's maximum at the commit :mod:`.nova_schemas` cites (``_MAX_API_VERSION``), for a fake of a current cloud."""
MAX_SERVER_TAGS = 50
MAX_TAG_LENGTH = 60
"""Nova's limits on server tags (nova.objects.instance / the API schema: no ',' or '/', 1-60 characters)."""
MAX_METADATA_ITEMS = 128
GLANCE_PAGE = 25
"""Glance's default page size (limit_param_default): a longer image list comes in pages linked by ``next``."""
NEUTRON_EXTENSIONS = (
    "security-group",
    "standard-attr-tag",
    "standard-attr-description",
    "standard-attr-timestamp",
    "standard-attr-revisions",
    "router",
    "external-net",
    "project-id",
    "port-security",
    "stateful-security-group",
)
"""The Neutron extensions the fake implements (and lists at /v2.0/extensions)."""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Fault(Exception):
    """An API error: status, and the body in the service's documented shape."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


NOVA_ERRORS = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest"}


def nova_error(status: int, message: str) -> Fault:
    return Fault(status, {NOVA_ERRORS[status]: {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> Fault:
    return Fault(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def glance_error(status: int, message: str) -> Fault:
    title = {400: "Bad Request", 404: "Not Found", 409: "Conflict"}[status]
    return Fault(status, {"code": status, "title": title, "message": message})


@dataclass
class Server:
    id: str
    body: dict[str, Any]
    user_data: bytes
    ports: list[str]
    ready_at: float
    fails_with: str | None = None
    networks: list[str] = field(default_factory=list)
    """The networks to give the server a port on, once Nova allocates them (:attr:`FakeOpenStack.network_seconds`)."""
    groups: list[str] = field(default_factory=list)
    ports_at: float = 0.0
    deleting_since: float | None = None
    console: str = ""
    microversion: tuple[int, int] = (2, 1)
    """The compute microversion the create call asked for."""
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The guest's disks as Nova's libvirt driver maps them (:func:`disk_mapping`)."""
    flavor_id: str = ""
    """The flavor the server was created with (shown by id before 2.47)."""


@dataclass(eq=False)
class FakeOpenStack(FakeServer):
    """The cloud's state and its knobs; ``start()`` puts it on a loopback port (Keystone at ``url``/identity)."""

    build_seconds: float = 0.3
    network_seconds: float = 0.1
    """Nova allocates a server's ports (Neutron lists them) this long after the create call, during BUILD, as a
    compute host does after scheduling; a server whose build fails (no valid host) never gets any."""
    delete_seconds: float = 0.3
    port_release_seconds: float = 0.0
    """Ports (and so security groups) stay in use this long after their server is gone, as with Neutron's
    asynchronous unbinding: deleting the group in that window is a 409."""
    quota_instances: int = 10
    max_microversion: str = MAX_MICROVERSION
    hash_algo: str = "sha512"
    """Glance's ``hashing_algorithm`` (glance/common/config.py, default sha512): the ``os_hash_algo`` of every
    upload, ``os_hash_value`` its hexdigest."""
    """The newest compute microversion announced and served (:data:`CURRENT_MICROVERSION` for a current cloud)."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    servers: dict[str, Server] = field(default_factory=dict)
    keypairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_data: dict[str, bytes] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)
    floating_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Routers: a floating IP reaches a port only through one with a gateway on the floating IP's network and an
    interface on the port's subnet (Neutron's ``get_router_for_floatingip``)."""
    fail_next_build: str | None = None
    """A fault message: the next server created goes BUILD -> ERROR with it."""
    console_after: float = 0.0
    """Seconds after ACTIVE before a server's console output appears (empty until then)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    _counter: int = 0

    # -- lifecycle

    def handler(self) -> type[FakeHandler]:
        return _Handler

    def start(self, tls: Any = None) -> FakeOpenStack:
        """Serve, with the flavors, networks and router a project has (two flavors; ``private`` and the external
        ``public``, joined by ``router1``)."""
        super().start(tls)
        self.flavor("cvm.medium", vcpus=2, ram=4096, disk=20, ephemeral=20)
        self.flavor("m1.small", vcpus=1, ram=2048, disk=20)
        private = self.network("private")
        public = self.network("public", external=True)
        self.router("router1", gateway=public["id"], subnets=private["subnets"])
        return self

    def cloud_config(self) -> dict[str, Any]:
        """A clouds.yaml entry for this fake (password auth, as a real user's would be)."""
        return {
            "auth": {
                "auth_url": f"{self.url}/identity",
                "username": "cernvm",
                "password": "fake-openstack-password",
                "project_name": "cernvm-fixtures",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": 3,
        }

    # -- seeding (what an operator has set up)

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def flavor(self, name: str, *, vcpus: int, ram: int, disk: int, ephemeral: int = 0) -> dict[str, Any]:
        fid = str(len(self.flavors) + 1)
        self.flavors[fid] = {
            "id": fid,
            "name": name,
            "vcpus": vcpus,
            "ram": ram,
            "disk": disk,
            "swap": 0,
            "OS-FLV-EXT-DATA:ephemeral": ephemeral,
            "OS-FLV-DISABLED:disabled": False,
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
            "description": None,
            "extra_specs": {},
            "links": [
                {"href": f"{self.url}/compute/v2.1/flavors/{fid}", "rel": "self"},
                {"href": f"{self.url}/compute/flavors/{fid}", "rel": "bookmark"},
            ],
        }
        return self.flavors[fid]

    def router(self, name: str, *, gateway: str, subnets: list[str]) -> dict[str, Any]:
        """A router with its gateway on the external network ``gateway`` and an interface on each of ``subnets``."""
        rid = str(uuid.uuid4())
        self.routers[rid] = {
            "id": rid,
            "name": name,
            "status": "ACTIVE",
            "admin_state_up": True,
            "external_gateway_info": {"network_id": gateway, "enable_snat": True, "external_fixed_ips": []},
            "_interfaces": list(subnets),  # Neutron's router interface ports, which the fake does not list
            "routes": [],
            "distributed": False,
            "ha": False,
            "flavor_id": None,
            "availability_zones": ["nova"],
            "availability_zone_hints": [],
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "description": "",
            "tags": [],
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 1,
        }
        return self.routers[rid]

    def router_for(self, port: dict[str, Any], external: str) -> str:
        """The router joining the port's subnet to the external network; else Neutron's 404
        (neutron/db/l3_db.py ``get_router_for_floatingip``, neutron-lib ``ExternalGatewayForFloatingIPNotFound``)."""
        subnet = port["fixed_ips"][0]["subnet_id"]
        for rid, router in self.routers.items():
            if router["external_gateway_info"]["network_id"] == external and subnet in router["_interfaces"]:
                return rid
        raise neutron_error(
            404,
            "ExternalGatewayForFloatingIPNotFound",
            f"External network {external} is not reachable from subnet {subnet}.  Therefore, cannot associate "
            f"Port {port['id']} with a Floating IP.",
        )

    def network(self, name: str, *, external: bool = False) -> dict[str, Any]:
        nid = str(uuid.uuid4())
        self.networks[nid] = {
            "id": nid,
            "name": name,
            "status": "ACTIVE",
            "admin_state_up": True,
            "shared": False,
            "router:external": external,
            "subnets": [str(uuid.uuid4())],
            "mtu": 1450,
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "description": "",
            "tags": [],
            "port_security_enabled": True,
            "availability_zones": ["nova"],
            "availability_zone_hints": [],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "is_default": False,
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 1,
        }
        return self.networks[nid]

    def add_image(self, name: str, data: bytes = b"", **properties: Any) -> dict[str, Any]:
        """An image as an operator uploaded it (e.g. CERN's "CernVM 4 - Bootloader ..." images)."""
        image = self._image_record({"name": name, "disk_format": "iso", "container_format": "bare", **properties})
        image["seeded"] = True
        self._store_image(image["id"], data)
        return image

    # -- what tests look at

    def holds(self) -> dict[str, list[str]]:
        """Everything the fake holds that a run creates, by kind (seeded flavors, networks and images excluded)."""
        with self.lock:
            self._settle()
            found = {
                "server": sorted(self.servers),
                "keypair": sorted(self.keypairs),
                "security-group": sorted(g for g, v in self.groups.items() if v["name"] != "default"),
                "port": sorted(self.ports),
                "floating-ip": sorted(self.floating_ips),
                "image": sorted(i for i, v in self.images.items() if not v.get("seeded")),
            }
        return {k: v for k, v in found.items() if v}

    def set_console(self, server_id: str, text: str) -> None:
        with self.lock:
            self.servers[server_id].console = text

    def user_data(self, server_id: str) -> bytes:
        with self.lock:
            return self.servers[server_id].user_data

    # -- time passes

    def _settle(self) -> None:
        """Apply what time has done: builds finish or fail, deletions complete, ports are released."""
        t = time.monotonic()
        for sid, server in list(self.servers.items()):
            body = server.body
            if server.deleting_since is not None and t - server.deleting_since >= self.delete_seconds:
                del self.servers[sid]
                for pid in server.ports:
                    if self.port_release_seconds > 0:
                        self.released[pid] = t + self.port_release_seconds
                    else:
                        self._drop_port(pid)
                continue
            allocating = body["status"] == "BUILD" and server.deleting_since is None and not server.fails_with
            if allocating and t >= server.ports_at and not server.ports:
                server.ports = [self._port(net, sid, server.groups)["id"] for net in server.networks]
            if body["status"] == "BUILD" and t >= server.ready_at:
                if server.fails_with:
                    body.update(status="ERROR", **{"OS-EXT-STS:vm_state": "error", "OS-EXT-STS:task_state": None})
                    body["fault"] = {"code": 500, "created": now(), "message": server.fails_with}
                else:
                    body.update(status="ACTIVE", progress=100, addresses=self._addresses(server))
                    body.update(
                        {
                            "OS-EXT-STS:vm_state": "active",
                            "OS-EXT-STS:task_state": None,
                            "OS-EXT-STS:power_state": 1,
                            "OS-SRV-USG:launched_at": now(),
                        }
                    )
                body["updated"] = now()
        for pid, until in list(self.released.items()):
            if t >= until:
                del self.released[pid]
                self._drop_port(pid)

    def _drop_port(self, pid: str) -> None:
        self.ports.pop(pid, None)
        for fip in self.floating_ips.values():
            if fip["port_id"] == pid:
                fip.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")

    def _addresses(self, server: Server) -> dict[str, list[dict[str, Any]]]:
        addresses: dict[str, list[dict[str, Any]]] = {}
        for pid in server.ports:
            port = self.ports[pid]
            net = self.networks[port["network_id"]]["name"]
            for ip in port["fixed_ips"]:
                addresses.setdefault(net, []).append(
                    {
                        "version": 4,
                        "addr": ip["ip_address"],
                        "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                    }
                )
            for fip in self.floating_ips.values():
                if fip["port_id"] == pid:
                    addresses[net].append(
                        {
                            "version": 4,
                            "addr": fip["floating_ip_address"],
                            "OS-EXT-IPS:type": "floating",
                            "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                        }
                    )
        return addresses

    # -- Keystone

    def token(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        from keystoneauth1.fixture import v3

        identity = request.get("auth", {}).get("identity", {})
        user = identity.get("password", {}).get("user", {})
        if identity.get("methods") != ["password"] or user.get("password") != "fake-openstack-password":
            raise Fault(
                401,
                {
                    "error": {
                        "code": 401,
                        "title": "Unauthorized",
                        "message": "The request you have made requires authentication.",
                    }
                },
            )
        token = v3.Token(
            user_id=USER_ID,
            user_name=user.get("name"),
            project_id=PROJECT_ID,
            project_name="cernvm-fixtures",
            project_domain_name="Default",
            user_domain_name="Default",
        )
        token.add_role(name="member")
        for service_type, name, path in (
            ("compute", "nova", "/compute/v2.1"),
            ("network", "neutron", "/network"),
            ("image", "glance", "/image"),
            ("identity", "keystone", "/identity"),
        ):
            url = self.url + path
            token.add_service(service_type, name=name).add_standard_endpoints(
                public=url, internal=url, admin=url, region="RegionOne"
            )
        return uuid.uuid4().hex, token

    # -- Nova

    def server_view(self, server: Server, microversion: tuple[int, int], detail: bool = False) -> dict[str, Any]:
        """A server as ``GET /servers/{id}`` (or, ``detail``, as an item of ``/servers/detail``) shows it at
        ``microversion``: the fields Nova's views add at 2.9, 2.16, 2.19, 2.63, 2.71, 2.73, 2.96, 2.98 and 2.100, the
        flavor's id and link before 2.47 (tempest's response schemas for each range hold the fake to it)."""
        body = dict(server.body)
        for key, since in (("locked", (2, 9)), ("host_status", (2, 16)), ("description", (2, 19))):
            if microversion < since:
                body.pop(key)
        if microversion < (2, 63):
            body.pop("trusted_image_certificates")
        if microversion < (2, 47):  # the flavor's id and links; its copy in the server since 2.47
            flavor = self.flavors[server.flavor_id]
            body["flavor"] = {"id": flavor["id"], "links": [flavor["links"][1]]}
        if microversion >= (2, 71) and not detail:
            body["server_groups"] = []
        if microversion >= (2, 73):
            body["locked_reason"] = None
        if microversion >= (2, 96):
            body["pinned_availability_zone"] = None
        if microversion >= (2, 98):
            image = self.images.get(body["image"]["id"], {})
            keys = ("container_format", "disk_format", "min_disk", "min_ram")
            properties = {k: str(image[k]) for k in keys if image.get(k) is not None}
            body["image"] = {**body["image"], "properties": properties}
        if microversion >= (2, 100):
            body["scheduler_hints"] = {}
        if microversion < (2, 26):
            body.pop("tags", None)
        if microversion < (2, 3):
            body = {k: v for k, v in body.items() if not k.startswith("OS-EXT-SRV-ATTR:") or k.endswith("host")}
        return body

    def create_server(self, body: dict[str, Any], microversion: tuple[int, int]) -> Server:
        """``POST /servers``: Nova's own schema for the microversion first (400 with its message), then the rest."""
        problem = nova_schemas.problem(nova_schemas.server_create(microversion), body)
        if problem is not None:
            raise nova_error(400, problem)
        req = body["server"]
        live = [s for s in self.servers.values() if s.deleting_since is None]
        if len(live) >= self.quota_instances:
            raise nova_error(
                403,
                f"Quota exceeded for instances: Requested 1, but already used {len(live)} of "
                f"{self.quota_instances} instances",
            )
        flavor = self.flavors.get(str(req["flavorRef"]))
        if flavor is None:
            raise nova_error(400, f"Flavor {req['flavorRef']} could not be found.")
        image = self.images.get(req.get("imageRef", ""))
        if image is None or image["status"] != "active":
            raise nova_error(400, f"Image {req.get('imageRef')} could not be found.")
        self._check_flavor_disk(flavor, image)
        if req.get("key_name") and req["key_name"] not in self.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        tags = req.get("tags", [])
        metadata = req.get("metadata", {})
        self._check_metadata(metadata)
        user_data = base64.b64decode(req["user_data"], validate=True) if req.get("user_data") else b""
        if len(req.get("user_data") or "") > 65535:
            raise nova_error(
                400, "User data too large. User data must be no larger than 65535 bytes once base64 encoded."
            )
        group_ids = []
        for ref in req.get("security_groups", [{"name": "default"}]):
            found = [g for g in self.groups.values() if ref["name"] in (g["id"], g["name"])]
            if len(found) != 1:
                raise nova_error(400, f"Security group {ref['name']} not found for project {PROJECT_ID}.")
            group_ids.append(found[0]["id"])
        networks = req.get("networks", "auto")
        if networks == "auto":
            networks = [{"uuid": next(n for n in self.networks.values() if not n["router:external"])["id"]}]
        elif networks == "none":
            networks = []
        sid = str(uuid.uuid4())
        for net in networks:
            if net.get("uuid") not in self.networks:
                raise nova_error(400, f"Network {net.get('uuid')} could not be found.")
        failure, self.fail_next_build = self.fail_next_build, None
        disks = disk_mapping(image, flavor, config_drive=req.get("config_drive") in nova_schemas.TRUE)
        body = {
            "id": sid,
            "name": req["name"],
            "status": "BUILD",
            "tenant_id": PROJECT_ID,
            "user_id": USER_ID,
            "metadata": metadata,
            "tags": tags,
            "hostId": hashlib.sha224(sid.encode()).hexdigest(),
            "image": {
                "id": image["id"],
                "links": [{"href": f"{self.url}/compute/images/{image['id']}", "rel": "bookmark"}],
            },
            "flavor": {
                "vcpus": flavor["vcpus"],
                "ram": flavor["ram"],
                "disk": flavor["disk"],
                "ephemeral": flavor["OS-FLV-EXT-DATA:ephemeral"],
                "swap": 0,
                "original_name": flavor["name"],
                "extra_specs": {},
            },
            "created": now(),
            "updated": now(),
            "addresses": {},
            "accessIPv4": "",
            "accessIPv6": "",
            "links": [
                {"href": f"{self.url}/compute/v2.1/servers/{sid}", "rel": "self"},
                {"href": f"{self.url}/compute/servers/{sid}", "rel": "bookmark"},
            ],
            "OS-DCF:diskConfig": "MANUAL",
            "progress": 0,
            "OS-EXT-AZ:availability_zone": "nova",
            "config_drive": "True" if "disk.config" in disks else "",
            "key_name": req.get("key_name"),
            "OS-SRV-USG:launched_at": None,
            "OS-SRV-USG:terminated_at": None,
            "security_groups": [{"name": self.groups[g]["name"]} for g in group_ids],
            "OS-EXT-STS:task_state": "spawning",
            "OS-EXT-STS:vm_state": "building",
            "OS-EXT-STS:power_state": 0,
            "os-extended-volumes:volumes_attached": [],
            "locked": False,
            "description": None,
            "host_status": "UP",
            "OS-EXT-SRV-ATTR:host": "fake-compute-1",
            "OS-EXT-SRV-ATTR:hypervisor_hostname": "fake-compute-1.localdomain",
            "OS-EXT-SRV-ATTR:instance_name": f"instance-{self._next():08x}",
            "OS-EXT-SRV-ATTR:hostname": req["name"],
            "OS-EXT-SRV-ATTR:reservation_id": f"r-{uuid.uuid4().hex[:8]}",
            "OS-EXT-SRV-ATTR:launch_index": 0,
            "OS-EXT-SRV-ATTR:kernel_id": "",
            "OS-EXT-SRV-ATTR:ramdisk_id": "",
            "OS-EXT-SRV-ATTR:root_device_name": "/dev/" + disks["root"]["dev"],
            "OS-EXT-SRV-ATTR:user_data": req.get("user_data"),
            "trusted_image_certificates": None,
        }
        created = time.monotonic()
        server = Server(
            sid,
            body,
            user_data,
            [],
            created + self.build_seconds,
            failure,
            networks=[net["uuid"] for net in networks],
            groups=group_ids,
            ports_at=created + min(self.network_seconds, self.build_seconds),
            microversion=microversion,
            disks=disks,
            flavor_id=flavor["id"],
        )
        self.servers[sid] = server
        return server

    def _check_flavor_disk(self, flavor: dict[str, Any], image: dict[str, Any]) -> None:
        """nova/compute/api.py ``_validate_flavor_image_nostatus`` (lines 866-889 at the commit nova_schemas cites)
        for an image-backed server: the image fits the flavor's root disk; a zero-disk flavor is for volume-backed
        servers only (policy ``create:zero_disk_flavor``, admin by default); messages from nova/exception.py
        1338-1357."""
        size = flavor["disk"] * 1024**3
        image_size, min_disk = int(image.get("size") or 0), int(image.get("min_disk") or 0) * 1024**3
        if size == 0:
            raise nova_error(403, "Only volume-backed servers are allowed for flavors with zero disk.")
        if image_size > size:
            raise nova_error(
                400,
                f"Flavor's disk is too small for requested image. Flavor disk is {size} bytes, "
                f"image is {image_size} bytes.",
            )
        if min_disk > size:
            raise nova_error(
                400,
                "Flavor's disk is smaller than the minimum size specified in image metadata. Flavor disk is "
                f"{size} bytes, minimum size is {min_disk} bytes.",
            )

    def _check_tags(self, tags: list[str]) -> None:
        if len(tags) > MAX_SERVER_TAGS:
            raise nova_error(400, f"The number of tags exceeded the per-server limit {MAX_SERVER_TAGS}")
        for tag in tags:
            if not 1 <= len(tag) <= MAX_TAG_LENGTH or "," in tag or "/" in tag:
                raise nova_error(
                    400,
                    f"Invalid input for field/attribute tags. Value: {tag}. "
                    f"'{tag}' does not match '^[^,/]*$' or is longer than {MAX_TAG_LENGTH}",
                )

    def _check_metadata(self, metadata: dict[str, Any]) -> None:
        """The metadata quota (keys and values are Nova's schema's business)."""
        if len(metadata) > MAX_METADATA_ITEMS:
            raise nova_error(403, f"Quota exceeded for metadata_items: allowed {MAX_METADATA_ITEMS}")

    def absolute_limits(self, microversion: tuple[int, int]) -> dict[str, int]:
        """``GET /limits``' absolute limits at ``microversion`` (nova/api/openstack/compute/views/limits.py): Nova's
        default quotas, the instance quota and usage from the fake; 2.36 dropped the network ones, 2.39
        ``maxImageMeta``, 2.57 the personality ones."""
        live = [s for s in self.servers.values() if s.deleting_since is None]
        limits = {
            "maxImageMeta": MAX_METADATA_ITEMS,
            "maxPersonality": 5,
            "maxPersonalitySize": 10240,
            "maxSecurityGroupRules": 20,
            "maxSecurityGroups": 10,
            "maxServerMeta": MAX_METADATA_ITEMS,
            "maxTotalCores": 20,
            "maxTotalFloatingIps": 10,
            "maxTotalInstances": self.quota_instances,
            "maxTotalKeypairs": 100,
            "maxTotalRAMSize": 51200,
            "maxServerGroups": 10,
            "maxServerGroupMembers": 10,
            "totalCoresUsed": sum(s.body["flavor"]["vcpus"] for s in live),
            "totalFloatingIpsUsed": 0,
            "totalInstancesUsed": len(live),
            "totalRAMUsed": sum(s.body["flavor"]["ram"] for s in live),
            "totalSecurityGroupsUsed": 0,
            "totalServerGroupsUsed": 0,
        }
        dropped = {
            (2, 36): (
                "maxSecurityGroupRules",
                "maxSecurityGroups",
                "maxTotalFloatingIps",
                "totalFloatingIpsUsed",
                "totalSecurityGroupsUsed",
            ),
            (2, 39): ("maxImageMeta",),
            (2, 57): ("maxPersonality", "maxPersonalitySize"),
        }
        gone = {key for since, keys in dropped.items() if microversion >= since for key in keys}
        return {k: v for k, v in limits.items() if k not in gone}

    def flavor_view(self, flavor: dict[str, Any], microversion: tuple[int, int], detail: bool = True) -> dict[str, Any]:
        """A flavor as ``GET /flavors/{id}`` or ``/flavors/detail`` (``detail``), or an item of ``/flavors``, shows
        it at ``microversion`` (nova/api/openstack/compute/views/flavors.py): ``description`` from 2.55 on,
        ``extra_specs`` from 2.61 on."""
        body = dict(flavor) if detail else {k: flavor[k] for k in ("id", "name", "links", "description")}
        if microversion < (2, 55):
            body.pop("description")
        if microversion < (2, 61):
            body.pop("extra_specs", None)
        return body

    def keypair_view(self, kp: dict[str, Any], microversion: tuple[int, int], view: str = "show") -> dict[str, Any]:
        """A key pair as Nova's view builder shows it (nova/api/openstack/compute/views/keypairs.py): ``index``
        (list items) name, public key and fingerprint; ``create`` adds the user; ``show`` every field; ``type``
        from 2.2 on."""
        keys = ["name", "public_key", "fingerprint"]
        if view in ("create", "show"):
            keys.append("user_id")
        if view == "show":
            keys += ["created_at", "deleted", "deleted_at", "id", "updated_at"]
        if microversion >= (2, 2):
            keys.append("type")
        return {k: kp[k] for k in keys}

    def create_keypair(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("name", "")
        if not re.match(r"^[\w\-. @]{1,255}$", name):
            raise nova_error(400, "Keypair data is invalid: Keypair name contains unsafe characters")
        if name in self.keypairs:
            raise nova_error(409, f"Key pair '{name}' already exists.")
        public = req.get("public_key")
        if not public:
            raise nova_error(400, "the fake only imports public keys (no key generation)")
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_ssh_public_key(public.encode())
        except ValueError:
            raise nova_error(400, "Keypair data is invalid: failed to generate fingerprint") from None
        raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
        digest = hashlib.md5(base64.b64decode(raw), usedforsecurity=False).hexdigest()
        self.keypairs[name] = {
            "name": name,
            "public_key": public,
            "type": req.get("type", "ssh"),
            "user_id": USER_ID,
            "fingerprint": ":".join(digest[i : i + 2] for i in range(0, 32, 2)),
            "created_at": now(),
            "updated_at": None,
            "deleted_at": None,
            "deleted": False,
            "id": self._next(),
        }
        return self.keypairs[name]

    # -- Neutron

    def _port(self, network_id: str, device_id: str, groups: list[str]) -> dict[str, Any]:
        pid = str(uuid.uuid4())
        n = self._next()
        self.ports[pid] = {
            "id": pid,
            "name": "",
            "network_id": network_id,
            "device_id": device_id,
            "device_owner": "compute:nova",
            "mac_address": f"fa:16:3e:00:{n // 256:02x}:{n % 256:02x}",
            "admin_state_up": True,
            "status": "ACTIVE",
            "fixed_ips": [
                {"subnet_id": self.networks[network_id]["subnets"][0], "ip_address": f"192.0.2.{n % 250 + 2}"}
            ],
            "security_groups": groups,
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "description": "",
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "port_security_enabled": True,
            "tags": [],
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 1,
            "ip_allocation": "immediate",
        }
        return self.ports[pid]

    def default_group(self) -> None:
        if not any(g["name"] == "default" for g in self.groups.values()):
            self.create_group({"name": "default", "description": "Default security group"})

    def create_group(self, req: dict[str, Any]) -> dict[str, Any]:
        gid = str(uuid.uuid4())
        group = {
            "id": gid,
            "name": req.get("name", ""),
            "description": req.get("description", ""),
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "stateful": req.get("stateful", True),
            "shared": False,
            "tags": list(req.get("tags", [])),
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 1,
            "security_group_rules": [],
        }
        self.groups[gid] = group
        for ethertype in ("IPv4", "IPv6"):
            self.create_rule({"security_group_id": gid, "direction": "egress", "ethertype": ethertype})
        return group

    def group_view(self, group: dict[str, Any]) -> dict[str, Any]:
        rules = [r for r in self.rules.values() if r["security_group_id"] == group["id"]]
        return {**group, "security_group_rules": rules}

    def create_rule(self, req: dict[str, Any]) -> dict[str, Any]:
        """Neutron's checks (:mod:`.neutron_rules`: conversions, rule validation, the group, duplicates), then the
        rule."""
        try:
            checked = neutron_rules.converted(req)
            neutron_rules.validate(checked)
            gid = checked["security_group_id"]
            if gid not in self.groups:
                raise neutron_rules.Refused(404, "SecurityGroupNotFound", f"Security group {gid} does not exist")
            neutron_rules.check_duplicate(checked, [r for r in self.rules.values() if r["security_group_id"] == gid])
        except neutron_rules.Refused as refused:
            raise neutron_error(refused.status, refused.kind, refused.message) from None
        prefix = checked["remote_ip_prefix"]
        rule = {
            "id": str(uuid.uuid4()),
            "security_group_id": gid,
            "direction": checked["direction"],
            "ethertype": checked["ethertype"],
            "protocol": checked["protocol"],
            "port_range_min": checked["port_range_min"],
            "port_range_max": checked["port_range_max"],
            "remote_ip_prefix": prefix,
            "remote_group_id": checked["remote_group_id"],
            "remote_address_group_id": checked["remote_address_group_id"],
            "normalized_cidr": str(ipaddress.ip_network(prefix, strict=False)) if prefix else None,
            "description": req.get("description", ""),
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "tags": [],
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 0,
            "belongs_to_default_sg": False,
        }
        self.rules[rule["id"]] = rule
        return rule

    def delete_group(self, gid: str) -> None:
        if gid not in self.groups:
            raise neutron_error(404, "SecurityGroupNotFound", f"Security group {gid} does not exist")
        users = [p for p in self.ports.values() if gid in p["security_groups"]]
        if users:
            raise neutron_error(
                409, "SecurityGroupInUse", f"Security Group {gid} in use. Ports: {', '.join(p['id'] for p in users)}."
            )
        del self.groups[gid]
        for rid in [r for r, v in self.rules.items() if v["security_group_id"] == gid]:
            del self.rules[rid]

    def create_floating_ip(self, req: dict[str, Any]) -> dict[str, Any]:
        net = self.networks.get(req.get("floating_network_id", ""))
        if net is None or not net["router:external"]:
            raise neutron_error(
                404,
                "ExternalNetworkNotFound" if net is None else "BadRequest",
                f"Network {req.get('floating_network_id')} is not a valid external network",
            )
        fid = str(uuid.uuid4())
        port = self.ports.get(req.get("port_id") or "")
        if req.get("port_id") and port is None:
            raise neutron_error(404, "PortNotFound", f"Port {req['port_id']} could not be found.")
        router = self.router_for(port, net["id"]) if port else None
        self.floating_ips[fid] = {
            "id": fid,
            "floating_network_id": net["id"],
            "floating_ip_address": f"198.51.100.{self._next() % 250 + 2}",
            "port_id": port and port["id"],
            "fixed_ip_address": port and port["fixed_ips"][0]["ip_address"],
            "router_id": router,
            "status": "ACTIVE" if port else "DOWN",
            "description": req.get("description", ""),
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "tags": list(req.get("tags", [])),
            "created_at": now(),
            "updated_at": now(),
            "revision_number": 0,
            "port_details": None,
            "qos_policy_id": None,
            "dns_domain": "",
            "dns_name": "",
            "subnet_id": None,
        }
        for server in self.servers.values():
            if port and port["id"] in server.ports and server.body["status"] == "ACTIVE":
                server.body["addresses"] = self._addresses(server)
        return self.floating_ips[fid]

    # -- Glance

    def _image_record(self, req: dict[str, Any]) -> dict[str, Any]:
        iid = req.get("id") or str(uuid.uuid4())
        core = {
            "name",
            "disk_format",
            "container_format",
            "visibility",
            "protected",
            "min_disk",
            "min_ram",
            "tags",
            "id",
            "os_hidden",
        }
        if req.get("disk_format") not in (
            None,
            "ami",
            "ari",
            "aki",
            "vhd",
            "vhdx",
            "vmdk",
            "raw",
            "qcow2",
            "vdi",
            "iso",
            "ploop",
        ):
            raise glance_error(400, f"Invalid value '{req['disk_format']}' for parameter 'disk_format'")
        image = {
            "id": iid,
            "name": req.get("name"),
            "status": "queued",
            "visibility": req.get("visibility", "shared"),
            "protected": req.get("protected", False),
            "os_hidden": req.get("os_hidden", False),
            "disk_format": req.get("disk_format"),
            "container_format": req.get("container_format"),
            "min_disk": req.get("min_disk", 0),
            "min_ram": req.get("min_ram", 0),
            "size": None,
            "virtual_size": None,
            "checksum": None,
            "os_hash_algo": None,
            "os_hash_value": None,
            "owner": PROJECT_ID,
            "tags": list(req.get("tags", [])),
            "created_at": now(),
            "updated_at": now(),
            "self": f"/v2/images/{iid}",
            "file": f"/v2/images/{iid}/file",
            "schema": "/v2/schemas/image",
            "locations": [],
            "stores": "",
            **{k: v for k, v in req.items() if k not in core},
        }
        self.images[iid] = image
        return image

    def _store_image(self, iid: str, data: bytes) -> None:
        self.image_data[iid] = data
        self.images[iid].update(
            status="active",
            size=len(data),
            checksum=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            os_hash_algo=self.hash_algo,
            os_hash_value=hashlib.new(self.hash_algo, data).hexdigest(),
            updated_at=now(),
            stores="file",
        )

    def image_view(self, image: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in image.items() if k != "seeded"}


def disk_mapping(image: dict[str, Any], flavor: dict[str, Any], config_drive: bool) -> dict[str, dict[str, Any]]:
    """The disks Nova's libvirt driver gives an image-backed server on x86_64 (no block device mapping), as
    nova/virt/libvirt/blockinfo.py ``_get_disk_mapping`` builds them (lines 567-665 at the commit nova_schemas
    cites): an ISO image is the root device as a cdrom on the cdrom bus (``get_root_info`` 427-451: IDE, since
    x86_64's default machine type is still 'pc', nova/virt/libvirt/utils.py 671-682), any other image a virtio
    disk; the root holds the image in a disk of the flavor's size (libvirt driver ``_create_and_inject_local_root``);
    the flavor's ephemeral disk is the next virtio disk (``disk.local``), the config drive the next cdrom."""
    iso = image.get("disk_format") == "iso"
    root = {"type": "cdrom" if iso else "disk", "bus": "ide" if iso else "virtio", "dev": "hda" if iso else "vda"}
    mapping = {"root": {**root, "boot_index": "1", "image": image["id"], "size_gb": flavor["disk"]}}
    mapping["disk"] = mapping["root"]
    used = {root["dev"]}

    def next_dev(bus: str) -> str:
        prefix = {"ide": "hd", "virtio": "vd"}[bus]
        dev = next(f"{prefix}{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"{prefix}{c}" not in used)
        used.add(dev)
        return dev

    ephemeral = flavor["OS-FLV-EXT-DATA:ephemeral"]
    if ephemeral:
        mapping["disk.local"] = {"type": "disk", "bus": "virtio", "dev": next_dev("virtio"), "size_gb": ephemeral}
    if config_drive:
        mapping["disk.config"] = {"type": "cdrom", "bus": "ide", "dev": next_dev("ide")}
    return mapping


def _microversion(headers: Any, maximum: str) -> tuple[int, int]:
    value = headers.get("OpenStack-API-Version", "") or ""
    legacy = headers.get("X-OpenStack-Nova-API-Version", "") or ""
    match = re.match(r"compute\s+(\d+)\.(\d+)", value) or re.match(r"(\d+)\.(\d+)", legacy)
    top = (int(maximum.split(".")[0]), int(maximum.split(".")[1]))
    if value.strip().endswith("latest"):
        return top
    if not match:
        return (2, 1)
    wanted = (int(match[1]), int(match[2]))
    if wanted > top or wanted < (2, 1):
        message = (
            f"Version {wanted[0]}.{wanted[1]} is not supported by the API. Minimum is 2.1 and maximum is {maximum}."
        )
        raise Fault(406, {"computeFault": {"code": 406, "message": message}})
    return wanted


def _compute_versions(cloud: FakeOpenStack) -> dict[str, Any]:
    """Upstream's compute version document, its v2.1 entry announcing the fake's maximum microversion."""
    doc = json.loads(_version_doc("compute-version.json", cloud.url, "compute"))
    for version in doc["versions"]:
        if version["id"] == "v2.1":
            version["version"] = cloud.max_microversion
    return doc


def _version_doc(name: str, base: str, service: str) -> str:
    """An upstream fixture with its example host replaced by this server's."""
    import openstack

    text = (Path(openstack.__file__).parent / "tests" / "unit" / "fixtures" / name).read_text()
    return re.sub(rf"https?://{service}\.example\.com", f"{base}/{service}", text)


class _Handler(FakeHandler):
    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        if status != 204:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def answer(self) -> None:
        cloud: FakeOpenStack = self.fake
        method = self.command
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        raw = self.read_body()
        if method == "POST" and path.startswith("/_test/console/"):  # not OpenStack: what a stand-in prints
            with cloud.lock:
                server = cloud.servers.get(path.rsplit("/", 1)[-1])
                if server is not None:
                    server.console += raw.decode("utf-8", "replace")
            self._send(204 if server is not None else 404)
            return
        with cloud.lock:
            cloud.requests.append((method, parts.path))
            try:
                if (
                    not path.startswith("/identity")
                    and self.headers.get("X-Auth-Token") is None
                    and path not in ("/compute", "/compute/v2.1", "/network", "/image")
                ):
                    raise Fault(401, {"error": {"code": 401, "message": "no token"}})
                cloud._settle()
                cloud.called(Call(method, parts.path, decoded(raw)))
                status, body, headers = route(cloud, method, path, query, raw, self.headers)
            except Fault as fault:
                status, body, headers = fault.status, fault.body, {}
            except Exception as e:  # noqa: BLE001 - a bug in the fake answers 500, as a cloud would
                cloud.violations.append(traceback.format_exc())
                status, body, headers = 500, {"computeFault": {"code": 500, "message": repr(e)}}, {}
        if path.startswith("/compute"):
            served = _safe_mv(self.headers, cloud.max_microversion)
            headers = {
                "OpenStack-API-Version": f"compute {served[0]}.{served[1]}",
                "Vary": "OpenStack-API-Version",
                **headers,
            }
            try:
                found = tempest_schemas.problem(method, path[len("/compute") :], served, status, body, headers)
            except Exception:  # noqa: BLE001 - a bug in the check is the fake's own failure
                found = traceback.format_exc()
            if found is not None:  # the fake drifted from Nova: the test that caused it fails with tempest's message
                with cloud.lock:
                    cloud.violations.append(f"response to {method} {parts.path}: {found}")
                status, body, headers = 500, {"computeFault": {"code": 500, "message": found}}, {}
        self._send(status, body, headers)


def _safe_mv(headers: Any, maximum: str) -> tuple[int, int]:
    try:
        return _microversion(headers, maximum)
    except Fault:
        return (2, 1)


def route(
    cloud: FakeOpenStack, method: str, path: str, query: dict[str, list[str]], raw: bytes, headers: Any
) -> tuple[int, Any, dict[str, str]]:
    """Dispatch one request; returns (status, body, extra headers)."""
    base = cloud.url
    req: Any = {}
    if raw and "json" in (headers.get("Content-Type") or ""):
        req = json.loads(raw)

    # Keystone
    if path == "/identity" and method == "GET":
        return 300, json.loads(_version_doc("discovery.json", base, "identity")), {}
    if path == "/identity/v3" and method == "GET":
        doc = json.loads(_version_doc("discovery.json", base, "identity"))["versions"]["values"][0]
        return 200, {"version": doc}, {}
    if path == "/identity/v3/auth/tokens" and method == "POST":
        token_id, token = cloud.token(req)
        return 201, token, {"X-Subject-Token": token_id}

    # Nova
    if path == "/compute" and method == "GET":
        return 200, _compute_versions(cloud), {}
    if path.startswith("/compute/v2.1"):
        mv = _microversion(headers, cloud.max_microversion)
        return _nova(cloud, method, path[len("/compute/v2.1") :] or "/", req, query, mv)

    # Neutron
    if path == "/network" and method == "GET":
        return (
            200,
            {
                "versions": [
                    {"id": "v2.0", "status": "CURRENT", "links": [{"href": f"{base}/network/v2.0/", "rel": "self"}]}
                ]
            },
            {},
        )
    if path.startswith("/network/v2.0"):
        return _neutron(cloud, method, path[len("/network/v2.0") :] or "/", req, query)

    # Glance
    if path == "/image" and method == "GET":
        return 300, json.loads(_version_doc("image-version.json", base, "image")), {}
    if path.startswith("/image/v2"):
        return _glance(cloud, method, path[len("/image/v2") :] or "/", req, raw, query)
    raise Fault(404, {"error": {"code": 404, "message": f"{method} {path}: no such resource"}})


def _filtered(items: list[dict[str, Any]], query: dict[str, list[str]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    for key in keys:
        if key in query:
            items = [i for i in items if str(i.get(key)) in query[key]]
    return items


def _paged(items: list[dict[str, Any]], query: dict[str, list[str]], key: str) -> list[dict[str, Any]]:
    marker = (query.get("marker") or [None])[0]
    if marker is not None:
        ids = [i[key] for i in items]
        if marker not in ids:
            raise nova_error(400, f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1 :]
    limit = (query.get("limit") or [None])[0]
    return items[: int(limit)] if limit else items


def _nova(
    cloud: FakeOpenStack, method: str, path: str, req: Any, query: dict[str, list[str]], mv: tuple[int, int]
) -> tuple[int, Any, dict[str, str]]:
    base = cloud.url
    if path == "/" and method == "GET":
        doc = _compute_versions(cloud)["versions"][1]
        return 200, {"version": doc}, {}
    m = re.match(r"^/servers(?:/(detail|[^/]+))?(?:/(action|tags|metadata|os-interface))?(?:/([^/]+))?$", path)
    if m:
        sid, sub, item = m.groups()
        if sid in (None, "detail"):
            if method == "POST" and sid is None:
                server = cloud.create_server(req, mv)
                return (
                    202,
                    {
                        "server": {
                            "id": server.id,
                            "links": server.body["links"],
                            "OS-DCF:diskConfig": "MANUAL",
                            "security_groups": server.body["security_groups"],
                            # Nova's default ([api]enable_instance_password): a generated root password, which
                            # CernVM ignores (its users come from the context)
                            "adminPass": secrets.token_urlsafe(9),
                        }
                    },
                    {"Location": f"{base}/compute/v2.1/servers/{server.id}"},
                )
            if method == "GET":
                servers = [cloud.server_view(s, mv, detail=True) for s in cloud.servers.values()]
                servers = _filtered(servers, query, ("status",))
                if "name" in query:  # Nova matches the name as a regular expression
                    servers = [s for s in servers if re.search(query["name"][0], s["name"])]
                for tag in (query.get("tags") or [""])[0].split(",") if "tags" in query else []:
                    servers = [s for s in servers if tag in s.get("tags", [])]
                if "tags-any" in query:
                    wanted = set(query["tags-any"][0].split(","))
                    servers = [s for s in servers if wanted & set(s.get("tags", []))]
                servers = _paged(servers, query, "id")
                if sid is None:
                    servers = [{"id": s["id"], "name": s["name"], "links": s["links"]} for s in servers]
                return 200, {"servers": servers}, {}
        server = cloud.servers.get(sid or "")
        if server is None:
            raise nova_error(404, f"Instance {sid} could not be found.")
        if sub is None:
            if method == "GET":
                return 200, {"server": cloud.server_view(server, mv)}, {}
            if method == "DELETE":
                if server.deleting_since is None:
                    server.deleting_since = time.monotonic()
                    server.body["OS-EXT-STS:task_state"] = "deleting"
                return 204, None, {}
        if sub == "action" and method == "POST":
            if "os-getConsoleOutput" in req:
                if server.body["status"] != "ACTIVE":
                    raise nova_error(
                        409,
                        f"Cannot 'get_console_output' instance {sid} while it is in vm_state "
                        f"{server.body['OS-EXT-STS:vm_state']}",
                    )
                launched = cloud.servers[sid].ready_at
                text = server.console if time.monotonic() - launched >= cloud.console_after else ""
                length = req["os-getConsoleOutput"].get("length")
                if length is not None:
                    text = "\n".join(text.splitlines()[-int(length) :])
                return 200, {"output": text}, {}
            raise nova_error(400, f"unsupported action {list(req)}")
        if sub == "tags":
            if mv < (2, 26):
                raise nova_error(404, "tags need microversion 2.26")
            if method == "GET" and item is None:
                return 200, {"tags": server.body["tags"]}, {}
            if method == "PUT" and item is None:
                cloud._check_tags(req.get("tags", []))
                server.body["tags"] = list(req.get("tags", []))
                return 200, {"tags": server.body["tags"]}, {}
            if method == "PUT":  # nova/api/openstack/compute/server_tags.py: 201, or 204 if it is there; a Location
                location = {"Location": f"{base}/compute/v2.1/servers/{sid}/tags/{item}"}
                if item in server.body["tags"]:
                    return 204, None, location
                cloud._check_tags(server.body["tags"] + [item])
                server.body["tags"].append(item)
                return 201, None, location
        if sub == "metadata":
            if method == "GET":
                return 200, {"metadata": server.body["metadata"]}, {}
            if method == "POST":
                problem = nova_schemas.problem(nova_schemas.server_metadata, req)
                if problem is not None:
                    raise nova_error(400, problem)
                merged = {**server.body["metadata"], **req.get("metadata", {})}
                cloud._check_metadata(merged)
                server.body["metadata"] = merged
                return 200, {"metadata": merged}, {}
    m = re.match(r"^/os-keypairs(?:/([^/]+))?$", path)
    if m:
        name = m.group(1)
        new = mv >= (2, 2)  # 2.2 made create 201 and delete 204 (were 200 and 202)
        if name is None and method == "POST":
            made = cloud.create_keypair(req.get("keypair", {}))
            return 201 if new else 200, {"keypair": cloud.keypair_view(made, mv, "create")}, {}
        if name is None and method == "GET":
            listed = [{"keypair": cloud.keypair_view(k, mv, "index")} for k in cloud.keypairs.values()]
            return 200, {"keypairs": listed}, {}
        name = unquote(name or "")
        if name not in cloud.keypairs:
            raise nova_error(404, f"Keypair {name} not found for user {USER_ID}")
        if method == "GET":
            return 200, {"keypair": cloud.keypair_view(cloud.keypairs[name], mv)}, {}
        if method == "DELETE":
            del cloud.keypairs[name]
            return 204 if new else 202, None, {}
    m = re.match(r"^/flavors(?:/(detail|[^/]+))?(/os-extra_specs)?$", path)
    if m and method == "GET":
        fid, specs = m.groups()
        if fid in (None, "detail"):
            flavors = _paged(list(cloud.flavors.values()), query, "id")
            return 200, {"flavors": [cloud.flavor_view(f, mv, detail=fid is not None) for f in flavors]}, {}
        if fid not in cloud.flavors:
            raise nova_error(404, f"Flavor {fid} could not be found.")
        if specs:
            return 200, {"extra_specs": {}}, {}
        return 200, {"flavor": cloud.flavor_view(cloud.flavors[fid], mv)}, {}
    if path == "/limits" and method == "GET":
        return 200, {"limits": {"rate": [], "absolute": cloud.absolute_limits(mv)}}, {}
    raise nova_error(404, f"The resource could not be found: {method} {path}")


def _neutron(
    cloud: FakeOpenStack, method: str, path: str, req: Any, query: dict[str, list[str]]
) -> tuple[int, Any, dict[str, str]]:
    cloud.default_group()
    if path == "/extensions" and method == "GET":
        return (
            200,
            {
                "extensions": [
                    {"alias": a, "name": a, "description": "", "links": [], "updated": "2016-01-01T00:00:00-00:00"}
                    for a in NEUTRON_EXTENSIONS
                ]
            },
            {},
        )
    collections = "networks|security-groups|security-group-rules|ports|floatingips|routers"
    m = re.match(rf"^/({collections})(?:/([^/]+))?(?:/tags(?:/([^/]+))?)?$", path)
    if not m:
        raise neutron_error(404, "HTTPNotFound", f"The resource could not be found: {method} {path}")
    collection, rid, tag = m.groups()
    tables = {
        "networks": (cloud.networks, "network", "NetworkNotFound"),
        "security-groups": (cloud.groups, "security_group", "SecurityGroupNotFound"),
        "security-group-rules": (cloud.rules, "security_group_rule", "SecurityGroupRuleNotFound"),
        "ports": (cloud.ports, "port", "PortNotFound"),
        "floatingips": (cloud.floating_ips, "floatingip", "FloatingIPNotFound"),
        "routers": (cloud.routers, "router", "RouterNotFound"),
    }
    table, key, missing = tables[collection]
    views = {"security-groups": cloud.group_view, "routers": lambda r: {k: v for k, v in r.items() if k[0] != "_"}}
    view = views.get(collection, dict)
    if rid is None:
        if method == "GET":
            items = [view(v) for v in table.values()]
            items = _filtered(
                items,
                query,
                (
                    "name",
                    "id",
                    "network_id",
                    "device_id",
                    "security_group_id",
                    "router:external",
                    "floating_network_id",
                    "port_id",
                    "description",
                ),
            )
            if "router:external" in query:
                wanted = query["router:external"][0].lower() == "true"
                items = [i for i in cloud.networks.values() if i["router:external"] == wanted]
            for tag_ in (query.get("tags") or [""])[0].split(",") if "tags" in query else []:
                items = [i for i in items if tag_ in i.get("tags", [])]
            if "tags-any" in query:
                wanted_tags = set(query["tags-any"][0].split(","))
                items = [i for i in items if wanted_tags & set(i.get("tags", []))]
            return 200, {collection.replace("-", "_"): items}, {}
        if method == "POST":
            body = req.get(key, {})
            if collection == "security-groups":
                made = cloud.create_group(body)
            elif collection == "security-group-rules":
                made = cloud.create_rule(body)
            elif collection == "floatingips":
                made = cloud.create_floating_ip(body)
            else:
                raise neutron_error(400, "HTTPBadRequest", f"the fake does not create {collection}")
            return 201, {key: view(made)}, {}
    if rid not in table:
        raise neutron_error(404, missing, f"{key.replace('_', ' ').title()} {rid} could not be found.")
    if tag is not None or path.endswith("/tags"):
        if method == "PUT" and tag is None:
            for t in req.get("tags", []):
                if len(t) > 255 or "," in t or "/" in t:
                    raise neutron_error(400, "InvalidInput", f"Invalid input for operation: '{t}' is not a valid tag.")
            table[rid]["tags"] = list(req.get("tags", []))
            return 200, {"tags": table[rid]["tags"]}, {}
        if method == "GET" and tag is None:
            return 200, {"tags": table[rid]["tags"]}, {}
    if method == "GET":
        return 200, {key: view(table[rid])}, {}
    if method == "PUT":
        allowed = {"floatingips": {"port_id", "description"}, "security-groups": {"name", "description"}}
        extra = set(req.get(key, {})) - allowed.get(collection, set())
        if extra:
            raise neutron_error(400, "HTTPBadRequest", f"Cannot update read-only attribute {sorted(extra)}")
        if collection == "floatingips" and req[key].get("port_id"):
            port = cloud.ports.get(req[key]["port_id"])
            if port is None:
                raise neutron_error(404, "PortNotFound", f"Port {req[key]['port_id']} could not be found.")
            req[key]["router_id"] = cloud.router_for(port, table[rid]["floating_network_id"])
        elif collection == "floatingips" and "port_id" in req[key]:
            req[key]["router_id"] = None
        table[rid].update(req.get(key, {}))
        return 200, {key: view(table[rid])}, {}
    if method == "DELETE":
        if collection == "security-groups":
            cloud.delete_group(rid)
        elif collection in ("security-group-rules", "floatingips"):
            del table[rid]
        else:
            raise neutron_error(409, "Conflict", f"the fake does not delete {collection}")
        return 204, None, {}
    raise neutron_error(405, "HTTPMethodNotAllowed", f"{method} not allowed on {path}")


def _glance(
    cloud: FakeOpenStack, method: str, path: str, req: Any, raw: bytes, query: dict[str, list[str]]
) -> tuple[int, Any, dict[str, str]]:
    if path == "/images" and method == "POST":
        return 201, cloud.image_view(cloud._image_record(req)), {}
    if path == "/images" and method == "GET":
        items = [cloud.image_view(i) for i in cloud.images.values()]
        items = _filtered(items, query, ("name", "status", "os_hash_value", "checksum", "disk_format", "id"))
        for tag in query.get("tag", []):
            items = [i for i in items if tag in i["tags"]]
        limit = int((query.get("limit") or [GLANCE_PAGE])[0])
        page = _paged(items, {**query, "limit": [str(limit)]}, "id")
        body = {"images": page, "schema": "/v2/schemas/images", "first": "/v2/images"}
        if page and page[-1] is not items[-1]:
            rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k not in ("marker", "limit"))
            body["next"] = f"/v2/images?marker={page[-1]['id']}&limit={limit}" + (f"&{rest}" if rest else "")
        return 200, body, {}
    if path.startswith("/schemas/"):
        return 200, {"name": path.rsplit("/", 1)[-1], "properties": {}, "additionalProperties": {"type": "string"}}, {}
    m = re.match(r"^/images/([^/]+)(/file|/tags/[^/]+)?$", path)
    if not m:
        raise glance_error(404, f"{method} {path}: not found")
    iid, sub = m.groups()
    image = cloud.images.get(iid)
    if image is None:
        raise glance_error(404, f"No image found with ID {iid}")
    if sub == "/file" and method == "PUT":
        if image["status"] != "queued":
            raise glance_error(409, f"Image status transition from {image['status']} to saving is not allowed")
        missing = [k for k in ("disk_format", "container_format") if not image.get(k)]
        if missing:  # glance/domain/__init__.py 159-170 (Image.status), 400 from glance/api/v2/image_data.py 222-228
            prop = "Properties" if len(missing) > 1 else "Property"
            raise glance_error(400, f"{prop} {', '.join(missing)} must be set prior to saving data.")
        cloud._store_image(iid, raw)
        return 204, None, {}
    if sub == "/file" and method == "GET":
        return 200, cloud.image_data.get(iid, b""), {}
    if sub and sub.startswith("/tags/") and method in ("PUT", "DELETE"):
        tag = unquote(sub[len("/tags/") :])
        if method == "PUT" and tag not in image["tags"]:
            image["tags"].append(tag)
        if method == "DELETE":
            if tag not in image["tags"]:
                raise glance_error(404, f"Tag {tag} not found")
            image["tags"].remove(tag)
        return 204, None, {}
    if sub is None and method == "GET":
        return 200, cloud.image_view(image), {}
    if sub is None and method == "DELETE":
        if image.get("protected"):
            raise glance_error(409, f"Image {iid} is protected and cannot be deleted.")
        del cloud.images[iid]
        cloud.image_data.pop(iid, None)
        return 204, None, {}
    raise glance_error(404, f"{method} {path}: not found")
