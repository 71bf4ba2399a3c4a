"""The provider and the machine: configuration checks, launch, wait, console, login, keep, teardown."""

from __future__ import annotations

import base64
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import images
from ...errors import ConfigError, ProviderError, ScreenUnavailable
from ...ledger import Resource
from ...screen import write_png
from ..base import Machine, PlatformState, Provider, RemoteMachine, console_text
from ..kit import FIELD_PREFIX, encode_fields, wait_until
from . import image as ec2_image
from . import network
from .aws import (
    AWS,
    BUSY_TIMEOUT,
    DESTROY_POLL,
    DESTROY_TIMEOUT,
    boto3_module,
    client,
    error_code,
    pages,
    resolve_region,
)
from .options import AMI_ID, Ec2Options
from .tags import CREATION_ORDER, deleter, ids, principal_digest, tag_filters, tag_spec, tagged_resources

if TYPE_CHECKING:
    from ...config import Target
    from ...context import Context
    from ...doctor import Check
    from ...profile import Profile

log = logging.getLogger(__name__)

HVM = images.Accepts(
    ".hvm",
    "an AMI id (ami-...) or imports a raw HVM image file (ucernvm-<branch>.<V>-<R>.cernvm.x86_64.hvm)",
    convertible=(".raw", ".img", ".qcow2", ".vmdk", ".vdi", ".vhd"),
    platform=lambda image: AMI_ID.match(image) is not None,
)

XEN_FAMILIES = frozenset("t1 t2 m1 m2 m3 m4 c1 c3 c4 cc2 cr1 r3 r4 i2 i3 d2 x1 x1e g2 g3 g3s p2 p3 h1 f1 hs1".split())
"""Instance families on the Xen hypervisor, whose EBS disks are not NVMe; every newer family is Nitro
(AWS: "Instances built on the Nitro System"; i3.metal is Nitro too)."""
USER_DATA_LIMIT = 16 * 1024
"""Bytes of user data EC2 accepts (before base64)."""
STOPPED = ("shutting-down", "terminated", "stopping", "stopped")
"""Instance states from which an instance never comes to run (InstanceInitiatedShutdownBehavior is terminate)."""


def decode_console(output: str) -> str:
    """EC2 returns the console base64-encoded (some emulators return plain text)."""
    text = output
    try:
        text = base64.b64decode(output, validate=True).decode("utf-8", "replace")
    except ValueError:
        pass
    return console_text(text)


