"""One GCE instance as the harness sees it: its state and address, its serial console, its screen, its kept mark."""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import ProviderError, ScreenUnavailable
from ...screen import write_png
from ..base import PlatformState, Provider, RemoteMachine, console_text
from ..kit import encode_fields
from .api import ERRORS, client, compute_v1, wait_operation
from .labels import description_for
from .options import GceOptions

log = logging.getLogger(__name__)

STOPPED = {"STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED", "REPAIRING"}
"""Instance states from which GCE does not start it again by itself (automaticRestart is off)."""


def instance_screenshot(instances: Any, project: str, zone: str, name: str, path: Path) -> Path:
    """instances.getScreenshot (a PNG in base64; only of an instance with a display device), written to ``path``."""
    try:
        found = ERRORS.call(
            f"screenshot of {name}", instances.get_screenshot, project=project, zone=zone, instance=name
        )
    except ProviderError as e:
        raise ScreenUnavailable(f"{name}: GCE gave no screenshot: {e}") from None
    try:
        image = base64.b64decode(found.contents, validate=True)
    except ValueError:
        raise ScreenUnavailable(f"{name}: GCE's screenshot is not base64") from None
    return write_png(image, path, f"{name}: GCE's screenshot")


class GceMachine(RemoteMachine):
    """One GCE instance plus what was created for it."""

    def __init__(self, provider: Provider[GceOptions, Any], name: str) -> None:
        super().__init__(provider, name)
        self.options: GceOptions = provider.options
        self.project: str | None = None
        """The instance's project once its insert was sent."""
        self.instance_id: str | None = None
        """The instance's name once GCE listed it (kept under EC2's attribute name, which the login command reads)."""
        self.slowdown = self.options.slowdown
        self.traits.update(
            kind="vm", machine_type=self.options.machine_type, zone=self.options.zone, address=self.options.address
        )
        self._described: Any = None
        self._console_next = 0
        self._console_lock = threading.Lock()

    def _instances(self) -> Any:
        return client("InstancesClient", self.options.endpoint)

    @property
    def exists(self) -> bool:
        return self.instance_id is not None

    def describe(self) -> Any:
        """The instance as GCE describes it now (None if it does not exist)."""
        if self.project is None:
            raise ProviderError(f"{self.name}: no instance was created")
        found = ERRORS.call(
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

    def platform_state(self) -> PlatformState | None:
        """GCE's status of the instance (``PROVISIONING``, ``RUNNING``...); a stopped one never runs (no restart)."""
        instance = self.describe()
        if instance is None:
            return None
        status = str(instance.status)
        failure = (instance.status_message or "GCE stopped it") if status in STOPPED else None
        return PlatformState(status, running=status == "RUNNING", failure=failure)

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

    def console_log(self) -> str:
        """Serial port 1 so far, read on from the last ``next`` offset (nothing read twice, gaps marked)."""
        if self.project is None:
            return self._console
        with self._console_lock:
            try:
                request = compute_v1().GetSerialPortOutputInstanceRequest(
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

    def publish_lifetime(self) -> None:
        """The entry fields (kept, the expiry) onto the instance's labels and into its firewall rule's description
        (a rule has no labels), so a sweep by label leaves both alone as long as the ledger does."""
        if self.project is None:
            return
        deadline = time.monotonic() + self.options.operation_timeout
        entry = next((r for r in self.resources if r.kind == "instance"), None)
        instance = self.describe() if entry is not None else None
        if entry is not None and instance is not None:
            request = compute_v1().InstancesSetLabelsRequest(
                labels={**instance.labels, **encode_fields(entry)}, label_fingerprint=instance.label_fingerprint
            )
            what = f"label {self.name} kept"
            operation = ERRORS.call(
                what,
                self._instances().set_labels_unary,
                project=self.project,
                zone=self.options.zone,
                instance=self.name,
                instances_set_labels_request_resource=request,
            )
            wait_operation(what, operation, str(self.project), self.options.zone, self.options.endpoint, deadline)
        for rule in (r for r in self.resources if r.kind == "firewall"):
            name = rule.data.get("gce_name") or f"{self.name}-ssh"
            what = f"describe firewall rule {name} kept"
            body = compute_v1().Firewall(name=name, description=description_for(rule))
            firewalls = client("FirewallsClient", self.options.endpoint)
            operation = ERRORS.call(
                what, firewalls.patch_unary, project=self.project, firewall=name, firewall_resource=body
            )
            wait_operation(what, operation, str(self.project), None, self.options.endpoint, deadline)
