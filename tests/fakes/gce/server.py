"""A stateful Compute Engine v1 REST API on 127.0.0.1 for the gce provider's tests.

No Compute emulator exists, so this one is held to Google's definition instead: every request is routed by the
discovery document's own paths, its parameters and body are checked against the document's schemas (with the
method's required fields), and so is every response before it is sent. Anything the document does not allow is
answered with Google's 400 error and kept in ``violations``, which the fixture asserts empty (the fake protocol of
``tests/fakes/server.py``).

What it models: instances (PROVISIONING -> STAGING -> RUNNING on a clock, serial port 1 with Google's
``start``/``next`` offsets and 1 MiB buffer, the screenshot of an instance with a display device: its
stand-in's; a boot disk no smaller than its image), images (from a ``rawDisk`` object that must exist in the Cloud
Storage emulator and hold what GCE imports, see :func:`imported_disk`: else the operation ends in GCE's
``INVALID_IMAGE_TAR``; ``diskSizeGb`` from disk.raw's size; families; 409 while an instance uses one), firewalls,
subnetworks (an instance's must be a URL of the document's forms, exist, and lie in its zone's region and its
network), zone and global operations with numeric ids (PENDING -> RUNNING -> DONE, ``wait``), label filters on
list, a token endpoint for the service account the tests hand out as ADC (every Compute call must carry a token it
issued or a JWT that account signed), and failures a test injects.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..screens import standin_screen
from ..server import Call, FakeHandler, FakeServer
from . import discovery

SERIAL_BUFFER = 1024 * 1024
"""Bytes of serial output Compute keeps per port; older output is discarded."""
MACHINE_TYPES = {
    "e2-small": (2, 2048),
    "e2-standard-2": (2, 8192),
    "n2-standard-2": (2, 8192),
    "n1-standard-1": (1, 3840),
}
GIB = 1 << 30
"""GCE's GB (gcloud's ``BYTES_IN_ONE_GB``)."""
NOT_AN_IMAGE = ("INVALID_IMAGE_TAR", "The tar archive is not a valid image.")
"""How GCE ends an images.insert whose rawDisk.source it cannot import (the code and text users report for a PAX
archive, a gzip cut short, a disk.raw of no whole number of GB)."""


def imported_disk(stream: Any) -> int | tuple[str, str]:
    """The size of the disk GCE would import from a ``rawDisk.source`` object (read as a stream), or the operation
    error it ends with. Read with Python's tarfile (not the provider's reader): a gzipped tar whose only member is the
    regular (or GNU sparse) file ``disk.raw`` with no PAX header, of a whole number of GiB; a member of another name
    gets the text Google gives for it ("The file inside the tar archive was named ..."; the code is assumed)."""
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            members = []
            for member in archive:
                members.append(member)
                if member.pax_headers or archive.pax_headers:
                    return NOT_AN_IMAGE
            if len(members) != 1 or not members[0].isreg():
                return NOT_AN_IMAGE
    except (tarfile.TarError, EOFError, OSError):
        return NOT_AN_IMAGE
    disk = members[0]
    if disk.name != "disk.raw":
        named = f"The file inside the tar archive was named '{disk.name}'. It should be named 'disk.raw'."
        return NOT_AN_IMAGE[0], named
    if disk.size == 0 or disk.size % GIB:
        return NOT_AN_IMAGE
    return disk.size


REGIONS = {"europe-west1": ("europe-west1-b", "europe-west1-c"), "us-central1": ("us-central1-a", "us-central1-f")}
ZONES = {zone: region for region, zones in REGIONS.items() for zone in zones}


class Failure(Exception):
    """An error answer in Google's shape: ``{"error": {"code", "message", "errors": [{reason, ...}]}}``."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        status = {
            400: "INVALID_ARGUMENT",
            401: "UNAUTHENTICATED",
            403: "PERMISSION_DENIED",
            404: "NOT_FOUND",
            409: "ALREADY_EXISTS",
            412: "FAILED_PRECONDITION",
            501: "UNIMPLEMENTED",
        }.get(self.code, "UNKNOWN")
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "status": status,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


HTTP_ERRORS = {"QUOTA_EXCEEDED": (403, "FORBIDDEN"), "INVALID_IMAGE_TAR": (400, "BAD REQUEST")}
"""The HTTP status an operation ending in that error code carries (others: 503)."""


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Operation:
    """A long-running operation: done after ``duration`` seconds, then ``effect`` runs (or ``error`` is set)."""

    id: int
    name: str
    kind: str
    target: str
    zone: str | None
    begun: float
    duration: float
    effect: Callable[[], None] | None = None
    error: tuple[str, str] | None = None
    done: bool = False

    def status(self, now: float) -> str:
        if self.done:
            return "DONE"
        return "PENDING" if now - self.begun < self.duration / 2 else "RUNNING"


