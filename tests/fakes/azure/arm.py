"""A stateful local Azure Resource Manager over HTTPS on 127.0.0.1, for tests only (no ARM emulator exists).

What it serves, as the real azure-mgmt-* and azure-identity clients call it:

* a Microsoft Entra token endpoint (``{authority}/{tenant}/oauth2/v2.0/token`` plus the OpenID
  configuration MSAL reads), checking the client id and secret, issuing JWTs Azurite's
  ``--oauth basic`` accepts;
* resource groups, managed images and disks, Compute Galleries with their image definitions and versions (a
  nested one created only in an existing parent, else ParentResourceNotFound; a VM whose ``imageReference.id``
  names a gallery image that does not exist or is not replicated to the VM's location is refused with Azure's
  GalleryImageNotFound), virtual machines (with boot diagnostics: the serial log
  and the screenshot, a stand-in's where a test names one), network
  interfaces, public IP addresses, network security groups, virtual networks and subnets; tag
  filtered listing (``/resources?$filter=tagName eq ...``); tags at a resource's or group's scope
  (``.../providers/Microsoft.Resources/tags/default``, merged, replaced or deleted by PATCH);
* Azure's tag rules on every write: at most 50 tags, names of 1-512 characters without ``<>%&\\?/`` or
  control characters, values of at most 256 characters (InvalidTags, InvalidTagName,
  InvalidTagNameCharacters, InvalidTagValueLength);
* long-running operations: PUT and DELETE answer with ``Azure-AsyncOperation`` and complete after
  ``polls`` status reads; a VM's create only once its guest reported ready to the VM's own WireServer
  (:mod:`.wireserver`), else it ends OSProvisioningTimedOut after ``provisioning_timeout`` seconds (the VM stays,
  as on Azure); a VM deleted while it is created ends its create OperationPreempted;
* ARM's error shape (``{"error": {"code", "message"}}``) with the codes Azure uses: ResourceNotFound,
  ResourceGroupNotFound, InUseSubnetCannotBeDeleted, InUseNetworkSecurityGroupCannotBeDeleted,
  NicInUse, OperationNotAllowed (core quota), SkuNotAvailable, InvalidRequestContent;
* resource paths matched case-insensitively, as ARM does.

Every request body is checked against the installed SDK's model of the resource
(:mod:`.wire`) for the api-version in the URL, which must be one that SDK sends; every response body
is checked against the same model before it leaves (a fake that drifts from the SDK fails loudly). What fails
those checks is answered with ARM's error and kept in ``violations`` (the fake protocol of tests/fakes/server.py),
which the fixture asserts empty after each test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import ssl
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..screens import standin_screen
from ..server import Call, FakeHandler, FakeServer, decoded
from . import wire
from .wireserver import GoalState, WireServer

TYPES = {
    "microsoft.compute/virtualmachines": ("Microsoft.Compute", "VirtualMachine", "virtualMachines"),
    "microsoft.compute/images": ("Microsoft.Compute", "Image", "images"),
    "microsoft.compute/disks": ("Microsoft.Compute", "Disk", "disks"),
    "microsoft.compute/galleries": ("Microsoft.Compute", "Gallery", "galleries"),
    "microsoft.compute/galleries/images": ("Microsoft.Compute", "GalleryImage", "images"),
    "microsoft.compute/galleries/images/versions": ("Microsoft.Compute", "GalleryImageVersion", "versions"),
    "microsoft.network/networkinterfaces": ("Microsoft.Network", "NetworkInterface", "networkInterfaces"),
    "microsoft.network/publicipaddresses": ("Microsoft.Network", "PublicIPAddress", "publicIPAddresses"),
    "microsoft.network/networksecuritygroups": ("Microsoft.Network", "NetworkSecurityGroup", "networkSecurityGroups"),
    "microsoft.network/virtualnetworks": ("Microsoft.Network", "VirtualNetwork", "virtualNetworks"),
    "microsoft.network/virtualnetworks/subnets": ("Microsoft.Network", "Subnet", "subnets"),
}
TAG_NAME_FORBIDDEN = re.compile(r"[<>%&\\?/\x00-\x1f\x7f]")
"""Characters Azure refuses in a tag name."""
SKUS = {"Standard_B2s": 2, "Standard_D2s_v3": 2, "Standard_D4s_v3": 4, "Standard_DS1_v2": 1}
"""VM sizes the fake offers in every location, with their vCPUs."""


def bitmap(take: Callable[[Path], Path]) -> bytes:
    """A stand-in's screen now, as a BMP (the boot diagnostics screenshot's format)."""
    import io
    import tempfile

    from PIL import Image

    with tempfile.TemporaryDirectory() as temporary, Image.open(take(Path(temporary) / "screen.png")) as png:
        out = io.BytesIO()
        png.convert("RGB").save(out, format="BMP")
    return out.getvalue()


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.target = status, code, message, target


def check_tags(tags: dict[str, str] | None) -> None:
    """Refuse tags as ARM does: more than 50, a name empty, longer than 512 characters or with a character Azure
    reserves, a value longer than 256 characters."""
    tags = tags or {}
    if len(tags) > 50:
        raise ArmError(
            400,
            "InvalidTags",
            f"Too many tags specified. Requested tag count - '{len(tags)}'. Maximum number of tags allowed - '50'.",
        )
    for name, value in tags.items():
        if not name.strip():
            raise ArmError(400, "InvalidTagName", "The tag name must be non-null, non-empty and non-whitespace only.")
        if TAG_NAME_FORBIDDEN.search(name):
            raise ArmError(
                400,
                "InvalidTagNameCharacters",
                f"The tag names '{name}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
            )
        if len(name) > 512:
            raise ArmError(
                400,
                "InvalidTagName",
                f"Tag key too large. Following tag name '{name}' exceeded the "
                "maximum length. Maximum allowed length for tag name - '512' characters.",
            )
        if len(value) > 256:
            raise ArmError(
                400,
                "InvalidTagValueLength",
                f"Tag value too large. Following tag value '{value}' "
                "exceeded the maximum length. Maximum allowed length for tag value - '256' characters.",
            )


CUSTOM_DATA_BYTES = 65535
"""The SDK's OSProfile.custom_data: "The maximum length of the binary array is 65535 bytes" (base64: 87380 characters,
the number in ARM's message)."""
KEY_BITS = 2048
"""The SDK's SshPublicKey.key_data: "The key needs to be at least 2048-bit and in ssh-rsa format"."""
PRIORITIES = range(100, 4097)
"""The SDK's SecurityRulePropertiesFormat.priority: "The value can be between 100 and 4096"."""