class Ec2Provider(Provider[Ec2Options, "Ec2Machine"]):
    """Launches CernVM on Amazon EC2 (or any endpoint speaking its API)."""

    name = "ec2"
    no_power_button = (
        "not implemented for EC2 yet (StopInstances could: EC2 asks the guest to shut down cleanly before it stops "
        "the instance)"
    )
    Options = Ec2Options
    creation_order = CREATION_ORDER

    # -- configuration checks, all before anything is created

    @functools.cached_property
    def region(self) -> str:
        return resolve_region(self.options.region, self.target.where("region"))

    def ec2(self) -> Any:
        return client("ec2", self.region, self.options.endpoint_url)

    def s3(self) -> Any:
        return client("s3", self.region, self.options.endpoint_url)

    def import_client(self) -> Any:
        """The client for VM Import calls (import_snapshot, describe_import_snapshot_tasks); a seam for tests."""
        return self.ec2()

    def image(self) -> images.Resolved:
        """The target's image as an AMI id (``platform``) or a raw image file to import (``file``); local checks
        only (a malformed AMI id, a missing file, no ``import_bucket`` to import it through)."""
        image = self.target.image
        if image.startswith("ami-") and not AMI_ID.match(image):
            raise ConfigError(
                f"{self.target.where('image')}: {image!r} is not a valid AMI id (ami- and 8 or 17 hex digits)"
            )
        if images.appliance_variant(image) is not None:
            raise images.refused(self.target, HVM)  # no appliance file for EC2: not an AMI named "appliance"
        found = images.resolve(self.target, HVM)
        if found.file is not None and not self.options.import_bucket:
            raise ConfigError(
                f"{self.target.where('import_bucket')}: required to import {found.file.name}: the S3 bucket to "
                "upload it to"
            )
        return found

    def check_credentials(self) -> None:
        session = boto3_module().session.Session(region_name=self.region)
        if session.get_credentials() is None:
            raise ProviderError(
                f"{self.target.where()}: boto3 found no AWS credentials (it looks at AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, SSO and instance roles); "
                "cernvm-fixtures never reads them from its own config"
            )

    # -- creation

    @classmethod
    def check_profile(cls, target: Target, profile: Profile) -> None:
        """A kernel without NVMe cannot boot on a Nitro instance type (EBS appears as NVMe there)."""
        kind = target.options.instance_type
        if not profile.kernel.nvme and (kind.split(".", 1)[0] not in XEN_FAMILIES or kind == "i3.metal"):
            raise ConfigError(
                f"{target.where('instance_type')}: {target.options.instance_type!r} is a Nitro type, whose EBS disks "
                f"are NVMe devices, and profile {profile.name!r} says its kernel has no NVMe driver (it would never "
                f"boot); use a Xen type such as m4.large, c4.large, r4.large or t2.medium"
            )

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """Credentials, region, image and VPC quota, through boto3's own chain (nothing secret printed)."""
        from .checks import ec2_checks

        return ec2_checks(target)

    def machine(self, name: str) -> Ec2Machine:
        return Ec2Machine(self, name)

    @functools.cached_property
    def principal(self) -> str:
        """The digest of the caller's AWS principal, tagged on everything created (``sweep --include-kept``)."""
        return caller_principal(self.region, self.options.endpoint_url)

    def entry(self, machine: Machine, kind: str, **data: Any) -> Resource:
        """Record a resource of ``machine`` about to be created in this region (and endpoint)."""
        return self.record(
            machine,
            kind,
            machine.name,
            region=self.region,
            endpoint_url=self.options.endpoint_url,
            principal=self.principal,
            **data,
        )

    @classmethod
    def owned_by_caller(cls, resource: Resource) -> bool:
        """Whether the resource's ``principal`` tag is the caller's own (sts get-caller-identity)."""
        recorded, region = resource.data.get("principal"), resource.data.get("region")
        if not recorded or not region:
            return False
        return recorded == caller_principal(region, resource.data.get("endpoint_url"))

    def launch(self, machine: Ec2Machine, context: Context) -> None:
        options = self.options
        image = self.image()
        ec2 = self.ec2()
        self.check_credentials()
        log.debug("%s: creating as AWS principal %s", machine.name, self.principal)
        user_data = context.render()
        if len(user_data) > USER_DATA_LIMIT:
            raise ProviderError(f"{machine.name}: user data is {len(user_data)} bytes; EC2 accepts {USER_DATA_LIMIT}")
        found: dict[str, Any] = {}
        if image.platform is not None:
            found = ec2_image.find_image(ec2, image.platform, self.target.where("image"), self.region)
        else:
            ec2_image.check_bucket(self.s3(), str(options.import_bucket), self.target.where("import_bucket"))
        check_instance_type(ec2, options.instance_type, self.target.where("instance_type"), self.region)
        vpc_id = network.check_network(ec2, options, self.target.where, self.region)

        recorder = MachineRecorder(self, machine)
        arch = {"arm64": "aarch64"}.get(found.get("Architecture") or "", "x86_64")
        if image.file is not None:
            arch = "aarch64" if "aarch64" in image.file.name else "x86_64"
            clients = ec2_image.ImportClients(ec2, self.s3(), self.import_client())
            found = ec2_image.import_image(clients, recorder, options, image.file, arch)
        machine.traits["arch"] = arch

        key_name = options.key_name or network.import_key_pair(ec2, recorder, options, self.run.public_key)
        subnet_id = options.subnet_id
        if subnet_id is None:
            vpc_id, subnet_id = network.create_network(ec2, recorder, options)
        group_id = options.security_group_id or network.create_security_group(
            ec2, recorder, options, vpc_id, self.target.where("ssh_cidr")
        )

        instance = self.entry(machine, "instance", client_token=f"{machine.name}-run")
        params: dict[str, Any] = {
            "ImageId": found["ImageId"],
            "InstanceType": options.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "UserData": user_data,
            "ClientToken": instance.data["client_token"],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": options.metadata_tokens},
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": subnet_id,
                    "Groups": [group_id],
                    "AssociatePublicIpAddress": options.address == "public",
                    "DeleteOnTermination": True,
                }
            ],
            "TagSpecifications": [tag_spec(instance, options.tags), tag_spec(instance, options.tags, "volume")],
        }
        if options.availability_zone:
            params["Placement"] = {"AvailabilityZone": options.availability_zone}
        scratch = scratch_mapping(found, options.scratch_size)
        if scratch:
            params["BlockDeviceMappings"] = [scratch]
        made = AWS.call("run-instances", ec2.run_instances, **params)
        machine.instance_id = made["Instances"][0]["InstanceId"]
        self.created(instance, id=machine.instance_id)
        log.info(
            "%s: launched %s (%s, %s) in %s",
            machine.name,
            machine.instance_id,
            options.instance_type,
            params["ImageId"],
            self.region,
        )

    # -- teardown

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        handler = DESTROY.get(resource.kind)
        if handler is None:
            raise ProviderError(f"ec2 cannot destroy unknown resource kind {resource.kind!r}")
        region = resource.data.get("region")
        if not region:
            raise ProviderError(f"{resource.name}: ledger entry for {resource.kind} has no region")
        handler(resource, region, resource.data.get("endpoint_url"))

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """The screen of the recorded instance (its id and region from the ledger)."""
        found = ids(resource)
        if resource.kind != "instance" or not found or not resource.data.get("region"):
            raise ScreenUnavailable(f"{resource.name}: an ec2 {resource.kind} has no screen (its instance has)")
        ec2 = client("ec2", resource.data["region"], resource.data.get("endpoint_url"))
        return console_screenshot(ec2, found[0], path, resource.name)

    @classmethod
    def leftovers(cls, target: Any, recorded: set[str]) -> list[Resource]:
        """Resources tagged by cernvm-fixtures in the target's region whose machine no ledger entry names."""
        options: Ec2Options = target.options
        region = resolve_region(options.region, f"{target.origin}: targets.{target.name}.region")
        endpoint, bucket = options.endpoint_url, options.import_bucket
        uploads = ec2_image.uploaded_objects(client("s3", region, endpoint), bucket) if bucket else []
        ec2 = client("ec2", region, endpoint)
        return tagged_resources(ec2, recorded, uploads, bucket, region=region, endpoint_url=endpoint)