@dataclass
class Instance:
    body: dict[str, Any]
    zone: str
    born: float
    image: str
    """selfLink of the image its boot disk was made from."""
    status: str = "PROVISIONING"
    held: str | None = None
    """A status a test forced (e.g. TERMINATED): the clock no longer moves it."""
    serial: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    """Bytes of serial output discarded from the front of the buffer."""


class FakeCompute(FakeServer):
    """The API's state and behaviour; ``start()`` puts it on a loopback port."""

    def __init__(self, *, storage: str | None = None, step: float = 0.1) -> None:
        super().__init__()
        self.storage = storage
        """URL of the Cloud Storage emulator where ``rawDisk.source`` objects must exist."""
        self.step = step
        """Seconds per state transition (operations and instance status)."""
        self.lock = threading.RLock()
        self.ids = itertools.count(int.from_bytes(secrets.token_bytes(5), "big"))
        self.instances: dict[tuple[str, str, str], Instance] = {}
        self.images: dict[tuple[str, str], dict[str, Any]] = {}
        self.firewalls: dict[tuple[str, str], dict[str, Any]] = {}
        self.networks: dict[tuple[str, str], dict[str, Any]] = {}
        self.subnetworks: dict[tuple[str, str, str], dict[str, Any]] = {}
        """(project, region, name) -> subnetwork."""
        self.operations: dict[tuple[str, str], Operation] = {}
        self.tokens: set[str] = set()
        self.certs: dict[str, str] = {}
        """Public keys (PEM, by key id) of the service account whose credentials the tests hand out."""
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.queries: list[dict[str, str]] = []
        """Each call's query parameters, with the method id under ``__method``."""
        self.answers: list[tuple[int, str]] = []
        """Each call's HTTP status and method id."""
        self.screens: dict[str, Callable[[Path], Path]] = {}
        """Instance name -> how to take a screenshot of its stand-in (a PNG to the path given), which
        instances.getScreenshot answers with; ``/_test/screen/<instance>`` sets one from another process."""
        self.http_failures: dict[str, list[Failure]] = {}
        self.operation_failures: dict[str, list[tuple[str, str]]] = {}

    # --- what tests use ----------------------------------------------------------------------------

    def fail_call(self, method: str, code: int, reason: str, message: str) -> None:
        """The next call of ``method`` (e.g. ``compute.firewalls.insert``) is answered with this HTTP error."""
        with self.lock:
            self.http_failures.setdefault(method, []).append(Failure(code, reason, message))

    def fail_operation(self, method: str, code: str, message: str) -> None:
        """The next operation ``method`` starts ends DONE with this error (e.g. ``QUOTA_EXCEEDED``)."""
        with self.lock:
            self.operation_failures.setdefault(method, []).append((code, message))

    def add_network(self, project: str, name: str) -> None:
        with self.lock:
            self.networks[(project, name)] = {
                "kind": "compute#network",
                "id": str(next(self.ids)),
                "name": name,
                "selfLink": self.link(f"projects/{project}/global/networks/{name}"),
                "autoCreateSubnetworks": True,
                "creationTimestamp": stamp(time.time()),
            }

    def add_subnetwork(self, project: str, region: str, name: str, network: str = "default") -> None:
        with self.lock:
            self.subnetworks[(project, region, name)] = {
                "kind": "compute#subnetwork",
                "id": str(next(self.ids)),
                "name": name,
                "network": self.link(f"projects/{project}/global/networks/{network}"),
                "region": self.link(f"projects/{project}/regions/{region}"),
                "ipCidrRange": "10.132.0.0/20",
                "gatewayAddress": "10.132.0.1",
                "selfLink": self.link(f"projects/{project}/regions/{region}/subnetworks/{name}"),
                "creationTimestamp": stamp(time.time()),
            }

    def instance(self, name: str) -> Instance:
        with self.lock:
            self._tick()
            found = [i for (_, _, n), i in self.instances.items() if n == name]
            if not found:
                raise KeyError(f"no instance {name!r} (have {sorted(n for _, _, n in self.instances)})")
            return found[0]

    def write_serial(self, name: str, text: str | bytes) -> None:
        """Append to an instance's serial port 1 (what the guest would print)."""
        data = text.encode() if isinstance(text, str) else text
        with self.lock:
            instance = self.instance(name)
            instance.serial += data
            if len(instance.serial) > SERIAL_BUFFER:
                cut = len(instance.serial) - SERIAL_BUFFER
                del instance.serial[:cut]
                instance.dropped += cut

    def set_status(self, name: str, status: str, message: str = "") -> None:
        """Force an instance's status (e.g. TERMINATED during boot); the clock stops moving it."""
        with self.lock:
            instance = self.instance(name)
            instance.status = instance.held = status
            if message:
                instance.body["statusMessage"] = message

    def metadata(self, name: str) -> dict[str, str]:
        return {i["key"]: i["value"] for i in self.instance(name).body.get("metadata", {}).get("items", [])}

    def held(self) -> dict[str, list[str]]:
        """Everything the API holds, by kind (what a test checks is empty at the end)."""
        with self.lock:
            self._tick()
            found = {
                "instance": sorted(n for _, _, n in self.instances),
                "image": sorted(n for _, n in self.images),
                "firewall": sorted(n for _, n in self.firewalls),
            }
            return {k: v for k, v in found.items() if v}

    def pending(self) -> list[str]:
        """The targets of insert operations still running: what will exist once they are done."""
        with self.lock:
            self._tick()
            return sorted(o.target for o in self.operations.values() if not o.done and o.kind == "insert")

    def link(self, path: str) -> str:
        return f"https://www.googleapis.com/compute/v1/{path}"

    # --- the clock -----------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        for operation in self.operations.values():
            if not operation.done and now - operation.begun >= operation.duration:
                operation.done = True
                if operation.error is None and operation.effect is not None:
                    operation.effect()
        for instance in self.instances.values():
            if instance.held is None:
                age = now - instance.born
                instance.status = "PROVISIONING" if age < self.step else "STAGING" if age < 2 * self.step else "RUNNING"

    def _operation(
        self,
        method: str,
        project: str,
        zone: str | None,
        target: str,
        effect: Callable[[], None],
        error: tuple[str, str] | None = None,
    ) -> dict:
        """A new operation of ``method`` that runs ``effect`` when done, or ends in ``error`` (or an injected one)."""
        op_id = next(self.ids)
        name = f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}-{secrets.token_hex(4)}"
        operation = Operation(
            op_id, name, method.rsplit(".", 1)[-1], target, zone, time.monotonic(), 2 * self.step, effect
        )
        failures = self.operation_failures.get(method)
        if failures:
            operation.error = failures.pop(0)
        elif error is not None:
            operation.error = error
        self.operations[(project, name)] = operation
        return self._operation_body(project, operation)

    def _operation_body(self, project: str, operation: Operation) -> dict[str, Any]:
        now = time.monotonic()
        scope = f"projects/{project}/zones/{operation.zone}" if operation.zone else f"projects/{project}/global"
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(operation.id),
            "name": operation.name,
            "operationType": operation.kind,
            "targetLink": self.link(operation.target),
            "targetId": str(operation.id ^ 0x5A5A),
            "status": operation.status(now),
            "progress": 100 if operation.done else 0,
            "insertTime": stamp(time.time() - (now - operation.begun)),
            "selfLink": self.link(f"{scope}/operations/{operation.name}"),
            "user": "tests@cernvm-fixtures.invalid",
        }
        if operation.zone:
            body["zone"] = self.link(f"projects/{project}/zones/{operation.zone}")
        if operation.done:
            body["endTime"] = stamp(time.time())
            if operation.error:
                code, message = operation.error
                body["error"] = {"errors": [{"code": code, "message": message}]}
                status, text = HTTP_ERRORS.get(code, (503, "SERVICE UNAVAILABLE"))
                body["httpErrorStatusCode"], body["httpErrorMessage"] = status, text
        return body

    # --- requests ------------------------------------------------------------------------------------

    def handle(self, http: str, url: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        parsed = urllib.parse.urlsplit(url)
        if parsed.path == "/token":
            return self._token(raw)
        if parsed.path.startswith("/_test/screen/"):  # not Compute: the libvirt domain of an instance's stand-in
            self.screens[parsed.path.rsplit("/", 1)[-1]] = standin_screen(raw.decode())
            return 200, {}
        if parsed.path.startswith("/_test/console/"):  # not Compute: what a stand-in guest prints on its ttyS0
            try:
                self.write_serial(parsed.path.rsplit("/", 1)[-1], raw)
            except KeyError as e:
                return 404, Failure(404, "notFound", str(e)).body()
            return 200, {}
        routed = discovery.route(http, parsed.path)
        if routed is None:
            self.violations.append(f"{http} {parsed.path}: no such method in the Compute v1 discovery document")
            return 404, Failure(404, "notFound", f"{http} {parsed.path} is not a Compute v1 method").body()
        method, path = routed
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        problems = discovery.check_parameters(method, path, query)
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                problems.append(f"{method.id}: body is not JSON")
        if method.request:
            if body is None:
                problems.append(f"{method.id}: no {method.request} body")
            else:
                problems += discovery.check_body(body, method.request, method.id, method.request)
        elif body not in (None, {}):
            problems.append(f"{method.id}: takes no body, got {body!r}")
        if problems:
            self.violations += problems
            return 400, Failure(400, "invalid", "; ".join(problems)).body()
        token = headers.get("authorization", "")
        if not token.startswith("Bearer ") or not (token[7:] in self.tokens or self._signed(token[7:])):
            return 401, Failure(401, "authError", "Request had invalid authentication credentials.").body()
        params = {k: v[0] for k, v in query.items()}
        with self.lock:
            self.calls.append((method.id, body))
            self.queries.append({"__method": method.id, **path, **params})
            code, answer = self._carry_out(method, path, params, body, Call(http, parsed.path, body, method.id))
            self.answers.append((code, method.id))
        if code == 200 and method.response:
            found = discovery.check_body(answer, method.response, None, method.response)
            if found:
                self.violations += [f"response of {method.id}: {p}" for p in found]
        return code, answer

    def _carry_out(
        self, method: discovery.Method, path: dict[str, str], params: dict[str, str], body: Any, call: Call
    ) -> tuple[int, dict[str, Any]]:
        try:
            self.called(call)
            failures = self.http_failures.get(method.id)
            if failures:
                raise failures.pop(0)
            handler = getattr(self, "_" + method.id.split(".", 1)[1].replace(".", "_"), None)
            if handler is None:
                self.violations.append(f"{method.id}: called, but the fake does not implement it")
                raise Failure(501, "notImplemented", f"{method.id} is not implemented by the test API")
            self._tick()
            return 200, handler(path, params, body)
        except Failure as failure:
            return failure.code, failure.body()

    def _signed(self, assertion: str) -> bool:
        """Whether a JWT is signed by the service account key the tests handed out."""
        from google.auth import exceptions, jwt

        try:
            jwt.decode(assertion, certs=self.certs, verify=True, audience=None)
        except (ValueError, exceptions.GoogleAuthError):
            return False
        return True

    def _token(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        form = urllib.parse.parse_qs(raw.decode())
        grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
        if form.get("grant_type") != [grant] or not self._signed((form.get("assertion") or [""])[0]):
            return 400, {"error": "invalid_grant", "error_description": "expected a JWT signed by the test key"}
        token = "fake-" + secrets.token_urlsafe(16)
        self.tokens.add(token)
        return 200, {
            "access_token": token,
            "expires_in": 3600,
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
        }

    # --- lookups -------------------------------------------------------------------------------------

    @staticmethod
    def _missing(what: str) -> Failure:
        return Failure(404, "notFound", f"The resource '{what}' was not found")

    def _resolve(self, link: str, project: str, kind: str) -> str:
        """The name in a full or partial resource URL of ``kind`` (``global/images/x``), checked to exist."""
        scope = r"(?:projects/(?P<project>[^/]+)/)?(?:global|regions/[^/]+|zones/[^/]+)"
        match = re.search(rf"{scope}/{kind}/(?P<name>[^/]+)$", link)
        if not match:
            raise Failure(400, "invalid", f"Invalid value for field: '{link}' is not a {kind} URL")
        return match["name"]

    def _image_by_link(self, link: str, project: str) -> dict[str, Any]:
        family = re.search(r"(?:projects/(?P<project>[^/]+)/)?global/images/family/(?P<family>[^/]+)$", link)
        if family:
            return self._latest(family["project"] or project, family["family"])
        name = self._resolve(link, project, "images")
        owner = re.search(r"projects/([^/]+)/", link)
        image = self.images.get((owner[1] if owner else project, name))
        if image is None:
            raise self._missing(f"projects/{owner[1] if owner else project}/global/images/{name}")
        return image

    def _latest(self, project: str, family: str) -> dict[str, Any]:
        found = [i for (p, _), i in self.images.items() if p == project and i.get("family") == family]
        if not found:
            raise self._missing(f"projects/{project}/global/images/family/{family}")
        return max(found, key=lambda i: i["creationTimestamp"])

    # --- instances -----------------------------------------------------------------------------------

    def _instances_insert(self, path: dict[str, str], params: dict[str, str], body: dict[str, Any]) -> dict:
        project, zone, name = path["project"], path["zone"], body["name"]
        if zone not in ZONES:
            raise self._missing(f"projects/{project}/zones/{zone}")
        if (project, zone, name) in self.instances:
            raise Failure(
                409, "alreadyExists", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            )
        machine_type = self._resolve(body["machineType"], project, "machineTypes")
        if machine_type not in MACHINE_TYPES:
            raise self._missing(f"projects/{project}/zones/{zone}/machineTypes/{machine_type}")
        boot = [d for d in body.get("disks", []) if d.get("boot")]
        if len(boot) != 1 or "sourceImage" not in boot[0].get("initializeParams", {}):
            raise Failure(
                400,
                "invalid",
                "Invalid value for field 'resource.disks': exactly one boot disk with "
                "initializeParams.sourceImage is needed",
            )
        image = self._image_by_link(boot[0]["initializeParams"]["sourceImage"], project)
        wanted = boot[0]["initializeParams"].get("diskSizeGb")
        if wanted is not None and int(wanted) < int(image.get("diskSizeGb") or 0):
            where = f"resource.disks[{body['disks'].index(boot[0])}].initializeParams.diskSizeGb"
            raise Failure(
                400,
                "invalid",
                f"Invalid value for field '{where}': '{wanted}'. Requested disk size cannot be smaller than the "
                f"image size ({image['diskSizeGb']} GB)",
            )
        for i, nic in enumerate(body.get("networkInterfaces", [])):
            network = self._resolve(nic.get("network", "global/networks/default"), project, "networks")
            if (project, network) not in self.networks:
                raise self._missing(f"projects/{project}/global/networks/{network}")
            if "subnetwork" in nic:
                self._check_subnetwork(nic["subnetwork"], project, zone, network, i)
        for key, value in (body.get("labels") or {}).items():
            self._check_label(key, value)
        target = f"projects/{project}/zones/{zone}/instances/{name}"

        def create() -> None:
            now = time.monotonic()
            stored = json.loads(json.dumps(body))
            stored.update(
                kind="compute#instance",
                id=str(next(self.ids)),
                selfLink=self.link(target),
                zone=self.link(f"projects/{project}/zones/{zone}"),
                creationTimestamp=stamp(time.time()),
                machineType=self.link(f"projects/{project}/zones/{zone}/machineTypes/{machine_type}"),
                labelFingerprint=secrets.token_urlsafe(8),
            )
            for i, disk in enumerate(stored.get("disks", [])):
                disk.pop("initializeParams", None)
                disk.update(
                    kind="compute#attachedDisk",
                    index=i,
                    deviceName=disk.get("deviceName", f"persistent-disk-{i}"),
                    source=self.link(f"projects/{project}/zones/{zone}/disks/{name}" + (f"-{i}" if i else "")),
                )
            stored["disks"][0]["licenses"] = image.get("licenses", [])
            for i, nic in enumerate(stored.get("networkInterfaces", [])):
                nic.update(
                    kind="compute#networkInterface", name=f"nic{i}", networkIP=f"10.128.0.{2 + len(self.instances)}"
                )
                for config in nic.get("accessConfigs", []):
                    config.update(kind="compute#accessConfig", natIP=f"203.0.113.{10 + len(self.instances)}")
            if "metadata" in stored:
                stored["metadata"].update(kind="compute#metadata", fingerprint="ZmFrZS1maW5nZXI=")
            self.instances[(project, zone, name)] = Instance(stored, zone, now, image["selfLink"])

        return self._operation("compute.instances.insert", project, zone, target, create)

    SUBNETWORK = re.compile(
        r"^(?:https://www\.googleapis\.com/compute/v1/)?(?:projects/(?P<project>[^/]+)/)?"
        r"regions/(?P<region>[^/]+)/subnetworks/(?P<name>[^/]+)$"
    )
    """A subnetwork as the discovery document says NetworkInterface.subnetwork takes it: a full or partial URL
    (``https://www.googleapis.com/compute/v1/projects/P/regions/R/subnetworks/S``, ``regions/R/subnetworks/S``)."""

    def _check_subnetwork(self, link: str, project: str, zone: str, network: str, nic: int) -> None:
        """An instance's subnetwork: a URL of the document's forms, existing, in the zone's region and the NIC's
        network (the messages of the last two are ours: Google's own text was not found)."""
        field = f"resource.networkInterfaces[{nic}].subnetwork"
        match = self.SUBNETWORK.match(link)
        if not match:
            raise Failure(
                400,
                "invalid",
                f"Invalid value for field '{field}': '{link}'. The URL is malformed "
                "(a full or partial URL: regions/REGION/subnetworks/SUBNETWORK)",
            )
        owner, region, name = match["project"] or project, match["region"], match["name"]
        found = self.subnetworks.get((owner, region, name))
        if found is None:
            raise self._missing(f"projects/{owner}/regions/{region}/subnetworks/{name}")
        if region != ZONES[zone]:
            raise Failure(
                400,
                "invalid",
                f"Invalid value for field '{field}': '{link}'. Subnetwork must be in region {ZONES[zone]} "
                f"of zone {zone}",
            )
        if found["network"] != self.link(f"projects/{project}/global/networks/{network}"):
            raise Failure(
                400, "invalid", f"Invalid value for field '{field}': '{link}'. Subnetwork is not in network {network}"
            )

    def _subnetworks_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        found = self.subnetworks.get((path["project"], path["region"], path["subnetwork"]))
        if found is None:
            raise self._missing(f"projects/{path['project']}/regions/{path['region']}/subnetworks/{path['subnetwork']}")
        return found

    def _instance(self, path: dict[str, str]) -> Instance:
        found = self.instances.get((path["project"], path["zone"], path["instance"]))
        if found is None:
            raise self._missing(f"projects/{path['project']}/zones/{path['zone']}/instances/{path['instance']}")
        return found

    def _instances_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        instance = self._instance(path)
        return {**instance.body, "status": instance.status}

    def _instances_delete(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        instance = self._instance(path)
        instance.status = instance.held = "STOPPING"
        key = (path["project"], path["zone"], path["instance"])
        target = f"projects/{key[0]}/zones/{key[1]}/instances/{key[2]}"
        return self._operation(
            "compute.instances.delete", key[0], key[1], target, lambda: self.instances.pop(key, None)
        )

    def _instances_setLabels(self, path: dict[str, str], params: dict[str, str], body: dict[str, Any]) -> dict:
        instance = self._instance(path)
        if body.get("labelFingerprint") != instance.body.get("labelFingerprint"):
            raise Failure(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
        for key, value in (body.get("labels") or {}).items():
            self._check_label(key, value)
        target = f"projects/{path['project']}/zones/{path['zone']}/instances/{path['instance']}"

        def relabel() -> None:
            instance.body["labels"] = dict(body.get("labels") or {})
            instance.body["labelFingerprint"] = secrets.token_urlsafe(8)

        return self._operation("compute.instances.setLabels", path["project"], path["zone"], target, relabel)

    def _instances_list(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        items = [
            {**i.body, "status": i.status}
            for (p, z, _), i in sorted(self.instances.items())
            if p == path["project"] and z == path["zone"]
        ]
        return self._page("compute#instanceList", path, params, items, f"zones/{path['zone']}/instances")

    def _instances_getSerialPortOutput(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        instance = self._instance(path)
        if int(params.get("port", "1")) != 1:
            return {"kind": "compute#serialPortOutput", "contents": "", "start": "0", "next": "0"}
        end = instance.dropped + len(instance.serial)
        start = int(params.get("start", "0"))
        if start < 0:
            start = end + start
        start = min(max(start, instance.dropped), end)
        data = bytes(instance.serial[start - instance.dropped :])
        return {
            "kind": "compute#serialPortOutput",
            "contents": data.decode("utf-8", "replace"),
            "start": str(start),
            "next": str(end),
            "selfLink": self.link(
                f"projects/{path['project']}/zones/{path['zone']}/instances/{path['instance']}/serialPort"
            ),
        }

    def _instances_getScreenshot(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        """The stand-in's real screen, as GCE answers: a PNG in base64, only of an instance with a display."""
        instance = self._instance(path)
        if not (instance.body.get("displayDevice") or {}).get("enableDisplay"):
            raise Failure(400, "badRequest", "The instance does not have a display device enabled.")
        take = self.screens.get(path["instance"])
        if take is None:
            raise Failure(400, "badRequest", f"{path['instance']} has no stand-in whose screen to show (test API)")
        with tempfile.TemporaryDirectory() as temporary:
            png = take(Path(temporary) / "screen.png").read_bytes()
        return {"kind": "compute#screenshot", "contents": base64.b64encode(png).decode()}

    # --- images --------------------------------------------------------------------------------------

    def _images_insert(self, path: dict[str, str], params: dict[str, str], body: dict[str, Any]) -> dict:
        project = path["project"]
        target = self._name_free(self.images, project, "images", body["name"])
        source = (body.get("rawDisk") or {}).get("source")
        if not source:
            raise Failure(
                400, "invalid", "Invalid value for field 'resource.rawDisk.source': required for this test API"
            )
        size, disk = self._object_disk(source)
        for key, value in (body.get("labels") or {}).items():
            self._check_label(key, value)
        if not isinstance(disk, int):
            return self._operation("compute.images.insert", project, None, target, lambda: None, disk)
        made = {"status": "READY", "archiveSizeBytes": str(size), "diskSizeGb": str(disk // GIB), "sourceType": "RAW"}
        return self._insert_global("compute.images.insert", "compute#image", self.images, target, body, made)

    def _name_free(self, store: dict[tuple[str, str], Any], project: str, collection: str, name: str) -> str:
        """The path of global resource ``name`` of ``collection`` (images, firewalls); 409 if one has that name."""
        target = f"projects/{project}/global/{collection}/{name}"
        if (project, name) in store:
            raise Failure(409, "alreadyExists", f"The resource '{target}' already exists")
        return target

    def _insert_global(
        self, method: str, kind: str, store: dict, target: str, body: dict[str, Any], made: dict[str, Any]
    ) -> dict:
        """The operation of ``method`` that, once done, keeps in ``store`` a copy of ``body`` with Compute's own
        fields (``kind``, id, selfLink, creation time) and ``made``."""
        project, name = target.split("/")[1], body["name"]

        def create() -> None:
            stored = json.loads(json.dumps(body))
            stored.update(kind=kind, id=str(next(self.ids)), selfLink=self.link(target), **made)
            stored.update(creationTimestamp=stamp(time.time()))
            store[(project, name)] = stored

        return self._operation(method, project, None, target, create)

    def _object_disk(self, source: str) -> tuple[int, int | tuple[str, str]]:
        """The size of ``gs://`` / storage URL ``source`` in the Cloud Storage emulator (400 if it is not there) and
        what GCE imports from it (:func:`imported_disk`), read from the emulator as a stream."""
        match = re.match(r"^(?:gs://|https://storage\.googleapis\.com/)([^/]+)/(.+)$", source)
        if not match or self.storage is None:
            raise Failure(400, "invalid", f"Invalid value for field 'resource.rawDisk.source': '{source}'")
        bucket, name = match[1], match[2]
        url = f"{self.storage}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                size = int(json.load(answer)["size"])
            with urllib.request.urlopen(url + "?alt=media", timeout=60) as content:
                return size, imported_disk(content)
        except urllib.error.HTTPError:
            raise Failure(
                400,
                "invalid",
                f"Invalid value for field 'resource.rawDisk.source': '{source}'. "
                "The object does not exist or cannot be read.",
            ) from None

    def _images_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._image_by_link(f"projects/{path['project']}/global/images/{path['image']}", path["project"])

    def _images_getFromFamily(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._latest(path["project"], path["family"])

    def _images_delete(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        project, name = path["project"], path["image"]
        image = self._images_get(path, params, body)
        users = [
            f"projects/{p}/zones/{z}/instances/{n}"
            for (p, z, n), i in self.instances.items()
            if i.image == image["selfLink"]
        ]
        if users:
            raise Failure(
                409,
                "resourceInUseByAnotherResource",
                f"The image resource 'projects/{project}/global/images/{name}' is already being used by '{users[0]}'",
            )
        target = f"projects/{project}/global/images/{name}"
        return self._operation(
            "compute.images.delete", project, None, target, lambda: self.images.pop((project, name), None)
        )

    def _images_list(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        items = [i for (p, _), i in sorted(self.images.items()) if p == path["project"]]
        return self._page("compute#imageList", path, params, items, "global/images")

    # --- firewalls and networks ----------------------------------------------------------------------

    def _firewalls_insert(self, path: dict[str, str], params: dict[str, str], body: dict[str, Any]) -> dict:
        project = path["project"]
        target = self._name_free(self.firewalls, project, "firewalls", body["name"])
        network = self._resolve(body.get("network", "global/networks/default"), project, "networks")
        if (project, network) not in self.networks:
            raise self._missing(f"projects/{project}/global/networks/{network}")
        made = {
            "direction": body.get("direction", "INGRESS"),
            "priority": body.get("priority", 1000),
            "network": self.link(f"projects/{project}/global/networks/{network}"),
        }
        return self._insert_global("compute.firewalls.insert", "compute#firewall", self.firewalls, target, body, made)

    def _firewalls_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._global_get(self.firewalls, path["project"], "firewalls", path["firewall"])

    def _global_get(self, store: dict[tuple[str, str], Any], project: str, collection: str, name: str) -> dict:
        """The global resource ``name`` of ``collection`` (firewalls, networks) in ``store``; 404 if there is none."""
        found = store.get((project, name))
        if found is None:
            raise self._missing(f"projects/{project}/global/{collection}/{name}")
        return found

    def _firewalls_delete(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        self._firewalls_get(path, params, body)
        key = (path["project"], path["firewall"])
        return self._operation(
            "compute.firewalls.delete",
            key[0],
            None,
            f"projects/{key[0]}/global/firewalls/{key[1]}",
            lambda: self.firewalls.pop(key, None),
        )

    def _firewalls_patch(self, path: dict[str, str], params: dict[str, str], body: dict[str, Any]) -> dict:
        """PATCH semantics (the fields given replace the rule's; ``name`` may not change)."""
        rule = self._firewalls_get(path, params, None)
        key = (path["project"], path["firewall"])
        if body.get("name") not in (None, key[1]):
            raise Failure(400, "invalid", f"Invalid value for field 'resource.name': '{body['name']}'.")
        target = f"projects/{key[0]}/global/firewalls/{key[1]}"
        return self._operation("compute.firewalls.patch", key[0], None, target, lambda: rule.update(body))

    def _firewalls_list(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        items = [f for (p, _), f in sorted(self.firewalls.items()) if p == path["project"]]
        return self._page("compute#firewallList", path, params, items, "global/firewalls")

    def _networks_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._global_get(self.networks, path["project"], "networks", path["network"])

    def _machineTypes_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        name = path["machineType"]
        if name not in MACHINE_TYPES or path["zone"] not in ZONES:
            raise self._missing(f"projects/{path['project']}/zones/{path['zone']}/machineTypes/{name}")
        cpus, memory = MACHINE_TYPES[name]
        return {
            "kind": "compute#machineType",
            "id": str(abs(hash(name)) % 10**12),
            "name": name,
            "guestCpus": cpus,
            "memoryMb": memory,
            "zone": path["zone"],
            "selfLink": self.link(f"projects/{path['project']}/zones/{path['zone']}/machineTypes/{name}"),
        }

    def _zones_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        zone = path["zone"]
        if zone not in ZONES:
            raise self._missing(f"projects/{path['project']}/zones/{zone}")
        return {
            "kind": "compute#zone",
            "id": str(2000 + sorted(ZONES).index(zone)),
            "name": zone,
            "status": "UP",
            "region": self.link(f"projects/{path['project']}/regions/{ZONES[zone]}"),
            "selfLink": self.link(f"projects/{path['project']}/zones/{zone}"),
        }

    # --- operations ----------------------------------------------------------------------------------

    def _find_operation(self, path: dict[str, str], zone: str | None) -> Operation:
        operation = self.operations.get((path["project"], path["operation"]))
        if operation is None or operation.zone != zone:
            scope = f"zones/{zone}" if zone else "global"
            raise self._missing(f"projects/{path['project']}/{scope}/operations/{path['operation']}")
        return operation

    def _wait(self, path: dict[str, str], zone: str | None) -> dict:
        operation = self._find_operation(path, zone)
        deadline = time.monotonic() + 2.0  # Compute answers after at most 2 minutes; tests need less
        while not operation.done and time.monotonic() < deadline:
            self.lock.release()
            try:
                time.sleep(self.step / 4)
            finally:
                self.lock.acquire()
            self._tick()
        return self._operation_body(path["project"], operation)

    def _zoneOperations_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._operation_body(path["project"], self._find_operation(path, path["zone"]))

    def _zoneOperations_wait(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._wait(path, path["zone"])

    def _globalOperations_get(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._operation_body(path["project"], self._find_operation(path, None))

    def _globalOperations_wait(self, path: dict[str, str], params: dict[str, str], body: None) -> dict:
        return self._wait(path, None)

    # --- lists and labels ----------------------------------------------------------------------------

    LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
    LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")

    def _check_label(self, key: str, value: str) -> None:
        if not self.LABEL_KEY.match(key) or not self.LABEL_VALUE.match(value):
            raise Failure(
                400,
                "invalid",
                f"Invalid value for field 'resource.labels': label {key!r}={value!r} "
                "(keys: lowercase letter then up to 62 of [a-z0-9_-]; values: up to 63 of [a-z0-9_-])",
            )

    FILTER = re.compile(r'\(?\s*labels\.([a-z][a-z0-9_-]*)\s*(?:(=|!=)\s*"?([a-z0-9_-]*)"?|:\s*\*)\s*\)?')

    def _matches(self, item: dict[str, Any], expression: str) -> bool:
        """Compute's filter syntax, the part used here: ``(labels.k = "v")``, ``labels.k:*``, AND-ed."""
        rest = expression.strip()
        labels = item.get("labels") or {}
        ok = True
        while rest:
            match = self.FILTER.match(rest)
            if not match:
                raise Failure(400, "invalid", f"Invalid list filter expression '{expression}'")
            key, op, value = match[1], match[2], match[3]
            if op is None:
                ok &= key in labels
            elif op == "=":
                ok &= labels.get(key) == value
            else:
                ok &= labels.get(key) != value
            rest = rest[match.end() :].strip()
            if rest.upper().startswith("AND "):
                rest = rest[4:].strip()
        return ok

    def _page(self, kind: str, path: dict[str, str], params: dict[str, str], items: list[dict], where: str) -> dict:
        expression = params.get("filter", "")
        if expression:
            items = [i for i in items if self._matches(i, expression)]
        size = int(params.get("maxResults", "500"))
        offset = int(params.get("pageToken", "0") or "0")
        page = items[offset : offset + size]
        answer: dict[str, Any] = {
            "kind": kind,
            "id": f"projects/{path['project']}/{where}",
            "items": page,
            "selfLink": self.link(f"projects/{path['project']}/{where}"),
        }
        if offset + size < len(items):
            answer["nextPageToken"] = str(offset + size)
        return answer

    # --- the HTTP side -------------------------------------------------------------------------------

    def handler(self) -> type[FakeHandler]:
        return _Handler


class _Handler(FakeHandler):
    def answer(self) -> None:
        fake: FakeCompute = self.fake
        raw = self.read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            code, body = fake.handle(self.command, self.path, headers, raw)
        except Exception as e:  # noqa: BLE001 - a bug in the fake must fail the test, not hang the client
            fake.violations.append(f"{self.command} {self.path}: the fake raised {type(e).__name__}: {e}")
            code, body = 500, Failure(500, "backendError", f"test API error: {e}").body()
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