def check_custom_data(value: str | None) -> None:
    """Refuse custom data as ARM does: not base64, or more than 65535 bytes once decoded."""
    if value is None:
        return
    try:
        size = len(base64.b64decode(value, validate=True))
    except (TypeError, ValueError):
        size = -1
    if not 0 <= size <= CUSTOM_DATA_BYTES:
        raise ArmError(
            400,
            "InvalidParameter",
            "Custom data in OSProfile must be in Base64 encoding and with a maximum length of "
            f"{4 * -(-CUSTOM_DATA_BYTES // 3)} characters.",
            target="customData",
        )


def check_ssh_keys(linux: dict[str, Any]) -> None:
    """Refuse an admin SSH key as ARM does: not ssh-rsa (an OpenSSH line or an SSH2 block), or under 2048 bits."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    for key in ((linux.get("ssh") or {}).get("publicKeys")) or []:
        data = (key.get("keyData") or "").strip()
        if data.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):  # RFC 4716, which Azure takes too
            lines = [line for line in data.splitlines()[1:-1] if ":" not in line and not line.startswith(" ")]
            data = "ssh-rsa " + "".join(lines)
        try:
            public = load_ssh_public_key(data.encode()) if data.startswith("ssh-rsa ") else None
        except (ValueError, TypeError):  # cryptography's refusals of a malformed key
            public = None
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < KEY_BITS:
            raise ArmError(
                400,
                "InvalidParameter",
                "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.",
                target="linuxConfiguration.ssh.publicKeys.keyData",
            )


def check_vhd_blob(url: str, size: int, footer: bytes) -> None:
    """Refuse to make an image of a blob that is not a fixed, MiB-aligned VHD with a sound footer, with the errors
    Azure gives (the footer read by the provider's own :func:`footer_problem`, the one reading of it)."""
    from cernvm_fixtures.providers.azure.vhd import footer_problem

    found = footer_problem(footer, size - len(footer))
    if found is None:
        return
    kind = found[0]
    name = urllib.parse.unquote(url.split("?")[0].rsplit("/", 1)[-1])
    if kind == "cookie":
        message = (
            f"The specified cookie value in VHD footer indicates that disk '{name}' with blob {url} is not a "
            "supported VHD. Disk is expected to have cookie value 'conectix'."
        )
    elif kind == "size":
        virtual = int.from_bytes(footer[48:56], "big")
        message = (
            f"The VHD {url} has an unsupported virtual size of {virtual} bytes.  The size must be a whole number "
            "(in MBs)."
        )
    else:  # a dynamic or differencing VHD, a damaged footer
        message = "Only blobs formatted as VHDs can be imported."
    raise ArmError(400, "InvalidParameter", message, target="disks" if kind == "cookie" else None)


def check_priority(rule: dict[str, Any]) -> None:
    """Refuse a security rule whose priority is outside 100..4096, as the Network RP does."""
    priority = (rule.get("properties") or {}).get("priority")
    if priority not in PRIORITIES:
        raise ArmError(
            400,
            "SecurityRuleInvalidPriority",
            f"Security rule {rule.get('name')} has invalid Priority. Value provided: {priority} "
            f"Allowed range {PRIORITIES.start}-{PRIORITIES.stop - 1}.",
        )


PROVISIONING_TIMEOUT = float(os.environ.get("CVMFX_TEST_AZURE_PROVISIONING_TIMEOUT", "600"))
"""Seconds a VM create waits for its guest's Ready report before it ends OSProvisioningTimedOut (Azure: 40 minutes);
tests that expect the time-out set the fake's ``provisioning_timeout`` to a few seconds."""


def provisioning_timed_out(name: str) -> dict[str, str]:
    """The error a VM create ends with when its guest never reported ready: Azure's code and message (as quoted in
    berops/claudie#386 and Azure/aks-engine#3694)."""
    return {
        "code": "OSProvisioningTimedOut",
        "message": (
            f"OS Provisioning for VM '{name}' did not finish in the allotted time. The VM may still finish "
            "provisioning successfully. Please check provisioning state later. For details on how to check current "
            "provisioning state of Windows VMs, refer to https://aka.ms/WindowsVMLifecycle and Linux VMs, refer to "
            "https://aka.ms/LinuxVMLifecycle."
        ),
    }


@dataclass
class Operation:
    id: str
    polls: int
    done: Callable[[], dict[str, str] | None]
    """Carries the operation out once it ends; may return the error it ended with."""
    error: dict[str, str] | None = None
    status: str = "InProgress"
    pending: Callable[[], bool] = lambda: False
    """Whether the operation must stay in progress whatever the polls (a VM waiting for its guest's report)."""


@dataclass
class Faults:
    """Failures a test switches on; each names what real Azure does in that case."""

    cores: int = 100
    """Regional vCPU quota: a VM beyond it is refused with OperationNotAllowed."""
    nsg_busy: int = 0
    """How many NSG deletes are refused as in use although nothing refers to it any more (Azure releases a
    deleted NIC's references a while after the NIC is gone)."""
    skus: dict[str, int] = field(default_factory=lambda: dict(SKUS))


class Arm(FakeServer):
    """The fake's state and its HTTPS server."""

    def __init__(self, directory: Path, *, tenant: str, client_id: str, secret: str, polls: int = 1) -> None:
        import trustme

        super().__init__()

        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file, self.key_file = directory / "cert.pem", directory / "key.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.cert_file))
        cert.private_key_pem.write_to_path(str(self.key_file))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.tenant, self.client_id, self.secret = tenant, client_id, secret
        self.polls = polls
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.consoles: dict[str, Callable[[], str]] = {}
        """Serial log source per VM name (lowercase); a test points it at the VM's KVM stand-in."""
        self.screens: dict[str, Callable[[Path], Path]] = {}
        """Per VM name (lowercase): how to take a screenshot of its stand-in (a PNG to the path given), served as the
        boot diagnostics screenshot (a BMP); a test points it at the VM's KVM stand-in."""
        self.faults = Faults()
        self.requests: list[tuple[str, str, Any]] = []
        self.blob_footer: Callable[[str], tuple[int, bytes] | None] | None = None
        """(size, last 512 bytes) of the blob at a URL, None if there is none: read from Azurite by the fixture."""
        self.wireservers: dict[str, WireServer] = {}
        """Each VM's WireServer, by the VM's id (lowercase), from its create until it is gone."""
        self.provisioning_timeout = PROVISIONING_TIMEOUT
        self.guest: Callable[[str, WireServer], None] | None = None
        """What boots a guest for a VM just created (with the VM's name and WireServer): the fixture's Python agent
        for tests whose SSH goes to the session's shared stand-in; None: no guest (the create times out) or one
        booted by the stand-ins plugin of a child process, which finds the VM through ``/_test/provisioning``."""

    def handler(self) -> type[FakeHandler]:
        return _Handler

    def start(self, tls: ssl.SSLContext | None = None) -> Arm:
        """Serve over HTTPS with the fake's certificate (its CA in ``ca_file``)."""
        return super().start(tls or self.context)

    # -- tokens

    def token(self, form: dict[str, str], tenant: str) -> dict[str, Any]:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.secret or tenant != self.tenant:
            raise ArmError(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        scope = form.get("scope", "").split()[0] if form.get("scope") else ""
        audience = scope.removesuffix("/.default")
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": self.client_id,
            "tid": tenant,
            "oid": self.client_id,
        }

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        jwt = f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{part({'fake': 'signature'})}"
        return {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": jwt}

    # -- state helpers

    def get(self, resource_id: str) -> dict[str, Any] | None:
        return self.resources.get(resource_id.lower())

    def tagged(self, key: str, value: str | None = None) -> list[str]:
        """Ids of resources and resource groups carrying tag ``key`` (with ``value``)."""
        with self.lock:
            found = [*self.resources.values(), *self.groups.values()]
            return sorted(
                r["id"] for r in found if key in (r.get("tags") or {}) and (value is None or r["tags"][key] == value)
            )

    def stop(self) -> None:
        for rid in list(self.wireservers):
            self.drop_wireserver(rid)
        super().stop()

    def drop_wireserver(self, rid: str) -> None:
        """Stop and forget the WireServer of the VM ``rid`` (gone, or its group deleted)."""
        found = self.wireservers.pop(rid.lower(), None)
        if found is not None:
            found.stop()

    def awaiting(self) -> list[dict[str, Any]]:
        """VMs whose create waits for their guest's report: name, resource group, id and WireServer port."""
        with self.lock:
            found = [(rid, w) for rid, w in self.wireservers.items() if not w.ready.is_set()]
            return [
                {"name": r["name"], "group": r["id"].split("/")[4], "id": r["id"], "port": w.port}
                for rid, w in found
                if (r := self.resources.get(rid)) is not None and r["properties"]["provisioningState"] == "Creating"
            ]

    def operation(
        self,
        namespace: str,
        location: str,
        done: Callable[[], dict[str, str] | None],
        error: dict[str, str] | None = None,
        pending: Callable[[], bool] | None = None,
    ) -> str:
        op = Operation(secrets.token_hex(8), self.polls, done, error)
        if pending is not None:
            op.pending = pending
        self.operations[op.id] = op
        return f"{self.url}/subscriptions/{{sub}}/providers/{namespace}/locations/{location}/operations/{op.id}"


class _Handler(FakeHandler):
    @property
    def arm(self) -> Arm:
        return self.fake

    def send(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", secrets.token_hex(8))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def answer(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k.lower(): v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        raw = self.read_body()
        try:
            self.route(self.command, parsed.path, query, raw)
        except ArmError as e:
            body = {"error": {"code": e.code, "message": e.message, **({"target": e.target} if e.target else {})}}
            if e.code.startswith("invalid_"):
                body = {"error": e.code, "error_description": e.message}
            self.send(e.status, body)
        except Exception as e:  # noqa: BLE001 - a bug in the fake answers 500, as ARM would
            self.arm.violations.append(traceback.format_exc())
            self.send(500, {"error": {"code": "InternalServerError", "message": repr(e)}})

    def route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        arm = self.arm
        parts = [p for p in path.split("/") if p]
        lower = [p.lower() for p in parts]
        if path.endswith("/.well-known/openid-configuration"):
            tenant = parts[0]
            base = f"{arm.url}/{tenant}"
            return self.send(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                },
            )
        if len(parts) == 4 and lower[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            return self.send(200, arm.token(form, parts[0]))
        if lower[:2] == ["_test", "console"] and method == "PUT" and len(parts) == 3:
            # Not ARM: the tests' control channel (like moto's /moto-api), used by the stand-ins plugin in
            # another process to make a KVM stand-in's console file the VM's serial log.
            console = Path(json.loads(raw)["file"])
            arm.consoles[parts[2].lower()] = lambda: console.read_text(errors="replace") if console.exists() else ""
            return self.send(204)
        if lower[:2] == ["_test", "screen"] and method == "PUT" and len(parts) == 3:
            # Not ARM: the tests' control channel, for the stand-ins plugin in another process to make a KVM
            # stand-in's screen the VM's boot diagnostics screenshot.
            arm.screens[parts[2].lower()] = standin_screen(json.loads(raw)["domain"])
            return self.send(204)
        if lower == ["_test", "provisioning"] and method == "GET":
            # Not ARM: the tests' control channel, for the stand-ins plugin in another process to boot a guest for
            # each VM waiting for its guest's report, forwarded to the VM's WireServer.
            return self.send(200, arm.awaiting())
        if lower[:1] == ["consoles"] and method == "GET" and lower[1].endswith(".bmp"):
            take = arm.screens.get(lower[1].removesuffix(".bmp"))
            if take is None:
                raise ArmError(404, "BlobNotFound", "The specified blob does not exist.")
            return self.send(200, raw=bitmap(take), content_type="image/bmp")
        if lower[:1] == ["consoles"] and method == "GET":
            source = arm.consoles.get(parts[1].lower())
            if source is None:
                raise ArmError(404, "BlobNotFound", "The specified blob does not exist.")
            return self.send(200, raw=source().encode(), content_type="text/plain")
        if self.headers.get("Authorization", "").split(" ")[0] != "Bearer":
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        if len(parts) < 2 or lower[0] != "subscriptions":
            raise ArmError(404, "NotFound", f"no route for {path}")
        with arm.lock:
            arm.requests.append((method, path, json.loads(raw) if raw else None))
            arm.called(Call(method, path, decoded(raw)))
            return self.route_subscription(method, parts, lower, query, raw)

    def route_subscription(
        self, method: str, parts: list[str], lower: list[str], query: dict[str, str], raw: bytes
    ) -> None:
        arm = self.arm
        sub = parts[1]
        rest, lrest = parts[2:], lower[2:]
        if lower[-4:] == ["providers", "microsoft.resources", "tags", "default"]:
            return self.tags_at_scope(method, "/" + "/".join(parts[:-4]), query, raw)
        if lrest[:1] == ["providers"] and len(rest) >= 5 and lrest[2] == "locations" and lrest[4] == "operations":
            return self.operation_status(rest[5] if len(rest) > 5 else "")
        if lrest == ["providers", "microsoft.compute", "skus"]:
            self.check_version("Microsoft.Compute", query, "microsoft.compute/skus")
            return self.send(200, {"value": self.skus(query.get("$filter", ""))})
        if lrest == ["resources"]:
            self.check_version("Microsoft.Resources", query)
            return self.send(200, {"value": self.list_resources(query.get("$filter", ""), None)})
        if lrest == ["resourcegroups"] and method == "GET":
            self.check_version("Microsoft.Resources", query)
            groups = [g for g in arm.groups.values() if self.matches(g, query.get("$filter", ""))]
            return self.send(200, {"value": groups})
        if lrest[:1] == ["resourcegroups"] and len(rest) == 2:
            return self.resource_group(method, sub, rest[1], query, raw)
        if lrest[:1] == ["resourcegroups"] and len(rest) == 3 and lrest[2] == "resources":
            self.need_group(rest[1])
            return self.send(200, {"value": self.list_resources(query.get("$filter", ""), rest[1])})
        if lrest[:1] == ["resourcegroups"] and len(rest) >= 6 and lrest[2] == "providers":
            group, namespace, kinds = rest[1], rest[3], rest[4:]
            return self.resource(method, sub, group, namespace, kinds, query, raw)
        raise ArmError(404, "NotFound", f"no route for /{'/'.join(parts)}")

    # -- helpers

    def check_version(self, namespace: str, query: dict[str, str], type_path: str | None = None) -> str:
        """The request's api-version, which must be one the installed SDK sends for that resource type (its models
        are of that version), else ARM's NoRegisteredProviderFound."""
        version = query.get("api-version")
        known = wire.type_versions(namespace).get(type_path or "") or wire.api_versions(namespace)
        if version not in known:
            self.arm.violations.append(f"{self.command} {self.path}: api-version {version!r} is not the SDK's")
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for API version '{version}' of {namespace}. "
                f"The supported api-versions are '{', '.join(sorted(known))}'.",
            )
        return version

    def body(self, raw: bytes, cls: type) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise ArmError(400, "InvalidRequestContent", f"The request content was invalid JSON: {e}") from None
        found = wire.model_problems(body, cls)
        if found:
            self.arm.violations += [f"{self.command} {self.path}: {cls.__name__} {p}" for p in found]
            raise ArmError(
                400,
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized as {cls.__name__}: " + "; ".join(found),
            )
        return body

    def reply(self, status: int, body: dict[str, Any], cls: type, headers: dict[str, str] | None = None) -> None:
        found = wire.model_problems(body, cls, request=False)
        if found:
            self.arm.violations += [f"response to {self.command} {self.path}: {cls.__name__} {p}" for p in found]
            raise ArmError(500, "FakeResponseInvalid", f"the fake's own {cls.__name__} is not the SDK's: {found}")
        self.send(status, body, headers)

    def need_group(self, name: str) -> dict[str, Any]:
        group = self.arm.groups.get(name.lower())
        if group is None or group["properties"]["provisioningState"] == "Deleting":
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return group

    @staticmethod
    def matches(item: dict[str, Any], expression: str) -> bool:
        if not expression:
            return True
        terms = dict(
            (k.strip().lower(), v.strip().strip("'"))
            for k, v in (t.split(" eq ", 1) for t in expression.split(" and ") if " eq " in t)
        )
        tags = item.get("tags") or {}
        name = terms.get("tagname")
        if name is not None and name not in tags:
            return False
        if "tagvalue" in terms and tags.get(name) != terms["tagvalue"]:
            return False
        if "resourcetype" in terms and item.get("type", "").lower() != terms["resourcetype"].lower():
            return False
        return True

    def list_resources(self, expression: str, group: str | None) -> list[dict[str, Any]]:
        found = []
        for item in self.arm.resources.values():
            if group is not None and f"/resourcegroups/{group.lower()}/" not in item["id"].lower():
                continue
            if item["type"].lower().count("/") > 1:
                continue
            if self.matches(item, expression):
                found.append({k: item[k] for k in ("id", "name", "type", "location", "tags") if k in item})
        return found

    def skus(self, expression: str) -> list[dict[str, Any]]:
        location = expression.split("eq", 1)[1].strip().strip("'") if "location" in expression else "westeurope"
        return [
            {
                "resourceType": "virtualMachines",
                "name": name,
                "tier": "Standard",
                "locations": [location],
                "capabilities": [{"name": "vCPUs", "value": str(cores)}],
                "restrictions": [],
            }
            for name, cores in self.arm.faults.skus.items()
        ]

    def operation_status(self, op_id: str) -> None:
        op = self.arm.operations.get(op_id)
        if op is None:
            raise ArmError(404, "ResourceNotFound", f"operation {op_id} not found")
        if op.status == "InProgress":
            op.polls -= 1
            if op.polls <= 0 and not op.pending():
                op.error = op.done() or op.error
                op.status = "Failed" if op.error else "Succeeded"
        body: dict[str, Any] = {"name": op.id, "status": op.status}
        if op.error:
            body["error"] = op.error
        self.send(200, body)

    def async_headers(
        self,
        namespace: str,
        location: str,
        sub: str,
        version: str,
        done: Callable[[], dict[str, str] | None],
        error: dict[str, str] | None = None,
        pending: Callable[[], bool] | None = None,
    ) -> dict[str, str]:
        url = self.arm.operation(namespace, location, done, error, pending).replace("{sub}", sub)
        return {"Azure-AsyncOperation": f"{url}?api-version={version}"}

    # -- tags at a scope

    def tags_at_scope(self, method: str, scope: str, query: dict[str, str], raw: bytes) -> None:
        """The Tags resource of a resource group or resource: GET, or PATCH with operation Merge, Replace or Delete."""
        arm = self.arm
        self.check_version("Microsoft.Resources", query)
        parts = [p.lower() for p in scope.split("/") if p]
        item = self.need_group(parts[3]) if len(parts) == 4 and parts[2] == "resourcegroups" else arm.get(scope)
        if item is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{scope}' was not found.")
        if method == "PATCH":
            patch = self.body(raw, wire.model("Microsoft.Resources", "TagsPatchResource"))
            given = (patch.get("properties") or {}).get("tags") or {}
            tags = dict(item.get("tags") or {})
            if patch.get("operation") == "Merge":
                tags.update(given)
            elif patch.get("operation") == "Replace":
                tags = dict(given)
            elif patch.get("operation") == "Delete":
                tags = {k: v for k, v in tags.items() if k not in given}
            else:
                raise ArmError(400, "InvalidRequestContent", f"unknown tags operation {patch.get('operation')!r}")
            check_tags(tags)
            item["tags"] = tags
        elif method != "GET":
            raise ArmError(405, "MethodNotAllowed", method)
        body = {
            "id": f"{scope}/providers/Microsoft.Resources/tags/default",
            "name": "default",
            "type": "Microsoft.Resources/tags",
            "properties": {"tags": item.get("tags") or {}},
        }
        return self.reply(200, body, wire.model("Microsoft.Resources", "TagsResource"))

    # -- resource groups

    def resource_group(self, method: str, sub: str, name: str, query: dict[str, str], raw: bytes) -> None:
        arm = self.arm
        version = self.check_version("Microsoft.Resources", query)
        cls = wire.model("Microsoft.Resources", "ResourceGroup")
        key = name.lower()
        if method == "PUT":
            body = self.body(raw, cls)
            check_tags(body.get("tags"))
            existing = arm.groups.get(key)
            group = {
                "id": f"/subscriptions/{sub}/resourceGroups/{name}",
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": body.get("location"),
                "tags": body.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"},
            }
            if existing is not None:
                group["name"], group["id"] = existing["name"], existing["id"]
            arm.groups[key] = group
            return self.reply(200 if existing else 201, group, cls)
        if method == "HEAD":
            return self.send(204 if key in arm.groups else 404)
        group = self.need_group(name)
        if method == "GET":
            return self.reply(200, group, cls)
        if method == "DELETE":
            group["properties"]["provisioningState"] = "Deleting"

            def done() -> None:
                prefix = f"/subscriptions/{sub}/resourcegroups/{key}/".lower()
                for rid in [r for r in arm.resources if r.startswith(prefix)]:
                    del arm.resources[rid]
                    arm.drop_wireserver(rid)
                arm.groups.pop(key, None)

            headers = self.async_headers("Microsoft.Resources", group["location"], sub, version, done)
            headers["Location"] = headers["Azure-AsyncOperation"]
            return self.send(202, None, headers)
        raise ArmError(405, "MethodNotAllowed", method)

    # -- provider resources

    def resource(
        self, method: str, sub: str, group: str, namespace: str, kinds: list[str], query: dict[str, str], raw: bytes
    ) -> None:
        arm = self.arm
        self.need_group(group)
        if len(kinds) == 3 and kinds[0].lower() == "virtualmachines" and method == "POST":
            return self.vm_action(sub, group, namespace, kinds[1], kinds[2], query)
        type_path = "/".join([namespace, *kinds[0::2]]).lower()
        if type_path not in TYPES:
            raise ArmError(400, "InvalidResourceType", f"The resource type '{type_path}' could not be found.")
        ns, model_name, _ = TYPES[type_path]
        version = self.check_version(ns, query, type_path)
        cls = wire.model(ns, model_name)
        base = f"/subscriptions/{sub}/resourceGroups/{arm.groups[group.lower()]['name']}/providers/{ns}"
        if len(kinds) % 2 == 1:  # a collection
            prefix = (base + "/" + "/".join(kinds)).lower() + "/"
            items = [
                r
                for r in arm.resources.values()
                if r["id"].lower().startswith(prefix) and "/" not in r["id"].lower()[len(prefix) :]
            ]
            return self.send(200, {"value": items})
        rid = base + "/" + "/".join(kinds)
        item = arm.get(rid)
        if method == "GET":
            if item is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{ns}/{'/'.join(kinds)}' under resource group '{group}' was not found.",
                )
            return self.reply(200, item, cls)
        if method == "PUT":
            body = self.body(raw, cls)
            check_tags(body.get("tags"))
            return self.create(sub, group, ns, type_path, rid, kinds, body, item, version, cls)
        if method == "PATCH":
            if item is None:
                raise ArmError(404, "ResourceNotFound", f"The Resource '{ns}/{'/'.join(kinds)}' was not found.")
            patch = json.loads(raw or b"{}")
            if "tags" in patch:
                check_tags(patch["tags"])
                item["tags"] = patch["tags"]
            return self.reply(200, item, cls)
        if method == "DELETE":
            if item is None:
                return self.send(204)
            self.check_delete(type_path, item)
            item["properties"]["provisioningState"] = "Deleting"

            def done() -> None:
                self.forget(type_path, item)
                arm.drop_wireserver(item["id"])

            headers = self.async_headers(ns, item.get("location") or "westeurope", sub, version, done)
            headers["Location"] = headers["Azure-AsyncOperation"]
            return self.send(202, None, headers)
        raise ArmError(405, "MethodNotAllowed", method)

    def ref(self, value: dict[str, Any] | None, what: str) -> dict[str, Any]:
        rid = (value or {}).get("id", "")
        found = self.arm.get(rid)
        if found is None:
            raise ArmError(
                400, "InvalidResourceReference", f"Resource {rid or '(none)'} referenced by {what} was not found."
            )
        return found

    def create(
        self,
        sub: str,
        group: str,
        ns: str,
        type_path: str,
        rid: str,
        kinds: list[str],
        body: dict[str, Any],
        existing: dict[str, Any] | None,
        version: str,
        cls: type,
    ) -> None:
        arm = self.arm
        props = body.setdefault("properties", {})
        rg = arm.groups[group.lower()]
        location = body.get("location") or rg["location"]
        name = kinds[-1]
        error = None
        if type_path.startswith("microsoft.compute/galleries/"):
            parent = rid.rsplit("/", 2)[0]
            if arm.get(parent) is None:  # troubleshooting-shared-images.md: "Parent resource ... not found"
                nested = "/".join(parent.split("/galleries/", 1)[1].split("/")[0::2])
                raise ArmError(
                    404,
                    "ParentResourceNotFound",
                    f"Can not perform requested operation on nested resource. Parent resource '{nested}' not found.",
                )
        if type_path == "microsoft.compute/virtualmachines":
            error = self.check_vm(rid, name, location, props)
        elif type_path == "microsoft.compute/images":
            blob = ((props.get("storageProfile") or {}).get("osDisk") or {}).get("blobUri", "")
            found = arm.blob_footer(blob) if blob and arm.blob_footer is not None else None
            if found is None:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The blob {blob or '(none)'} does not exist or is not "
                    "readable (properties.storageProfile.osDisk.blobUri).",
                )
            check_vhd_blob(blob, *found)
        elif type_path == "microsoft.network/networkinterfaces":
            for config in props.get("ipConfigurations") or []:
                cprops = config.setdefault("properties", {})
                self.ref(cprops.get("subnet"), f"NIC {name}")
                if cprops.get("publicIPAddress"):
                    self.ref(cprops["publicIPAddress"], f"NIC {name}")
                cprops.setdefault("privateIPAddress", f"10.0.0.{4 + len(arm.resources) % 250}")
                cprops["privateIPAllocationMethod"] = cprops.get("privateIPAllocationMethod") or "Dynamic"
                config["id"] = f"{rid}/ipConfigurations/{config.get('name', 'ipconfig1')}"
            if props.get("networkSecurityGroup"):
                self.ref(props["networkSecurityGroup"], f"NIC {name}")
        elif type_path == "microsoft.network/publicipaddresses":
            # TEST-NET-3 (RFC 5737), a documentation range: never to be connected to
            props["ipAddress"] = f"203.0.113.{secrets.randbelow(250) + 2}"
        elif type_path == "microsoft.network/networksecuritygroups":
            for rule in props.get("securityRules") or []:
                check_priority(rule)
                rule["id"] = f"{rid}/securityRules/{rule.get('name')}"
                rule.setdefault("properties", {})["provisioningState"] = "Succeeded"
        elif type_path == "microsoft.network/virtualnetworks":
            for subnet in props.get("subnets") or []:
                subnet["id"] = f"{rid}/subnets/{subnet.get('name')}"
                subnet["type"] = "Microsoft.Network/virtualNetworks/subnets"
                subnet.setdefault("properties", {})["provisioningState"] = "Succeeded"
        item = {**body, "id": rid, "name": name, "type": f"{ns}/{'/'.join(kinds[0::2])}", "location": location}
        if type_path.endswith("/subnets"):
            item.pop("location")
        # Compute says Creating; Microsoft.Network's ProvisioningState has no such value: it says Updating
        creating = "Creating" if ns == "Microsoft.Compute" and existing is None else "Updating"
        props["provisioningState"] = creating
        arm.resources[rid.lower()] = item
        if type_path == "microsoft.network/virtualnetworks":
            for subnet in props.get("subnets") or []:
                arm.resources[subnet["id"].lower()] = subnet
        pending = None
        wireserver: WireServer | None = None
        if type_path == "microsoft.compute/virtualmachines" and existing is None:
            # created from an image: in progress until the guest reports ready to the VM's WireServer
            wireserver = WireServer(goal=GoalState(str(uuid.uuid4()), f"{props['vmId']}._{name}")).start()
            arm.wireservers[rid.lower()] = wireserver
            deadline = time.monotonic() + arm.provisioning_timeout

            def pending() -> bool:
                alive = rid.lower() in arm.wireservers
                return alive and not wireserver.ready.is_set() and time.monotonic() < deadline

            if arm.guest is not None:
                threading.Thread(target=arm.guest, args=(name, wireserver), daemon=True).start()

        def done() -> dict[str, str] | None:
            if wireserver is not None and rid.lower() not in arm.resources:  # deleted while it was being created
                return {
                    "code": "OperationPreempted",
                    "message": "Operation execution has been preempted by a more recent operation.",
                }
            failed = error
            if failed is None and wireserver is not None and not wireserver.ready.is_set():
                failed = provisioning_timed_out(name)
            props["provisioningState"] = "Failed" if failed else "Succeeded"
            if type_path == "microsoft.compute/virtualmachines" and not error:
                self.link_vm(item)  # a VM whose guest never reported exists all the same (and runs)
            return failed

        headers = self.async_headers(ns, location, sub, version, done, error, pending)
        self.reply(201 if existing is None else 200, item, cls, headers)

    def check_vm(self, rid: str, name: str, location: str, props: dict[str, Any]) -> dict[str, str] | None:
        arm = self.arm
        check_custom_data((props.get("osProfile") or {}).get("customData"))  # the request's parameters first
        check_ssh_keys((props.get("osProfile") or {}).get("linuxConfiguration") or {})
        size = (props.get("hardwareProfile") or {}).get("vmSize")
        if size not in arm.faults.skus:
            raise ArmError(
                409,
                "SkuNotAvailable",
                f"The requested VM size '{size}' is currently not available in "
                f"location '{location}'. Please try another size or deploy to a "
                "different location or different zone.",
            )
        used = sum(
            arm.faults.skus.get(r["properties"]["hardwareProfile"]["vmSize"], 0)
            for r in arm.resources.values()
            if r["type"] == "Microsoft.Compute/virtualMachines"
        )
        if used + arm.faults.skus[size] > arm.faults.cores:
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation could not be completed as it results in exceeding "
                f"approved Total Regional Cores quota. Location: {location}, "
                f"Current Limit: {arm.faults.cores}, Current Usage: {used}, "
                f"Additional Required: {arm.faults.skus[size]}.",
            )
        for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
            self.ref(nic, f"VM {name}")
        image = (props.get("storageProfile") or {}).get("imageReference") or {}
        if "/galleries/" in image.get("id", "").lower():
            self.gallery_image(image["id"], location)
        elif image.get("id"):
            self.ref(image, f"VM {name}")
        linux = (props.get("osProfile") or {}).get("linuxConfiguration") or {}
        if linux.get("disablePasswordAuthentication") and (props.get("osProfile") or {}).get("adminPassword"):
            raise ArmError(
                400, "InvalidParameter", "adminPassword must not be set with password authentication disabled."
            )
        props["vmId"] = str(uuid.uuid4())
        return None

    def gallery_image(self, image_id: str, location: str) -> dict[str, Any]:
        """The gallery image version a VM in ``location`` boots from ``image_id`` (an image version's id, or an image
        definition's: its latest version), replicated there; else Azure's refusal, which names the id
        (MicrosoftDocs/azure-docs, articles/virtual-machines/troubleshooting-shared-images.md, "Issues creating or
        updating a VM ... from image version"; the status, code and message as a real ARM error quotes them:
        ``Status=404 Code="GalleryImageNotFound"`` in pulumi/pulumi-aws#5129, January 2025)."""
        arm = self.arm
        found = arm.get(image_id)
        if found is not None and found["type"].lower() == "microsoft.compute/galleries/images":
            prefix = image_id.lower() + "/versions/"
            named = [r for k, r in arm.resources.items() if k.startswith(prefix)]
            versions = [r for r in named if re.fullmatch(r"\d+\.\d+\.\d+", r["name"])]
            latest = max(versions, key=lambda r: tuple(int(n) for n in r["name"].split(".")), default=None)
            found = latest
        regions = []
        if found is not None:
            targets = ((found["properties"].get("publishingProfile") or {}).get("targetRegions")) or []
            regions = [t["name"] for t in targets] or [found["location"]]
        if found is None or location.replace(" ", "").lower() not in {r.replace(" ", "").lower() for r in regions}:
            raise ArmError(
                404,
                "GalleryImageNotFound",
                f"The gallery image {image_id} is not available in {location} region. Please contact image owner "
                "to replicate to this region, or change your requested region.",
            )
        return found

    def link_vm(self, vm: dict[str, Any]) -> None:
        """What Azure does once a VM exists: its OS disk becomes a resource, its NICs point back to it."""
        arm = self.arm
        props = vm["properties"]
        os_disk = props.setdefault("storageProfile", {}).setdefault("osDisk", {})
        disk_name = os_disk.get("name") or f"{vm['name']}_OsDisk_1_{secrets.token_hex(16)}"
        group_id = vm["id"].split("/providers/")[0]
        disk_id = f"{group_id}/providers/Microsoft.Compute/disks/{disk_name}"
        os_disk.update(name=disk_name, managedDisk={"id": disk_id})
        arm.resources[disk_id.lower()] = {
            "id": disk_id,
            "name": disk_name,
            "type": "Microsoft.Compute/disks",
            "location": vm["location"],
            "managedBy": vm["id"],
            "properties": {
                "provisioningState": "Succeeded",
                "diskState": "Attached",
                "creationData": {"createOption": "FromImage"},
            },
        }
        for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
            found = arm.get(nic["id"])
            if found is not None:
                found["properties"]["virtualMachine"] = {"id": vm["id"]}

    def referrers(self, rid: str, parent: str = "") -> list[str]:
        """Ids of resources whose body mentions ``rid`` (ARM's own dependency check, simplified)."""
        needle = json.dumps(rid.lower())[1:-1]
        return [
            r["id"]
            for key, r in self.arm.resources.items()
            if key not in (rid.lower(), parent.lower())
            and not key.startswith(rid.lower() + "/")
            and r["properties"].get("provisioningState") != "Deleting"
            and needle in json.dumps(r).lower()
        ]

    def check_delete(self, type_path: str, item: dict[str, Any]) -> None:
        arm = self.arm
        users = self.referrers(item["id"])
        if type_path == "microsoft.network/networksecuritygroups":
            if arm.faults.nsg_busy > 0 and not users:
                arm.faults.nsg_busy -= 1
                users = ["a network interface being released"]
            if users:
                raise ArmError(
                    400,
                    "InUseNetworkSecurityGroupCannotBeDeleted",
                    f"Network security group {item['id']} cannot be deleted because it is in use by "
                    f"the following resources: {users}.",
                )
        elif type_path in ("microsoft.network/virtualnetworks", "microsoft.network/virtualnetworks/subnets"):
            for subnet in [item] if type_path.endswith("subnets") else item["properties"].get("subnets") or []:
                users = self.referrers(subnet["id"], subnet["id"].rsplit("/subnets/", 1)[0])
                if users:
                    raise ArmError(
                        400,
                        "InUseSubnetCannotBeDeleted",
                        f"Subnet {subnet['name']} is in use by {users} and cannot be deleted.",
                    )
        elif type_path == "microsoft.network/networkinterfaces" and item["properties"].get("virtualMachine"):
            vm = item["properties"]["virtualMachine"]["id"]
            if arm.get(vm) is not None:
                raise ArmError(400, "NicInUse", f"Network Interface {item['id']} is used by existing resource {vm}.")
        elif type_path == "microsoft.network/publicipaddresses" and users:
            raise ArmError(
                400,
                "PublicIPAddressCannotBeDeleted",
                f"Public IP address {item['id']} can not be deleted since it is still allocated to "
                f"resource {users[0]}.",
            )
        elif type_path == "microsoft.compute/disks" and users:
            raise ArmError(409, "OperationNotAllowed", f"{item['name']} is in use by {users[0]}.")
        elif type_path == "microsoft.compute/images":
            # Azure refuses only while VMs are still being provisioned from the image; a VM that exists no longer
            # needs it (Azure's own message, as reported in nanovms/ops#766 and Azure/azure-cli#6254).
            provisioning = [
                arm.get(u) for u in users if "/microsoft.compute/virtualmachines/" in u.lower() and arm.get(u)
            ]
            names = [v["name"] for v in provisioning if v["properties"].get("provisioningState") == "Creating"]
            if names:
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation 'Image Delete' is not allowed since the Virtual Machines '{','.join(names)}' are "
                    f"being provisioned using the Image '{item['name']}'.",
                )

    def forget(self, type_path: str, item: dict[str, Any]) -> None:
        arm = self.arm
        rid = item["id"].lower()
        for key in [k for k in arm.resources if k == rid or k.startswith(rid + "/")]:
            del arm.resources[key]
        if type_path == "microsoft.compute/virtualmachines":
            os_disk = item["properties"].get("storageProfile", {}).get("osDisk", {})
            disk = os_disk.get("managedDisk", {}).get("id")
            if disk and arm.get(disk) is not None:
                if os_disk.get("deleteOption", "Detach").lower() == "delete":
                    del arm.resources[disk.lower()]
                else:
                    arm.get(disk).pop("managedBy", None)
            for nic in item["properties"].get("networkProfile", {}).get("networkInterfaces") or []:
                found = arm.get(nic["id"])
                if found is not None:
                    found["properties"].pop("virtualMachine", None)
                    if (nic.get("properties") or {}).get("deleteOption", "Detach").lower() == "delete":
                        del arm.resources[nic["id"].lower()]
            arm.consoles.pop(item["name"].lower(), None)
            arm.screens.pop(item["name"].lower(), None)

    def vm_action(self, sub: str, group: str, namespace: str, name: str, action: str, query: dict[str, str]) -> None:
        arm = self.arm
        self.check_version("Microsoft.Compute", query, f"microsoft.compute/virtualmachines/{action.lower()}")
        rid = f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"
        vm = arm.get(rid)
        if vm is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under "
                f"resource group '{group}' was not found.",
            )
        if action.lower() != "retrievebootdiagnosticsdata":
            raise ArmError(400, "InvalidResourceType", f"unknown action {action}")
        diagnostics = (vm["properties"].get("diagnosticsProfile") or {}).get("bootDiagnostics") or {}
        if not diagnostics.get("enabled"):
            raise ArmError(409, "OperationNotAllowed", "Boot diagnostics are not enabled for this VM.")
        token = vm["name"].lower()
        arm.consoles.setdefault(token, lambda: "")
        cls = wire.model("Microsoft.Compute", "RetrieveBootDiagnosticsDataResult")
        sas = "sv=2021-08-06&sr=b&sp=r&sig=fake"
        self.reply(
            200,
            {
                "consoleScreenshotBlobUri": f"{arm.url}/consoles/{token}.bmp?{sas}",
                "serialConsoleLogBlobUri": f"{arm.url}/consoles/{token}?{sas}",
            },
            cls,
        )
