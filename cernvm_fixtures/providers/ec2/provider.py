"""The provider and the machine: configuration checks, launch, wait, console, login, keep, teardown."""

from __future__ import annotations

import base64
import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from ...images import Accepts, local_file
from ...ledger import Resource
from ...screen import write_png
from ..base import Machine, Provider, RemoteMachine, console_text
from ..kit import FIELD_PREFIX, encode_fields, wait_until
from . import image as images
from . import network
from .aws import (
    DESTROY_POLL,
    DESTROY_TIMEOUT,
    boto3_module,
    call,
    call_until_free,
    client,
    error_code,
    pages,
    resolve_region,
)
from .options import AMI_ID, Ec2Options
from .tags import (
    AWS_TYPE,
    CREATION_ORDER,
    RUN_TAG,
    deleter,
    ids,
    principal_digest,
    resource_from_tags,
    tag_dict,
    tag_filters,
    tag_list,
    teardown_order,
)

if TYPE_CHECKING:
    from ...config import Target
    from ...context import Context
    from ...doctor import Check
    from ...profile import Profile

log = logging.getLogger(__name__)

HVM = Accepts(
    ".hvm",
    "an AMI id (ami-...) or imports a raw HVM image file (ucernvm-<branch>.<V>-<R>.cernvm.x86_64.hvm)",
    convertible=(".raw", ".img", ".qcow2", ".vmdk", ".vdi", ".vhd"),
)

