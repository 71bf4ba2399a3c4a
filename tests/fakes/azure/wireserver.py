"""Azure's WireServer as a guest's provisioning agent meets it, one per VM on 127.0.0.1 (plain HTTP/1.0), for tests.

On Azure a VM created from a generalized image stays ``Creating`` until its guest reports ready to the WireServer
(168.63.129.16:80, or the address in DHCP option 245): cloud-init's Azure datasource
(cloudinit/sources/helpers/azure.py, ``GoalState``, ``GoalStateHealthReporter``; DataSourceAzure.py reads option 245
as ``unknown-245``) GETs ``/machine/?comp=goalstate`` and POSTs ``/machine?comp=health``, both with the headers
``x-ms-agent-name: WALinuxAgent`` and ``x-ms-version: 2012-11-30``; the health report carries the goal state's
``Incarnation`` (as ``GoalStateIncarnation``), ``Container/ContainerId`` and the role instance's ``InstanceId``,
with ``<State>Ready</State>`` (or ``NotReady`` with a ``ProvisioningFailed`` substatus). Without a Ready report the
create ends ``OSProvisioningTimedOut`` (after 40 minutes on Azure, Microsoft's support article on VM provisioning
errors; 20-40 in Azure/azure-cli#6254).

What this fake checks of a report: well-formed XML with the ``Health`` root, the goal state's incarnation, container
id and instance id, a ``State`` of ``Ready`` or ``NotReady``, and the version header; anything else is refused with
400 Bad Request (the WireServer's own answer to a malformed report is not documented; cloud-init treats any
non-2xx as a failure and retries) and kept in ``refused``. HTTP/1.0, one request per connection: the KVM stand-in's
QEMU ``guestfwd`` carries one connection at a time and reconnects after each.

:func:`report_ready` is the guest's side (the same two requests), for tests whose guest is the session's shared
stand-in, which no VM create boots.
"""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from ..server import FakeHandler, FakeServer

VERSION = "2012-11-30"
"""The protocol version cloud-init and WALinuxAgent send as ``x-ms-version`` (and the goal state's ``Version``)."""
HEADERS = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": VERSION}
"""The headers cloud-init's ``AzureEndpointHttpClient`` sends with every request."""
STATES = ("Ready", "NotReady")
"""The health states cloud-init reports (``PROVISIONING_SUCCESS_STATUS``, ``PROVISIONING_NOT_READY_STATUS``)."""


@dataclass(frozen=True)
class GoalState:
    """What the WireServer tells one VM's guest: the ids its health report must name."""

    container_id: str
    instance_id: str
    incarnation: int = 1

    def xml(self) -> bytes:
        """The goal state document, in the shape cloud-init's ``GoalState`` reads (its unit tests' template)."""
        root = ElementTree.Element("GoalState")
        ElementTree.SubElement(root, "Version").text = VERSION
        ElementTree.SubElement(root, "Incarnation").text = str(self.incarnation)
        machine = ElementTree.SubElement(root, "Machine")
        ElementTree.SubElement(machine, "ExpectedState").text = "Started"
        ElementTree.SubElement(machine, "ExpectHealthReport").text = "FALSE"
        container = ElementTree.SubElement(root, "Container")
        ElementTree.SubElement(container, "ContainerId").text = self.container_id
        role = ElementTree.SubElement(ElementTree.SubElement(container, "RoleInstanceList"), "RoleInstance")
        ElementTree.SubElement(role, "InstanceId").text = self.instance_id
        ElementTree.SubElement(role, "State").text = "Started"
        return b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root)


class HealthReportRefused(ValueError):
    """A health report the WireServer does not take (the message names what is wrong and what would be valid)."""