@dataclass(frozen=True)
class MachineRecorder:
    """The :class:`~.tags.Recorder` of one machine: records through its provider (region, endpoint, principal)."""

    provider: Ec2Provider
    machine: Machine

    @property
    def name(self) -> str:
        return self.machine.name

    def record(self, kind: str, **data: Any) -> Resource:
        return self.provider.entry(self.machine, kind, **data)

    def created(self, resource: Resource, **data: Any) -> None:
        self.provider.created(resource, **data)

    def drop(self, resource: Resource) -> None:
        self.provider.drop(self.machine, resource)


def check_instance_type(ec2: Any, instance_type: str, where: str, region: str) -> None:
    """ConfigError (starting with ``where``) if EC2 offers no such instance type here; other errors only say that
    the type could not be checked (e.g. no permission to describe instance types)."""
    try:
        ec2.describe_instance_types(InstanceTypes=[instance_type])
    except AWS.errors() as e:
        if error_code(e) in ("InvalidInstanceType", "InvalidParameterValue"):
            raise ConfigError(
                f"{where}: {instance_type!r} is not an EC2 instance type offered in {region} "
                "(aws ec2 describe-instance-types lists them)"
            ) from None
        log.debug("cannot check the instance type: %s", error_code(e))


def _device_key(name: str) -> str:
    """/dev/sdb and /dev/xvdb are the same slot."""
    base = name.rsplit("/", 1)[-1]
    return base[2:] if base.startswith("xv") else base[1:] if base.startswith("s") else base


def scratch_mapping(image: dict[str, Any], size: int) -> dict[str, Any] | None:
    """An empty EBS scratch volume for µCernVM, unless the image maps a data volume itself or size is 0."""
    if size <= 0:
        return None
    root = image.get("RootDeviceName")
    mappings = image.get("BlockDeviceMappings") or []
    if any("Ebs" in m and m.get("DeviceName") != root for m in mappings):
        return None
    taken = {_device_key(m.get("DeviceName", "")) for m in mappings} | ({_device_key(root)} if root else set())
    device = next(f"/dev/sd{c}" for c in "bcdefghijklmnop" if _device_key(f"/dev/sd{c}") not in taken)
    return {"DeviceName": device, "Ebs": {"VolumeSize": size, "VolumeType": "gp3", "DeleteOnTermination": True}}