XEN_FAMILIES = frozenset("t1 t2 m1 m2 m3 m4 c1 c3 c4 cc2 cr1 r3 r4 i2 i3 d2 x1 x1e g2 g3 g3s p2 p3 h1 f1 hs1".split())
"""Instance families on the Xen hypervisor, whose EBS disks are not NVMe; every newer family is Nitro
(AWS: "Instances built on the Nitro System"; i3.metal is Nitro too)."""
USER_DATA_LIMIT = 16 * 1024
"""Bytes of user data EC2 accepts (before base64)."""


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

    def image_source(self) -> tuple[str, str | Path]:
        """("ami", id) or ("file", path), from the generic ``image`` key; local checks only."""
        image = self.target.image
        if AMI_ID.match(image):
            return "ami", image
        if image.startswith("ami-"):
            raise ConfigError(
                f"{self.target.where('image')}: {image!r} is not a valid AMI id (ami- and 8 or 17 hex digits)"
            )
        path = local_file(self.target, HVM)
        if not self.options.import_bucket:
            raise ConfigError(
                f"{self.target.where('import_bucket')}: required to import {path.name}: the S3 bucket to upload it to"
            )
        return "file", path.resolve()

    def check_credentials(self) -> None:
        session = boto3_module().session.Session(region_name=self.region)
        if session.get_credentials() is None:
            raise ProviderError(
                f"{self.target.where()}: boto3 found no AWS credentials (it looks at AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, SSO and instance roles); "
                "cernvm-fixtures never reads them from its own config"
            )

    def check_ami(self, ec2: Any, ami: str) -> dict[str, Any]:
        found = call("describe-images", ec2.describe_images, missing_ok=True, ImageIds=[ami])
        images = (found or {}).get("Images") or []
        if not images:
            raise ConfigError(
                f"{self.target.where('image')}: AMI {ami} not found in region {self.region} "
                "(describe-images found nothing; check the id, the region and that the image is shared with you)"
            )
        image = images[0]
        if image.get("State", "available") != "available":
            raise ConfigError(f"{self.target.where('image')}: AMI {ami} is {image['State']}, not available")
        return image

    def check_instance_type(self, ec2: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            ec2.describe_instance_types(InstanceTypes=[self.options.instance_type])
        except ClientError as e:
            if error_code(e) in ("InvalidInstanceType", "InvalidParameterValue"):
                raise ConfigError(
                    f"{self.target.where('instance_type')}: {self.options.instance_type!r} is not an EC2 instance type "
                    f"offered in {self.region} (aws ec2 describe-instance-types lists them)"
                ) from None
            log.debug("cannot check the instance type: %s", error_code(e))

    def check_network(self, ec2: Any) -> str | None:
        """The VPC of the configured subnet (and check the group belongs to it); None when we create one."""
        o = self.options
        vpc_id = None
        if o.subnet_id:
            subnets = call("describe-subnets", ec2.describe_subnets, missing_ok=True, SubnetIds=[o.subnet_id])
            if not subnets or not subnets.get("Subnets"):
                raise ConfigError(f"{self.target.where('subnet_id')}: subnet {o.subnet_id} not found in {self.region}")
            vpc_id = subnets["Subnets"][0]["VpcId"]
        if o.security_group_id:
            groups = call(
                "describe-security-groups",
                ec2.describe_security_groups,
                missing_ok=True,
                GroupIds=[o.security_group_id],
            )
            if not groups or not groups.get("SecurityGroups"):
                raise ConfigError(
                    f"{self.target.where('security_group_id')}: security group {o.security_group_id} "
                    f"not found in {self.region}"
                )
            if groups["SecurityGroups"][0].get("VpcId") != vpc_id:
                raise ConfigError(
                    f"{self.target.where('security_group_id')}: {o.security_group_id} belongs to "
                    f"{groups['SecurityGroups'][0].get('VpcId')}, but subnet {o.subnet_id} to {vpc_id}"
                )
        if o.key_name:
            keys = call("describe-key-pairs", ec2.describe_key_pairs, missing_ok=True, KeyNames=[o.key_name])
            if not keys or not keys.get("KeyPairs"):
                raise ConfigError(
                    f"{self.target.where('key_name')}: key pair {o.key_name!r} not found in {self.region}"
                )
        return vpc_id

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

    def tag_spec(self, resource: Resource, kind: str | None = None) -> dict[str, Any]:
        """The TagSpecification of a create call: the entry's fields plus the target's tags."""
        kind = kind or resource.kind
        return {"ResourceType": AWS_TYPE[kind], "Tags": tag_list(tag_dict(resource, kind, self.options.tags))}

    def launch(self, machine: Ec2Machine, context: Context) -> None:
        o = self.options
        source, image = self.image_source()
        ec2 = self.ec2()
        self.check_credentials()
        log.debug("%s: creating as AWS principal %s", machine.name, self.principal)
        user_data = context.render()
        if len(user_data) > USER_DATA_LIMIT:
            raise ProviderError(f"{machine.name}: user data is {len(user_data)} bytes; EC2 accepts {USER_DATA_LIMIT}")
        ami_info: dict[str, Any] = {}
        if source == "ami":
            ami_info = self.check_ami(ec2, str(image))
        else:
            images.check_bucket(self, self.target.where("import_bucket"))
        self.check_instance_type(ec2)
        vpc_id = self.check_network(ec2)

        arch = {"arm64": "aarch64"}.get(ami_info.get("Architecture") or "", "x86_64")
        if source == "file":
            arch = "aarch64" if "aarch64" in Path(image).name else "x86_64"
            ami_info = images.import_image(self, machine, Path(image), arch)
        machine.traits["arch"] = arch
        ami = ami_info["ImageId"]

        key_name = o.key_name
        if key_name is None:
            key_name = machine.name
            key = self.entry(machine, "key-pair", key_name=key_name)
            made = call(
                "import-key-pair",
                ec2.import_key_pair,
                KeyName=key_name,
                PublicKeyMaterial=self.run.public_key.encode(),
                TagSpecifications=[self.tag_spec(key)],
            )
            self.created(key, id=made.get("KeyPairId"))

        subnet_id = o.subnet_id
        if subnet_id is None:
            vpc_id, subnet_id = network.create_network(self, machine, ec2)
        group_id = o.security_group_id or network.create_security_group(self, machine, ec2, vpc_id)

        instance = self.entry(machine, "instance", client_token=f"{machine.name}-run")
        params: dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": o.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "UserData": user_data,
            "ClientToken": instance.data["client_token"],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpEndpoint": "enabled", "HttpTokens": o.metadata_tokens},
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": subnet_id,
                    "Groups": [group_id],
                    "AssociatePublicIpAddress": o.address == "public",
                    "DeleteOnTermination": True,
                }
            ],
            "TagSpecifications": [self.tag_spec(instance), self.tag_spec(instance, "volume")],
        }
        if o.availability_zone:
            params["Placement"] = {"AvailabilityZone": o.availability_zone}
        scratch = scratch_mapping(ami_info, o.scratch_size)
        if scratch:
            params["BlockDeviceMappings"] = [scratch]
        made = call("run-instances", ec2.run_instances, **params)
        machine.instance_id = made["Instances"][0]["InstanceId"]
        self.created(instance, id=machine.instance_id)
        log.info("%s: launched %s (%s, %s) in %s", machine.name, machine.instance_id, o.instance_type, ami, self.region)

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
        endpoint = options.endpoint_url
        ec2 = client("ec2", region, endpoint)
        ours = [{"Name": "tag-key", "Values": [RUN_TAG]}]
        found: dict[tuple[Any, ...], tuple[dict[str, str], list[str]]] = {}

        def add(kind: str, tags: list[dict[str, str]] | None, ident: str) -> None:
            tags_ = {t["Key"]: t["Value"] for t in tags or []}
            entry = resource_from_tags(kind, tags_, {})
            if entry is None or entry.name in recorded:
                return  # not a whole entry of ours: never grouped with one that is
            found.setdefault((kind, entry.name, entry.run, entry.owner), (tags_, []))[1].append(ident)

        listed = functools.partial(pages, ec2)
        for reservation in listed("describe_instances", "Reservations", Filters=ours):
            for inst in reservation["Instances"]:
                if inst["State"]["Name"] != "terminated":
                    add("instance", inst.get("Tags"), inst["InstanceId"])
        for kind, operation, key, ident in (
            ("volume", "describe_volumes", "Volumes", "VolumeId"),
            ("security-group", "describe_security_groups", "SecurityGroups", "GroupId"),
            ("route-table", "describe_route_tables", "RouteTables", "RouteTableId"),
            ("subnet", "describe_subnets", "Subnets", "SubnetId"),
            ("internet-gateway", "describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
            ("vpc", "describe_vpcs", "Vpcs", "VpcId"),
        ):
            for item in listed(operation, key, Filters=ours):
                add(kind, item.get("Tags"), item[ident])
        for item in call("describe-key-pairs", ec2.describe_key_pairs, Filters=ours).get("KeyPairs", []):
            add("key-pair", item.get("Tags"), item["KeyName"])
        for item in call("describe-images", ec2.describe_images, Owners=["self"], Filters=ours).get("Images", []):
            add("image", item.get("Tags"), item["ImageId"])
        for item in listed("describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=ours):
            add("snapshot", item.get("Tags"), item["SnapshotId"])
        if options.import_bucket:
            for key, tags in images.uploaded_objects(client("s3", region, endpoint), options.import_bucket):
                add("s3-object", [{"Key": k, "Value": v} for k, v in tags.items()], key)

        resources = []
        for (kind, *_), (tags, idents) in found.items():
            data: dict[str, Any] = {"region": region, "endpoint_url": endpoint, "ids": sorted(set(idents))}
            if kind == "key-pair":
                data["key_name"] = idents[0]
            if kind == "s3-object":
                data.update(bucket=options.import_bucket, key=idents[0])
            resource = resource_from_tags(kind, tags, data)
            if resource is not None:
                resources.append(resource)
        return teardown_order(resources)


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
    return principal_digest(call("sts get-caller-identity", sts.get_caller_identity)["Arn"])


def console_screenshot(ec2: Any, instance_id: str, path: Path, what: str) -> Path:
    """GetConsoleScreenshot: the instance's screen as EC2 captures it (a JPG, base64), written as PNG."""
    try:
        found = call(f"console screenshot of {instance_id}", ec2.get_console_screenshot, InstanceId=instance_id)
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
        call(f"terminate {instance_id}", ec2.terminate_instances, missing_ok=True, InstanceIds=[instance_id])
    pending = set(instance_ids)

    def terminated() -> bool | None:
        for instance_id in sorted(pending):
            found = call(f"describe {instance_id}", ec2.describe_instances, missing_ok=True, InstanceIds=[instance_id])
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
            call_until_free(f"delete volume {volume['VolumeId']}", ec2.delete_volume, VolumeId=volume["VolumeId"])


destroy_volume = deleter("volume", "describe_volumes", "Volumes", "VolumeId", "delete_volume")


def destroy_key_pair(resource: Resource, region: str, endpoint: str | None) -> None:
    """Only a key pair that is provably ours: one carrying this entry's tags, or the id the ledger holds. A key
    pair of the recorded name that another run holds (our import was refused as a duplicate) is left alone."""
    ec2 = client("ec2", region, endpoint)
    tagged = call("describe key pairs", ec2.describe_key_pairs, Filters=tag_filters(resource)).get("KeyPairs", [])
    recorded = ids(resource)
    if recorded:
        by_id = call("describe key pairs", ec2.describe_key_pairs, missing_ok=True, KeyPairIds=recorded)
        tagged += (by_id or {}).get("KeyPairs", [])
    for name in dict.fromkeys(k["KeyName"] for k in tagged):
        call(f"delete key pair {name}", ec2.delete_key_pair, missing_ok=True, KeyName=name)


DESTROY = {
    "instance": destroy_instance,
    "volume": destroy_volume,
    "security-group": network.destroy_security_group,
    "route-table": network.destroy_route_table,
    "subnet": network.destroy_subnet,
    "internet-gateway": network.destroy_internet_gateway,
    "vpc": network.destroy_vpc,
    "key-pair": destroy_key_pair,
    "image": images.destroy_image,
    "snapshot": images.destroy_snapshot,
    "s3-object": images.destroy_s3_object,
}


class Ec2Machine(RemoteMachine):
    """One EC2 instance plus what was created for it."""

    def __init__(self, provider: Ec2Provider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: Ec2Provider = provider
        self.options: Ec2Options = provider.options
        self.instance_id: str | None = None
        self.slowdown = self.options.slowdown
        self.traits.update(
            kind="vm", instance_type=self.options.instance_type, region=provider.region, address=self.options.address
        )
        self._described: dict[str, Any] | None = None
        self._console = ""

    def _ec2(self) -> Any:
        return self.provider.ec2()

    def describe(self) -> dict[str, Any] | None:
        """The instance as EC2 describes it now (None while EC2 does not know it yet: eventual consistency)."""
        if self.instance_id is None:
            raise ProviderError(f"{self.name}: no instance was created")
        found = call(
            f"describe {self.instance_id}",
            self._ec2().describe_instances,
            missing_ok=True,
            InstanceIds=[self.instance_id],
        )
        for reservation in (found or {}).get("Reservations", []):
            for instance in reservation["Instances"]:
                self._described = instance
                return instance
        return None

    def wait_running(self, deadline: float) -> None:
        seen = {"state": "unknown", "checks": "no status yet"}

        def running() -> bool | None:
            instance = self.describe()
            if instance is None:
                return None
            state = seen["state"] = instance["State"]["Name"]
            if state in ("shutting-down", "terminated", "stopping", "stopped"):
                reason = (instance.get("StateReason") or {}).get("Message") or instance.get("StateTransitionReason")
                raise PermanentError(f"{self.instance_id} is {state}" + (f": {reason}" if reason else ""))
            return True if state == "running" else None

        def checks_passed() -> bool | None:
            found = call(
                f"describe status of {self.instance_id}",
                self._ec2().describe_instance_status,
                InstanceIds=[self.instance_id],
                IncludeAllInstances=True,
            )
            for status in found.get("InstanceStatuses", []):
                system = status.get("SystemStatus", {}).get("Status", "initializing")
                instance_status = status.get("InstanceStatus", {}).get("Status", "initializing")
                if system in ("ok", "not-applicable") and instance_status in ("ok", "not-applicable"):
                    return True
                if "impaired" in (system, instance_status):
                    raise ProviderError(
                        f"{self.instance_id} failed its status checks (system {system}, instance {instance_status})"
                    )
                seen["checks"] = f"system status {system}, instance status {instance_status}"
            return None

        poll = self.options.poll_interval
        wait_until(f"{self.instance_id} running", running, deadline, poll, status=lambda: f"still {seen['state']}")
        if self.options.status_checks:
            wait_until(
                f"{self.instance_id} status checks", checks_passed, deadline, poll, status=lambda: seen["checks"]
            )

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
        if self.instance_id is None:
            return self._console
        try:
            from botocore.exceptions import ClientError

            ec2 = self._ec2()
            try:
                found = ec2.get_console_output(InstanceId=self.instance_id, Latest=True)
            except ClientError:
                found = ec2.get_console_output(InstanceId=self.instance_id)
            text = decode_console(found.get("Output") or "")
        except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
            log.debug("%s: no console output: %s", self.name, e)
            return self._console
        if text:
            self._console = text
        return self._console

    def screenshot(self, path: Path) -> Path:
        if self.instance_id is None:
            raise ScreenUnavailable(f"{self.name}: no instance was created")
        return console_screenshot(self._ec2(), self.instance_id, path, self.name)

    @property
    def exists(self) -> bool:
        return self.instance_id is not None

    def keep(self) -> None:
        """Mark kept in the ledger and on AWS (a tag-based sweep then leaves it alone until it expires)."""
        super().keep()
        ec2 = self._ec2()
        for resource in self.resources:
            found = ids(resource)
            if resource.kind == "s3-object" or not found:
                continue
            fields = encode_fields(resource)
            tags = [{"Key": k, "Value": fields[k]} for k in (FIELD_PREFIX + "kept", FIELD_PREFIX + "expires")]
            try:
                call(f"tag {resource.kind}", ec2.create_tags, Resources=found, Tags=tags)
            except ProviderError as e:
                log.warning("%s: could not tag %s as kept: %s", self.name, resource.kind, e)