def health_state(body: bytes, goal: GoalState) -> str:
    """The ``State`` a health report for ``goal`` carries, or :class:`HealthReportRefused` if it is not well formed
    or names another goal state."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise HealthReportRefused(f"the health report is not well-formed XML ({e})") from None
    if root.tag != "Health":
        raise HealthReportRefused(f"the health report's root element is {root.tag!r}; expected 'Health'")
    expected = {
        "GoalStateIncarnation": str(goal.incarnation),
        "Container/ContainerId": goal.container_id,
        "Container/RoleInstanceList/Role/InstanceId": goal.instance_id,
    }
    for path, want in expected.items():
        found = root.findtext(path)
        if found is None:
            raise HealthReportRefused(f"the health report has no {path} (the goal state's is {want!r})")
        if found.strip() != want:
            raise HealthReportRefused(f"the health report's {path} is {found.strip()!r}; the goal state's is {want!r}")
    state = root.findtext("Container/RoleInstanceList/Role/Health/State")
    if state is None or state.strip() not in STATES:
        raise HealthReportRefused(
            f"the health report's Container/RoleInstanceList/Role/Health/State is {state!r}; expected one of {STATES}"
        )
    return state.strip()


@dataclass(eq=False)
class WireServer(FakeServer):
    """One VM's WireServer: serves its goal state, takes its health reports; ``ready`` once a Ready one came."""

    goal: GoalState = field(default_factory=lambda: GoalState("", ""))
    ready: threading.Event = field(default_factory=threading.Event)
    states: list[str] = field(default_factory=list)
    """The states of the reports taken, in order."""
    refused: list[str] = field(default_factory=list)
    """Why each refused request was refused (the body of the 400)."""

    def handler(self) -> type[FakeHandler]:
        return _Handler

    @property
    def port(self) -> int:
        assert self.http is not None, "the WireServer is not started"
        return int(self.http.server_address[1])


class _Handler(FakeHandler):
    protocol_version = "HTTP/1.0"  # one request per connection (QEMU's guestfwd carries one at a time)

    def send(self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, why: str) -> None:
        self.fake.refused.append(why)
        self.send(400, why.encode(), "text/plain; charset=utf-8")

    def answer(self) -> None:
        wire: WireServer = self.fake
        raw = self.read_body()
        parsed = urllib.parse.urlsplit(self.path)
        comp = urllib.parse.parse_qs(parsed.query).get("comp", [""])[0]
        if parsed.path.rstrip("/") != "/machine" or comp not in ("goalstate", "health"):
            return self.send(404, b"", "text/plain")
        if self.headers.get("x-ms-version") != VERSION:
            return self.refuse(f"x-ms-version is {self.headers.get('x-ms-version')!r}; expected {VERSION!r}")
        if comp == "goalstate" and self.command == "GET":
            return self.send(200, wire.goal.xml())
        if comp == "health" and self.command == "POST":
            try:
                state = health_state(raw, wire.goal)
            except HealthReportRefused as e:
                return self.refuse(str(e))
            wire.states.append(state)
            if state == "Ready":
                wire.ready.set()
            return self.send(200, b"")
        return self.send(405, b"", "text/plain")


def health_report(goal: GoalState, state: str = "Ready") -> bytes:
    """A health report for ``goal`` as cloud-init builds it (``GoalStateHealthReporter.build_report``)."""
    root = ElementTree.Element("Health")
    ElementTree.SubElement(root, "GoalStateIncarnation").text = str(goal.incarnation)
    container = ElementTree.SubElement(root, "Container")
    ElementTree.SubElement(container, "ContainerId").text = goal.container_id
    role = ElementTree.SubElement(ElementTree.SubElement(container, "RoleInstanceList"), "Role")
    ElementTree.SubElement(role, "InstanceId").text = goal.instance_id
    ElementTree.SubElement(ElementTree.SubElement(role, "Health"), "State").text = state
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root)


def read_goal_state(body: bytes) -> GoalState:
    """The ids a goal state document gives (cloud-init's ``GoalState`` reads the same three paths)."""
    root = ElementTree.fromstring(body)
    values = [
        root.findtext(p)
        for p in ("Container/ContainerId", "Container/RoleInstanceList/RoleInstance/InstanceId", "Incarnation")
    ]
    if None in values:
        raise ValueError(f"a goal state without ContainerId, InstanceId or Incarnation: {body[:200]!r}")
    container, instance, incarnation = (str(v).strip() for v in values)
    return GoalState(container, instance, int(incarnation))


def report_ready(url: str, timeout: float = 10) -> Any:
    """The guest's side: GET the goal state from the WireServer at ``url``, POST a Ready health report for it."""
    get = urllib.request.Request(f"{url}/machine/?comp=goalstate", headers=HEADERS)
    with urllib.request.urlopen(get, timeout=timeout) as response:
        goal = read_goal_state(response.read())
    headers = {**HEADERS, "Content-Type": "text/xml; charset=utf-8"}
    post = urllib.request.Request(f"{url}/machine?comp=health", data=health_report(goal), headers=headers)
    with urllib.request.urlopen(post, timeout=timeout) as response:
        return response.status
