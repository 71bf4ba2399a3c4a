"""The gce provider: every check before anything is created, then the launch (image, firewall rule, instance),
each resource recorded in the ledger before its insert call; teardown, screen and sweep from the ledger alone."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ConfigError, ProviderError, ScreenUnavailable
from ...images import resolve
from ...interrupts import signals_deferred
from ...ledger import Resource
from ..base import Provider
from ..kit import encode_fields
from . import teardown
from .api import ERRORS, client, credentials, insert, wait_operation
from .bodies import firewall_body, instance_body
from .image import TARBALL, check_bucket, check_disk_size, find_image, image_link, tarball_of, upload_image
from .labels import CREATION_ORDER, description_for
from .machine import GceMachine, instance_screenshot
from .options import SUBNETWORK, GceOptions

if TYPE_CHECKING:
    from ...config import Target
    from ...context import Context
    from ...doctor import Check

log = logging.getLogger(__name__)

METADATA_LIMIT = 256 * 1024
"""Bytes GCE accepts in one metadata value."""


class GceProvider(Provider[GceOptions, GceMachine]):
    """Launches CernVM on Google Compute Engine (or any endpoint speaking its API)."""

    name = "gce"
    Options = GceOptions
    creation_order: ClassVar[tuple[str, ...]] = CREATION_ORDER
    no_power_button = (
        "not implemented for GCE yet (instances.stop could: GCE sends the guest an ACPI shutdown and powers it off "
        "after a grace period)"
    )

    @property
    def project(self) -> str:
        """The target's project, else the one of the Application Default Credentials."""
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
        """The Compute API client of ``kind`` (``InstancesClient``...) on the target's endpoint."""
        return client(kind, self.options.endpoint)

    def machine(self, name: str) -> GceMachine:
        return GceMachine(self, name)

    def _record(self, machine: GceMachine, kind: str, name: str, **data: Any) -> Resource:
        """Record a resource GCE will know as ``name`` (the entry bears the machine's name), with where it lives."""
        options = self.options
        return self.record(
            machine,
            kind,
            machine.name,
            gce_name=name,
            project=self.project,
            zone=options.zone,
            endpoint=options.endpoint,
            storage_endpoint=options.storage_endpoint,
            **data,
        )

    def deadline(self) -> float:
        """When one long-running operation started now must have finished."""
        return time.monotonic() + self.options.operation_timeout

    def check_placement(self, project: str) -> None:
        """The machine type exists in the zone, the network in the project, the subnetwork (if one is set) in the
        zone's region (else ConfigError naming the key)."""
        options = self.options
        machine_type = options.machine_type.rsplit("/", 1)[-1]
        where = {"project": project, "zone": options.zone, "machine_type": machine_type}
        if ERRORS.call("get machine type", self.compute("MachineTypesClient").get, missing_ok=True, **where) is None:
            raise ConfigError(
                f"{self.target.where('machine_type')}: {machine_type!r} is not a machine type of zone "
                f"{options.zone} in project {project} (gcloud compute machine-types list --zones {options.zone})"
            )
        network = options.network.rsplit("/", 1)[-1]
        networks = self.compute("NetworksClient")
        if ERRORS.call("get network", networks.get, missing_ok=True, project=project, network=network) is None:
            raise ConfigError(f"{self.target.where('network')}: network {network!r} not found in project {project}")
        subnetwork = options.subnetwork_link()
        found = SUBNETWORK.match(subnetwork or "")
        if subnetwork and found:
            region = options.zone.rsplit("-", 1)[0]
            subnetworks = self.compute("SubnetworksClient")
            where = {"project": found["project"] or project, "region": found["region"], "subnetwork": found["name"]}
            if ERRORS.call("get subnetwork", subnetworks.get, missing_ok=True, **where) is None:
                raise ConfigError(
                    f"{self.target.where('subnetwork')}: subnetwork {found['name']!r} not found in region "
                    f"{found['region']} of project {where['project']}"
                )
            if found["region"] != region:
                raise ConfigError(
                    f"{self.target.where('subnetwork')}: {subnetwork!r} is in region {found['region']}, but zone "
                    f"{options.zone} is in {region}: name a subnetwork of {region}"
                )

    def launch(self, machine: GceMachine, context: Context) -> None:
        """Check the image, bucket, machine type and network; then upload the image (a file), make the firewall
        rule and the instance, and wait for each insert's operation."""
        project = self.project
        user_data = context.render().decode()
        if len(user_data.encode()) > METADATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: user data is {len(user_data.encode())} bytes; GCE accepts "
                f"{METADATA_LIMIT} in one metadata value"
            )
        image = resolve(self.target, TARBALL)
        images, storage = self.compute("ImagesClient"), client("storage", self.options.storage_endpoint)
        if image.file is not None:
            check_bucket(storage, self.options.bucket, image.file, self.target.where("bucket"))
        else:
            source, image_gb = find_image(images, image_link(str(image.platform), project), self.target.where("image"))
            check_disk_size(self.options, image_gb, source, self.target.where("disk_size_gb"))
        self.check_placement(project)
        if image.file is not None:
            source = upload_image(
                images,
                storage,
                tarball_of(image.file, self.target.where("image")),
                self.options,
                project,
                record=functools.partial(self._record, machine),
                created=self.created,
                machine=machine.name,
                where=self.target.where,
            )
        self._create_firewall(machine, project)
        self._create_instance(machine, project, source, user_data)

    def _insert(self, machine: GceMachine, resource: Resource, what: str, send: Callable[[], Any], clash: str) -> Any:
        """``send()`` the insert of a recorded resource and record its operation (teardown waits for it before it
        trusts a "not found"); if someone else's resource holds the name, forget the entry and raise ``clash``."""
        with signals_deferred():  # the operation's name must reach the ledger
            operation = insert(what, send)
            if operation is None:
                self.forget(machine, resource)
                raise ProviderError(f"{machine.name}: {clash}")
            self.created(resource, operation=operation.name)
        return operation

    def _create_firewall(self, machine: GceMachine, project: str) -> None:
        """One ingress rule: tcp/22 from ``ssh_cidr`` to the instance's own network tag (the machine's name)."""
        name = f"{machine.name}-ssh"
        rule = self._record(machine, "firewall", name)
        body = firewall_body(name, self.options, project, machine.name, description_for(rule))
        send = functools.partial(self.compute("FirewallsClient").insert_unary, project=project, firewall_resource=body)
        clash = f"a firewall rule named {name} already exists in project {project} and is not this run's"
        operation = self._insert(machine, rule, f"insert firewall {name}", send, clash + "; it was left alone")
        wait_operation(f"create firewall rule {name}", operation, project, None, self.options.endpoint, self.deadline())

    def _create_instance(self, machine: GceMachine, project: str, source: str, user_data: str) -> None:
        """The instance, booting ``source`` with the run's key and the context (see :func:`.bodies.instance_body`)."""
        options = self.options
        instance = self._record(machine, "instance", machine.name)
        labels = {**options.labels, **encode_fields(instance)}
        key = self.run.public_key
        body = instance_body(
            machine.name, options, project, source=source, labels=labels, public_key=key, user_data=user_data
        )
        instances = self.compute("InstancesClient")
        send = functools.partial(instances.insert_unary, project=project, zone=options.zone, instance_resource=body)
        clash = f"an instance of that name already exists in {options.zone}; left alone"
        operation = self._insert(machine, instance, f"insert instance {machine.name}", send, clash)
        machine.project = project
        what = f"create instance {machine.name}"
        wait_operation(what, operation, project, options.zone, options.endpoint, self.deadline())
        log.info("%s: launched in %s/%s (%s, %s)", machine.name, project, options.zone, options.machine_type, source)

    # -- from the ledger alone

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        """Destroy one recorded instance, firewall rule, image or object (see :mod:`.teardown`); gone is fine."""
        teardown.destroy(resource)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """The screen of the recorded instance (project, zone and endpoint from the ledger)."""
        data = resource.data
        if resource.kind != "instance" or not data.get("project") or not data.get("zone"):
            raise ScreenUnavailable(f"{resource.name}: a gce {resource.kind} has no screen (its instance has)")
        instances = client("InstancesClient", data.get("endpoint"))
        name = data.get("gce_name") or resource.name
        return instance_screenshot(instances, data["project"], data["zone"], name, path)

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """SDK, credentials and where they point, as the SDK's own chain resolves them (:mod:`.checks`)."""
        from .checks import gce_checks

        return gce_checks(target)

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources labelled by cernvm-fixtures in the target's project and zone whose machine no ledger names."""
        options: GceOptions = target.options
        project = options.project or credentials()[1]
        if not project:
            raise ConfigError(f"{target.where('project')}: not set, and the credentials name no project")
        return teardown.leftovers(options, project, recorded)