def caller_principal(region: str, endpoint_url: str | None) -> str:
    """The digest of the ARN sts get-caller-identity reports for the credentials in use."""
    sts = client("sts", region, endpoint_url)
    return principal_digest(AWS.call("sts get-caller-identity", sts.get_caller_identity)["Arn"])


def console_screenshot(ec2: Any, instance_id: str, path: Path, what: str) -> Path:
    """GetConsoleScreenshot: the instance's screen as EC2 captures it (a JPG, base64), written as PNG."""
    try:
        found = AWS.call(f"console screenshot of {instance_id}", ec2.get_console_screenshot, InstanceId=instance_id)
    except ProviderError as e:
        raise ScreenUnavailable(f"{what}: EC2 gave no screenshot: {e}") from None
    try:
        image = base64.b64decode(found.get("ImageData") or "", validate=True)
    except ValueError:
        raise ScreenUnavailable(f"{what}: EC2's screenshot of {instance_id} is not base64") from None
    return write_png(image, path, f"{what}: EC2's screenshot of {instance_id}")


def destroy_instance(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    reservations = pages(ec2, "describe_instances", "Reservations", Filters=tag_filters(resource))
    tagged = [i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    instance_ids = list(dict.fromkeys(ids(resource) + tagged))
    for instance_id in instance_ids:
        AWS.call(f"terminate {instance_id}", ec2.terminate_instances, missing_ok=True, InstanceIds=[instance_id])
    pending = set(instance_ids)

    def terminated() -> bool | None:
        for instance_id in sorted(pending):
            found = AWS.call(
                f"describe {instance_id}", ec2.describe_instances, missing_ok=True, InstanceIds=[instance_id]
            )
            states = [i["State"]["Name"] for r in (found or {}).get("Reservations", []) for i in r["Instances"]]
            if not states or all(s == "terminated" for s in states):
                pending.discard(instance_id)
        return True if not pending else None

    wait_until(
        f"{resource.name}: terminate",
        terminated,
        time.monotonic() + DESTROY_TIMEOUT,
        DESTROY_POLL,
        status=lambda: f"{', '.join(sorted(pending))} not terminated",
    )
    # The scratch disk goes with the instance (DeleteOnTermination); delete any volume of it that did not.
    volumes = pages(ec2, "describe_volumes", "Volumes", Filters=tag_filters(resource, "volume"))
    for volume in volumes:
        if volume.get("State") not in ("deleting", "deleted"):
            delete = functools.partial(ec2.delete_volume, VolumeId=volume["VolumeId"])
            what = f"delete volume {volume['VolumeId']}"
            AWS.delete_until_free(what, delete, timeout=BUSY_TIMEOUT, interval=DESTROY_POLL)


destroy_volume = deleter("volume", "describe_volumes", "Volumes", "VolumeId", "delete_volume")


DESTROY = {
    "instance": destroy_instance,
    "volume": destroy_volume,
    "security-group": network.destroy_security_group,
    "route-table": network.destroy_route_table,
    "subnet": network.destroy_subnet,
    "internet-gateway": network.destroy_internet_gateway,
    "vpc": network.destroy_vpc,
    "key-pair": network.destroy_key_pair,
    "image": ec2_image.destroy_image,
    "snapshot": ec2_image.destroy_snapshot,
    "s3-object": ec2_image.destroy_s3_object,
}


class Ec2Machine(RemoteMachine):
    """One EC2 instance plus what was created for it."""

    provider: Ec2Provider
    options: Ec2Options

    def __init__(self, provider: Ec2Provider, name: str) -> None:
        super().__init__(provider, name)
        self.options = provider.options
        self.instance_id: str | None = None
        self.slowdown = self.options.slowdown
        self.traits.update(
            kind="vm", instance_type=self.options.instance_type, region=provider.region, address=self.options.address
        )
        self._described: dict[str, Any] | None = None

    def _ec2(self) -> Any:
        return self.provider.ec2()

    def describe(self) -> dict[str, Any] | None:
        """The instance as EC2 describes it now (None while EC2 does not know it yet: eventual consistency)."""
        if self.instance_id is None:
            raise ProviderError(f"{self.name}: no instance was created")
        ids = {"InstanceIds": [self.instance_id]}
        found = AWS.call(f"describe {self.instance_id}", self._ec2().describe_instances, missing_ok=True, **ids)
        instances = [i for reservation in (found or {}).get("Reservations", []) for i in reservation["Instances"]]
        if instances:
            self._described = instances[0]
        return instances[0] if instances else None

    def platform_state(self) -> PlatformState | None:
        """EC2's instance state (``pending``, ``running``...); a failure once it is stopping or gone."""
        instance = self.describe()
        if instance is None:
            return None
        state = instance["State"]["Name"]
        if state in STOPPED:
            reason = (instance.get("StateReason") or {}).get("Message") or instance.get("StateTransitionReason")
            return PlatformState(state, failure=reason or "no reason given")
        return PlatformState(state, running=state == "running")

    def wait_running(self, deadline: float) -> None:
        """Running (:meth:`platform_state`), then, with ``status_checks``, EC2's system and instance checks passed."""
        super().wait_running(deadline)
        if self.options.status_checks:
            seen = "no status yet"

            def checks_passed() -> bool | None:
                nonlocal seen
                found = AWS.call(
                    f"describe status of {self.instance_id}",
                    self._ec2().describe_instance_status,
                    InstanceIds=[self.instance_id],
                    IncludeAllInstances=True,
                )
                for status in found.get("InstanceStatuses", []):
                    system = status.get("SystemStatus", {}).get("Status", "initializing")
                    instance = status.get("InstanceStatus", {}).get("Status", "initializing")
                    if system in ("ok", "not-applicable") and instance in ("ok", "not-applicable"):
                        return True
                    if "impaired" in (system, instance):
                        raise ProviderError(
                            f"{self.instance_id} failed its status checks (system {system}, instance {instance})"
                        )
                    seen = f"system status {system}, instance status {instance}"
                return None

            what = f"{self.instance_id} status checks"
            wait_until(what, checks_passed, deadline, self.options.poll_interval, status=lambda: seen)

    def platform_address(self) -> str:
        """The public or private IP address EC2 gave the instance (``address`` option)."""
        instance = self._described or self.describe()
        if instance is None or (self.options.address == "public" and not instance.get("PublicIpAddress")):
            instance = self.describe()
        key = "PublicIpAddress" if self.options.address == "public" else "PrivateIpAddress"
        value = (instance or {}).get(key)
        if not value:
            hint = (
                '; use a subnet that maps public addresses, or address = "private" with a jump_host'
                if self.options.address == "public"
                else ""
            )
            raise ProviderError(f"{self.name}: {self.instance_id} has no {self.options.address} address{hint}")
        return value

    # -- console, login, keep, destroy

    def console_log(self) -> str:
        """The instance's console output as EC2 last captured it (kept after the instance is gone)."""
        instance_id = self.instance_id
        if instance_id is None:
            return self._console

        def read() -> str:
            from botocore.exceptions import ClientError

            ec2 = self._ec2()
            try:
                found = ec2.get_console_output(InstanceId=instance_id, Latest=True)
            except ClientError:
                found = ec2.get_console_output(InstanceId=instance_id)
            return decode_console(found.get("Output") or "")

        return self.kept_console(read)

    def screenshot(self, path: Path) -> Path:
        if self.instance_id is None:
            raise ScreenUnavailable(f"{self.name}: no instance was created")
        return console_screenshot(self._ec2(), self.instance_id, path, self.name)

    @property
    def exists(self) -> bool:
        return self.instance_id is not None

    def publish_lifetime(self) -> None:
        """The kept mark and new expiry as tags on every resource with an id (an S3 upload has no tags to set)."""
        ec2 = self._ec2()
        refused = []
        for resource in self.resources:
            found = ids(resource)
            if resource.kind == "s3-object" or not found:
                continue
            fields = encode_fields(resource)
            tags = [{"Key": k, "Value": fields[k]} for k in (FIELD_PREFIX + "kept", FIELD_PREFIX + "expires")]
            try:
                AWS.call(f"tag {resource.kind}", ec2.create_tags, Resources=found, Tags=tags)
            except ProviderError as e:
                refused.append(str(e))
        if refused:
            raise ProviderError("; ".join(refused))
