"""Amazon EC2 through boto3: the CernVM "How to run on EC2" recipe, least privilege, leak-proof.

What a launch creates (each recorded in the ledger *before* its create call and
tagged at creation with run id, machine, owner, creation time and expiry):

* if ``image`` is a raw ``.hvm`` file: an S3 object (deleted again once
  imported), an imported snapshot and an HVM image registered from it with
  ``SriovNetSupport=simple``, ``EnaSupport=True`` and a scratch volume mapping
  (see :mod:`.ec2_image`);
* unless ``key_name`` names an existing key pair: a key pair imported from the
  run's public key;
* unless ``subnet_id`` is given, the minimal VPC of the CernVM documentation:
  VPC, internet gateway (attached), subnet, route table (default route to the
  gateway, associated with the subnet);
* unless ``security_group_id`` is given: a security group whose only ingress
  rule is tcp/22 from ``ssh_cidr`` (never 0.0.0.0/0, never all protocols);
* the instance, with the context as user data and the scratch disk as an extra
  EBS volume (unless the image maps one already), deleted with the instance.

Teardown (``destroy_resource``, newest first) terminates the instance and
waits, then deletes the rest in dependency order; everything already gone is
fine, and a resource whose id never reached the ledger is found by its tags.
``leftovers`` finds tagged resources with no ledger entry, for ``sweep``.

Credentials come only from boto3's own chain (environment, shared files,
profiles, SSO, instance roles); nothing secret is logged, recorded or written.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ..errors import ConfigError, PermanentError, ProviderError
from ..ledger import DEFAULT_LIFETIME, Owner, Resource
from ..transport.ssh import SSHTransport
from .base import Machine, Provider, ProviderOptions, console_text

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger(__name__)

TAG_PREFIX = "cernvm-fixtures:"
RUN_TAG = TAG_PREFIX + "run"
MACHINE_TAG = TAG_PREFIX + "machine"
TARGET_TAG = TAG_PREFIX + "target"
KIND_TAG = TAG_PREFIX + "kind"
OWNER_TAG = TAG_PREFIX + "owner"
CREATED_TAG = TAG_PREFIX + "created"
EXPIRES_TAG = TAG_PREFIX + "expires"
KEPT_TAG = TAG_PREFIX + "kept"
OUR_TAGS = 9
"""Tags cernvm-fixtures puts on every resource (Name plus the eight above); AWS allows 50 per resource."""

CREATION_ORDER = (
    "s3-object",
    "snapshot",
    "image",
    "key-pair",
    "vpc",
    "internet-gateway",
    "subnet",
    "route-table",
    "security-group",
    "volume",
    "instance",
)
"""Resource kinds in the order they depend on each other; teardown goes the other way."""
RANK = {kind: i for i, kind in enumerate(CREATION_ORDER)}

AWS_TYPE = {
    "vpc": "vpc",
    "internet-gateway": "internet-gateway",
    "subnet": "subnet",
    "route-table": "route-table",
    "security-group": "security-group",
    "key-pair": "key-pair",
    "instance": "instance",
    "volume": "volume",
    "snapshot": "snapshot",
    "image": "image",
}
SHORT = {
    "vpc": "vpc",
    "internet-gateway": "igw",
    "subnet": "subnet",
    "route-table": "rtb",
    "security-group": "sg",
    "key-pair": "key",
    "volume": "disk",
    "snapshot": "snap",
    "image": "ami",
    "s3-object": "upload",
}

AMI_ID = re.compile(r"^ami-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
TAG_TEXT = re.compile(r"^[\w\s+\-=.:/@]*$")
JUMP = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:@\[\]]+)(?::(?P<port>\d{1,5}))?$")
USER_DATA_LIMIT = 16 * 1024
"""Bytes of user data EC2 accepts (before base64)."""

GONE_CODES = {"InvalidAMIID.Unavailable", "Gateway.NotAttached", "NoSuchKey", "NoSuchBucket", "NotFound", "404"}
BUSY_CODES = {"DependencyViolation", "VolumeInUse", "InvalidSnapshot.InUse", "InvalidGroup.InUse", "IncorrectState"}

DESTROY_POLL = 2.0
"""Seconds between checks while waiting for AWS during teardown."""
DESTROY_TIMEOUT = 600.0
"""How long teardown waits for an instance to terminate."""
BUSY_TIMEOUT = 300.0
"""How long teardown retries a delete that AWS refuses because something still depends on the resource
(e.g. a terminated instance's network interface, which AWS releases a minute or two later)."""


# --- boto3, lazily --------------------------------------------------------------------------------


def _boto3():
    try:
        import boto3
    except ImportError:
        raise ConfigError("the ec2 provider needs boto3: pip install 'cernvm-fixtures[ec2]'") from None
    return boto3


@functools.lru_cache(maxsize=1)
def known_regions() -> frozenset[str] | None:
    """Every region where botocore's bundled endpoint data lists EC2 (all partitions); None without botocore."""
    try:
        import botocore.session
    except ImportError:
        return None
    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)


_clients: dict[tuple[str, str, str | None], Any] = {}
_clients_lock = threading.Lock()


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """One boto3 client per service, region and endpoint for the process (clients are thread-safe)."""
    key = (service, region, endpoint_url)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            boto3 = _boto3()
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
                user_agent_extra="cernvm-fixtures",
            )
            found = boto3.session.Session(region_name=region).client(service, endpoint_url=endpoint_url, config=config)
            _clients[key] = found
        return found


def reset_clients() -> None:
    """Forget cached clients (e.g. after the credentials in the environment changed)."""
    with _clients_lock:
        _clients.clear()


def error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def gone(code: str) -> bool:
    """Whether an AWS error code means: that resource does not exist (any more)."""
    return code.endswith(".NotFound") or code in GONE_CODES


def call(what: str, fn: Any, *, missing_ok: bool = False, **params: Any) -> Any:
    """Call a boto3 operation; AWS and botocore errors become ProviderError naming ``what`` (never secrets).

    With ``missing_ok`` an error saying the resource does not exist returns None.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**params)
    except ClientError as e:
        code = error_code(e)
        if missing_ok and gone(code):
            return None
        message = e.response.get("Error", {}).get("Message") or str(e)
        raise ProviderError(f"{what}: {code}: {message}") from None
    except BotoCoreError as e:
        raise ProviderError(f"{what}: {e}") from None


def call_until_free(what: str, fn: Any, *, timeout: float = BUSY_TIMEOUT, **params: Any) -> Any:
    """Like :func:`call` with ``missing_ok``, retrying while AWS says something still depends on the resource."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(**params)
        except ClientError as e:
            code = error_code(e)
            if gone(code):
                return None
            if code in BUSY_CODES and time.monotonic() < deadline:
                log.debug("%s: still in use (%s), retrying", what, code)
                time.sleep(DESTROY_POLL)
                continue
            message = e.response.get("Error", {}).get("Message") or str(e)
            raise ProviderError(f"{what}: {code}: {message}") from None
        except BotoCoreError as e:
            raise ProviderError(f"{what}: {e}") from None


# --- options --------------------------------------------------------------------------------------


def _tag_problems(tags: dict[str, str], reserved: int = OUR_TAGS) -> list[str]:
    problems = []
    if len(tags) > 50 - reserved:
        problems.append(f"{len(tags)} tags, at most {50 - reserved} (AWS allows 50, cernvm-fixtures sets {reserved})")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128:
            problems.append(f"key {key!r} is {len(key)} characters, AWS allows 1-128")
        if len(value) > 256:
            problems.append(f"value of {key!r} is {len(value)} characters, AWS allows 256")
        if key.lower().startswith("aws:"):
            problems.append(f"key {key!r} uses the prefix 'aws:', which AWS reserves")
        if key == "Name" or key.startswith(TAG_PREFIX):
            problems.append(f"key {key!r} is set by cernvm-fixtures itself")
        if not TAG_TEXT.match(key) or not TAG_TEXT.match(value):
            problems.append(f"tag {key!r}={value!r} has characters AWS does not allow")
    return problems


class Ec2Options(ProviderOptions):
    """Target keys of the ``ec2`` provider. The generic ``image`` key is an AMI id or a raw ``.hvm`` file."""

    region: str | None = None
    """AWS region; default: boto3's own chain (AWS_REGION / AWS_DEFAULT_REGION / the profile's region)."""
    endpoint_url: str | None = None
    """Another EC2 endpoint (a private/VPC endpoint, or a local emulator such as moto in tests)."""
    instance_type: str = "m5.large"
    subnet_id: str | None = None
    """An existing subnet to launch into; default: create the documented minimal VPC for each instance."""
    security_group_id: str | None = None
    """An existing security group (needs ``subnet_id``); default: create one allowing tcp/22 from ``ssh_cidr`` only."""
    ssh_cidr: str | None = Field(None, validate_default=True)
    """The runner's own public address (``203.0.113.7/32``); required when the provider creates the security group."""
    vpc_cidr: str = "10.77.0.0/16"
    availability_zone: str | None = None
    key_name: str | None = None
    """An existing key pair to attach; default: a key pair imported from the run's public key for each instance."""
    scratch_size: int = Field(25, ge=0, le=16384)
    """GiB of the empty scratch EBS volume µCernVM formats; 0: none (the image must bring one)."""
    tags: dict[str, str] = {}
    """Extra tags on every resource (AWS limits; no ``aws:`` prefix; ``Name`` and ``cernvm-fixtures:*`` are ours)."""
    user: str = "root"
    address: Literal["public", "private"] = "public"
    """Which address of the instance to reach it at (``private``: e.g. from inside the VPC or via ``jump_host``)."""
    jump_host: str | None = None
    """``[user@]host[:port]`` of an SSH server to reach the instance through (a direct-tcpip channel)."""
    jump_key: str | None = None
    """Private key file for the jump host; default: the SSH agent and ~/.ssh keys."""
    jump_known_hosts: str | None = None
    """known_hosts file holding the jump host's key (unknown keys are refused); default ~/.ssh/known_hosts."""
    metadata_tokens: Literal["optional", "required"] = "optional"
    """IMDSv2 tokens; CernVM 4's amiconfig reads user data with IMDSv1, so ``required`` breaks it."""
    import_bucket: str | None = None
    """S3 bucket a raw ``.hvm`` image is uploaded to for import (needed when ``image`` is a file)."""
    import_role: str | None = None
    """IAM role VM Import uses (AWS default: ``vmimport``)."""
    import_timeout: float = Field(3600.0, gt=0)
    status_checks: bool = True
    """Part of *running*: wait until EC2's instance and system status checks pass."""
    poll_interval: float = Field(5.0, gt=0)
    """Seconds between EC2 API polls while waiting."""
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud VM takes minutes to pass its status checks)."""
    connect_timeout: float = Field(10.0, gt=0)

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        known = known_regions()
        if value is not None and known is not None and value not in known:
            raise ValueError(f"one of the EC2 regions boto3 knows: {', '.join(sorted(known))}")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("an http:// or https:// URL")
        return value

    @field_validator("security_group_id")
    @classmethod
    def _group_needs_subnet(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("subnet_id") is None and "subnet_id" in info.data:
            raise ValueError("a group together with subnet_id (the group belongs to that subnet's VPC)")
        return value

    @field_validator("ssh_cidr")
    @classmethod
    def _cidr(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if "security_group_id" in info.data and info.data["security_group_id"] is None:
                raise ValueError(
                    "the runner's own public address as a CIDR, e.g. '203.0.113.7/32': the provider creates a "
                    "security group that admits tcp/22 from it alone, and does not look the address up over the "
                    "network (or set security_group_id to use an existing group)"
                )
            return None
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            raise ValueError(f"an IPv4/IPv6 address or network such as '203.0.113.7/32' ({e})") from None
        if network.prefixlen == 0:
            raise ValueError("the runner's own address range, not the whole internet")
        return str(network)

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value, strict=True)
        except ValueError as e:
            raise ValueError(f"an IPv4 network between /16 and /28 ({e})") from None
        if not 16 <= network.prefixlen <= 28:
            raise ValueError("an IPv4 network between /16 and /28")
        return str(network)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problems = _tag_problems(value)
        if problems:
            raise ValueError(
                "valid AWS tags (keys of 1-128 and values of 0-256 letters, digits, spaces and + - = . _ : / @; "
                "no 'aws:' prefix; 'Name' and 'cernvm-fixtures:*' are set by cernvm-fixtures): " + "; ".join(problems)
            )
        return value

    @field_validator("jump_host")
    @classmethod
    def _jump(cls, value: str | None) -> str | None:
        if value is not None:
            match = JUMP.match(value)
            if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
                raise ValueError("[user@]host[:port]")
        return value


def parse_jump(value: str) -> tuple[str | None, str, int]:
    match = JUMP.match(value)
    assert match is not None
    return match["user"], match["host"].strip("[]"), int(match["port"] or 22)


# --- tags -----------------------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tag_dict(resource: Resource, kind: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of one resource: user tags, then Name and cernvm-fixtures' own (which always win)."""
    kind = kind or resource.kind
    owner = resource.owner
    tags = dict(extra or {})
    tags.update(
        {
            "Name": resource.name if kind == "instance" else f"{resource.name}-{SHORT.get(kind, kind)}",
            RUN_TAG: resource.run,
            MACHINE_TAG: resource.name,
            TARGET_TAG: resource.target,
            KIND_TAG: kind,
            OWNER_TAG: f"{owner.host}/{owner.pid}/{owner.start or '-'}",
            CREATED_TAG: f"{resource.created:.6f}",
            EXPIRES_TAG: iso(resource.expires),
        }
    )
    if resource.kept:
        tags[KEPT_TAG] = "true"
    return tags


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def resource_from_tags(kind: str, tags: dict[str, str], data: dict[str, Any]) -> Resource | None:
    """Rebuild a ledger-like entry from a resource's tags alone (None if it is not ours)."""
    machine, run = tags.get(MACHINE_TAG), tags.get(RUN_TAG)
    if not machine or not run:
        return None
    host, _, rest = tags.get(OWNER_TAG, "").partition("/")
    pid, _, start = rest.partition("/")
    owner = Owner(host or "unknown", int(pid) if pid.isdigit() else 0, None if start in ("", "-") else start)
    try:
        created = float(tags.get(CREATED_TAG, ""))
    except ValueError:
        created = 0.0
    try:
        expires = datetime.strptime(tags.get(EXPIRES_TAG, ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        expires = created + DEFAULT_LIFETIME if created else 1.0
    # Found by tag, a resource sorts just before its ledger twin, and by dependency among its own kind,
    # so sweep (newest first) tears a machine down in the right order.
    created -= (len(CREATION_ORDER) - RANK.get(kind, 0)) * 1e-4
    return Resource(
        provider="ec2",
        kind=kind,
        name=machine,
        run=run,
        target=tags.get(TARGET_TAG, ""),
        data=data,
        owner=owner,
        created=created,
        expires=expires,
        kept=tags.get(KEPT_TAG) == "true",
    )


def teardown_order(resources: list[Resource]) -> list[Resource]:
    """The order to destroy a machine's resources in: the reverse of their dependencies, newest first."""
    return sorted(resources, key=lambda r: (RANK.get(r.kind, len(RANK)), r.created), reverse=True)


def decode_console(output: str) -> str:
    """EC2 returns the console base64-encoded (some emulators return plain text)."""
    text = output
    try:
        text = base64.b64decode(output, validate=True).decode("utf-8", "replace")
    except ValueError:
        pass
    return console_text(text)


# --- the provider ---------------------------------------------------------------------------------


class Ec2Provider(Provider):
    """Launches CernVM on Amazon EC2 (or any endpoint speaking its API)."""

    name = "ec2"
    Options = Ec2Options

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
            raise ConfigError(f"{self.target.where('image')}: {image!r} is not a valid AMI id (ami- and 8 or 17 hex digits)")
        path = self.target.image_file(".hvm", "an AMI id (ami-...) or imports a raw HVM image file (ucernvm-<branch>.<V>-<R>.cernvm.x86_64.hvm)")
        if not self.options.import_bucket:
            raise ConfigError(
                f"{self.target.where('import_bucket')}: required to import {path.name}: the S3 bucket to upload it to"
            )
        return "file", path.resolve()

    def check_credentials(self) -> None:
        session = _boto3().session.Session(region_name=self.region)
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
                "describe-security-groups", ec2.describe_security_groups, missing_ok=True, GroupIds=[o.security_group_id]
            )
            if not groups or not groups.get("SecurityGroups"):
                raise ConfigError(
                    f"{self.target.where('security_group_id')}: security group {o.security_group_id} not found in {self.region}"
                )
            if groups["SecurityGroups"][0].get("VpcId") != vpc_id:
                raise ConfigError(
                    f"{self.target.where('security_group_id')}: {o.security_group_id} belongs to "
                    f"{groups['SecurityGroups'][0].get('VpcId')}, but subnet {o.subnet_id} to {vpc_id}"
                )
        if o.key_name:
            keys = call("describe-key-pairs", ec2.describe_key_pairs, missing_ok=True, KeyNames=[o.key_name])
            if not keys or not keys.get("KeyPairs"):
                raise ConfigError(f"{self.target.where('key_name')}: key pair {o.key_name!r} not found in {self.region}")
        return vpc_id

    # -- creation

    def machine(self, name: str) -> Ec2Machine:
        return Ec2Machine(self, name)

    def _record(self, machine: Machine, kind: str, **data: Any) -> Resource:
        return self.record(
            machine, kind, machine.name, region=self.region, endpoint_url=self.options.endpoint_url, **data
        )

    def _created(self, resource: Resource, **data: Any) -> None:
        resource.data.update(data)
        self.run.ledger.update(resource)

    def tag_spec(self, resource: Resource, kind: str | None = None) -> dict[str, Any]:
        kind = kind or resource.kind
        return {"ResourceType": AWS_TYPE[kind], "Tags": tag_list(tag_dict(resource, kind, self.options.tags))}

    def drop(self, machine: Machine, resource: Resource) -> None:
        """Destroy one resource now (e.g. the uploaded image once imported) and forget it."""
        type(self).destroy_resource(resource)
        self.run.ledger.forget(resource)
        machine.resources.remove(resource)

    def launch(self, machine: Machine, context: Context) -> None:
        assert isinstance(machine, Ec2Machine)
        o = self.options
        source, image = self.image_source()
        ec2 = self.ec2()
        self.check_credentials()
        user_data = context.render()
        if len(user_data) > USER_DATA_LIMIT:
            raise ProviderError(f"{machine.name}: user data is {len(user_data)} bytes; EC2 accepts {USER_DATA_LIMIT}")
        ami_info: dict[str, Any] = {}
        if source == "ami":
            ami_info = self.check_ami(ec2, str(image))
        else:
            from .ec2_image import check_bucket

            check_bucket(self, self.target.where("import_bucket"))
        self.check_instance_type(ec2)
        vpc_id = self.check_network(ec2)

        arch = {"arm64": "aarch64"}.get(ami_info.get("Architecture") or "", "x86_64")
        if source == "file":
            from .ec2_image import import_image

            arch = "aarch64" if "aarch64" in Path(image).name else "x86_64"
            ami_info = import_image(self, machine, Path(image), arch)
        machine.traits["arch"] = arch
        ami = ami_info["ImageId"]

        key_name = o.key_name
        if key_name is None:
            key_name = machine.name
            key = self._record(machine, "key-pair", key_name=key_name)
            made = call(
                "import-key-pair",
                ec2.import_key_pair,
                KeyName=key_name,
                PublicKeyMaterial=self.run.public_key.encode(),
                TagSpecifications=[self.tag_spec(key)],
            )
            self._created(key, id=made.get("KeyPairId"))

        subnet_id = o.subnet_id
        if subnet_id is None:
            vpc_id, subnet_id = self._create_network(machine, ec2)
        group_id = o.security_group_id or self._create_security_group(machine, ec2, vpc_id)

        instance = self._record(machine, "instance", client_token=f"{machine.name}-{int(time.time())}")
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
        self._created(instance, id=machine.instance_id)
        log.info("%s: launched %s (%s, %s) in %s", machine.name, machine.instance_id, o.instance_type, ami, self.region)

    def _create_network(self, machine: Machine, ec2: Any) -> tuple[str, str]:
        """The documented minimal VPC: VPC, internet gateway, subnet, route table with a default route."""
        o = self.options
        vpc = self._record(machine, "vpc")
        made = call("create-vpc", ec2.create_vpc, CidrBlock=o.vpc_cidr, TagSpecifications=[self.tag_spec(vpc)])
        vpc_id = made["Vpc"]["VpcId"]
        self._created(vpc, id=vpc_id)

        igw = self._record(machine, "internet-gateway", vpc_id=vpc_id)
        made = call("create-internet-gateway", ec2.create_internet_gateway, TagSpecifications=[self.tag_spec(igw)])
        igw_id = made["InternetGateway"]["InternetGatewayId"]
        self._created(igw, id=igw_id)
        call("attach-internet-gateway", ec2.attach_internet_gateway, InternetGatewayId=igw_id, VpcId=vpc_id)

        subnet = self._record(machine, "subnet", vpc_id=vpc_id)
        cidr = next(ipaddress.IPv4Network(o.vpc_cidr).subnets(new_prefix=max(24, int(o.vpc_cidr.split("/")[1]))))
        params: dict[str, Any] = {"VpcId": vpc_id, "CidrBlock": str(cidr), "TagSpecifications": [self.tag_spec(subnet)]}
        if o.availability_zone:
            params["AvailabilityZone"] = o.availability_zone
        made = call("create-subnet", ec2.create_subnet, **params)
        subnet_id = made["Subnet"]["SubnetId"]
        self._created(subnet, id=subnet_id)

        table = self._record(machine, "route-table", vpc_id=vpc_id, client_token=f"{machine.name}-rtb")
        made = call(
            "create-route-table",
            ec2.create_route_table,
            VpcId=vpc_id,
            ClientToken=table.data["client_token"],
            TagSpecifications=[self.tag_spec(table)],
        )
        table_id = made["RouteTable"]["RouteTableId"]
        self._created(table, id=table_id)
        call(
            "create-route",
            ec2.create_route,
            RouteTableId=table_id,
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId=igw_id,
        )
        made = call("associate-route-table", ec2.associate_route_table, RouteTableId=table_id, SubnetId=subnet_id)
        self._created(table, association_id=made["AssociationId"])
        return vpc_id, subnet_id

    def _create_security_group(self, machine: Machine, ec2: Any, vpc_id: str | None) -> str:
        """A group admitting tcp/22 from ``ssh_cidr`` alone (AWS's default egress rule stays: cvmfs needs HTTP out)."""
        o = self.options
        cidr = o.ssh_cidr
        if cidr is None:  # the options validator requires it; keep the promise even for hand-made options
            raise ConfigError(f"{self.target.where('ssh_cidr')}: required when the provider creates the security group")
        group = self._record(machine, "security-group", vpc_id=vpc_id)
        params: dict[str, Any] = {
            "GroupName": machine.name,
            "Description": f"cernvm-fixtures {machine.name}: SSH from {cidr} only",
            "TagSpecifications": [self.tag_spec(group)],
        }
        if vpc_id:
            params["VpcId"] = vpc_id
        made = call("create-security-group", ec2.create_security_group, **params)
        group_id = made["GroupId"]
        self._created(group, id=group_id)
        call("authorize-security-group-ingress", ec2.authorize_security_group_ingress, GroupId=group_id,
             IpPermissions=[ssh_permission(cidr)])
        return group_id

    # -- teardown

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        handler = _DESTROY.get(resource.kind)
        if handler is None:
            raise ProviderError(f"ec2 cannot destroy unknown resource kind {resource.kind!r}")
        region = resource.data.get("region")
        if not region:
            raise ProviderError(f"{resource.name}: ledger entry for {resource.kind} has no region")
        handler(resource, region, resource.data.get("endpoint_url"))

    @classmethod
    def leftovers(cls, target: Any, recorded: set[str]) -> list[Resource]:
        """Resources tagged by cernvm-fixtures in the target's region whose machine no ledger entry names."""
        options: Ec2Options = target.options
        region = resolve_region(options.region, f"{target.origin}: targets.{target.name}.region")
        endpoint = options.endpoint_url
        ec2 = client("ec2", region, endpoint)
        ours = [{"Name": "tag-key", "Values": [RUN_TAG]}]
        found: dict[tuple[str, str], tuple[dict[str, str], list[str]]] = {}

        def add(kind: str, tags: list[dict[str, str]] | None, ident: str) -> None:
            tags_ = {t["Key"]: t["Value"] for t in tags or []}
            machine = tags_.get(MACHINE_TAG)
            if machine and machine not in recorded:
                found.setdefault((kind, machine), (tags_, []))[1].append(ident)

        pages = functools.partial(_pages, ec2)
        for reservation in pages("describe_instances", "Reservations", Filters=ours):
            for inst in reservation["Instances"]:
                if inst["State"]["Name"] != "terminated":
                    add("instance", inst.get("Tags"), inst["InstanceId"])
        for item in pages("describe_volumes", "Volumes", Filters=ours):
            add("volume", item.get("Tags"), item["VolumeId"])
        for item in pages("describe_security_groups", "SecurityGroups", Filters=ours):
            add("security-group", item.get("Tags"), item["GroupId"])
        for item in pages("describe_route_tables", "RouteTables", Filters=ours):
            add("route-table", item.get("Tags"), item["RouteTableId"])
        for item in pages("describe_subnets", "Subnets", Filters=ours):
            add("subnet", item.get("Tags"), item["SubnetId"])
        for item in pages("describe_internet_gateways", "InternetGateways", Filters=ours):
            add("internet-gateway", item.get("Tags"), item["InternetGatewayId"])
        for item in pages("describe_vpcs", "Vpcs", Filters=ours):
            add("vpc", item.get("Tags"), item["VpcId"])
        for item in call("describe-key-pairs", ec2.describe_key_pairs, Filters=ours).get("KeyPairs", []):
            add("key-pair", item.get("Tags"), item["KeyName"])
        for item in call("describe-images", ec2.describe_images, Owners=["self"], Filters=ours).get("Images", []):
            add("image", item.get("Tags"), item["ImageId"])
        for item in pages("describe_snapshots", "Snapshots", OwnerIds=["self"], Filters=ours):
            add("snapshot", item.get("Tags"), item["SnapshotId"])
        if options.import_bucket:
            from .ec2_image import uploaded_objects

            for key, tags in uploaded_objects(client("s3", region, endpoint), options.import_bucket):
                add("s3-object", [{"Key": k, "Value": v} for k, v in tags.items()], key)

        resources = []
        for (kind, _machine), (tags, ids) in found.items():
            data: dict[str, Any] = {"region": region, "endpoint_url": endpoint, "ids": sorted(set(ids))}
            if kind == "key-pair":
                data["key_name"] = ids[0]
            if kind == "s3-object":
                data.update(bucket=options.import_bucket, key=ids[0])
            resource = resource_from_tags(kind, tags, data)
            if resource is not None:
                resources.append(resource)
        return teardown_order(resources)


def resolve_region(configured: str | None, where: str) -> str:
    """The configured region, else boto3's own chain; either must be one botocore knows for EC2."""
    if configured:
        return configured
    region = _boto3().session.Session().region_name
    if not region:
        raise ConfigError(
            f"{where}: not set, and boto3 found no default region (AWS_REGION, AWS_DEFAULT_REGION or the "
            "profile's region); set region = \"eu-west-1\" or similar"
        )
    known = known_regions()
    if known is not None and region not in known:
        raise ConfigError(
            f"{where}: boto3's default region {region!r} is not an EC2 region boto3 knows: {', '.join(sorted(known))}"
        )
    return region


def _pages(ec2: Any, operation: str, key: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    paginator = ec2.get_paginator(operation)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        for page in paginator.paginate(**params):
            items.extend(page.get(key, []))
    except ClientError as e:
        raise ProviderError(f"{operation}: {error_code(e)}: {e.response.get('Error', {}).get('Message')}") from None
    except BotoCoreError as e:
        raise ProviderError(f"{operation}: {e}") from None
    return items


def ssh_permission(cidr: str) -> dict[str, Any]:
    """The one ingress rule: tcp/22 from ``cidr``."""
    network = ipaddress.ip_network(cidr)
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    entry = {"Description": "cernvm-fixtures: SSH from the test runner"}
    if network.version == 4:
        rule["IpRanges"] = [{"CidrIp": str(network), **entry}]
    else:
        rule["Ipv6Ranges"] = [{"CidrIpv6": str(network), **entry}]
    return rule


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


# --- teardown, one function per kind -------------------------------------------------------------


def _ids(resource: Resource) -> list[str]:
    if resource.data.get("id"):
        return [resource.data["id"]]
    return list(resource.data.get("ids") or [])


def _tag_filters(resource: Resource, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        {"Name": f"tag:{MACHINE_TAG}", "Values": [resource.name]},
        {"Name": f"tag:{RUN_TAG}", "Values": [resource.run]},
        {"Name": f"tag:{KIND_TAG}", "Values": [kind or resource.kind]},
    ]


def _find(resource: Resource, ec2: Any, operation: str, key: str, ident: str, **params: Any) -> list[str]:
    """Ids from the ledger plus any found by tag: one whose id never reached the ledger, or a duplicate
    made by a retried create call that has no idempotency token (CreateVpc, CreateSubnet, ...)."""
    items = _pages(ec2, operation, key, Filters=_tag_filters(resource), **params)
    return list(dict.fromkeys(_ids(resource) + [item[ident] for item in items]))


def _destroy_instance(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    reservations = _pages(ec2, "describe_instances", "Reservations", Filters=_tag_filters(resource))
    tagged = [i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    ids = list(dict.fromkeys(_ids(resource) + tagged))
    for instance_id in ids:
        call(f"terminate {instance_id}", ec2.terminate_instances, missing_ok=True, InstanceIds=[instance_id])
    deadline = time.monotonic() + DESTROY_TIMEOUT
    pending = set(ids)
    while pending:
        for instance_id in sorted(pending):
            found = call(f"describe {instance_id}", ec2.describe_instances, missing_ok=True, InstanceIds=[instance_id])
            states = [i["State"]["Name"] for r in (found or {}).get("Reservations", []) for i in r["Instances"]]
            if not states or all(s == "terminated" for s in states):
                pending.discard(instance_id)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ProviderError(f"{resource.name}: {', '.join(sorted(pending))} not terminated after {DESTROY_TIMEOUT:.0f} s")
        time.sleep(DESTROY_POLL)
    # The scratch disk goes with the instance (DeleteOnTermination); delete any volume of it that did not.
    volumes = _pages(ec2, "describe_volumes", "Volumes", Filters=_tag_filters(resource, "volume"))
    for volume in volumes:
        if volume.get("State") not in ("deleting", "deleted"):
            call_until_free(f"delete volume {volume['VolumeId']}", ec2.delete_volume, VolumeId=volume["VolumeId"])


def _destroy_volume(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for volume_id in _find(resource, ec2, "describe_volumes", "Volumes", "VolumeId"):
        call_until_free(f"delete volume {volume_id}", ec2.delete_volume, VolumeId=volume_id)


def _destroy_security_group(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for group_id in _find(resource, ec2, "describe_security_groups", "SecurityGroups", "GroupId"):
        call_until_free(f"delete security group {group_id}", ec2.delete_security_group, GroupId=group_id)


def _destroy_route_table(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for table_id in _find(resource, ec2, "describe_route_tables", "RouteTables", "RouteTableId"):
        found = call(f"describe {table_id}", ec2.describe_route_tables, missing_ok=True, RouteTableIds=[table_id])
        for table in (found or {}).get("RouteTables", []):
            for association in table.get("Associations", []):
                if not association.get("Main"):
                    call(
                        f"disassociate {table_id}",
                        ec2.disassociate_route_table,
                        missing_ok=True,
                        AssociationId=association["RouteTableAssociationId"],
                    )
        call_until_free(f"delete route table {table_id}", ec2.delete_route_table, RouteTableId=table_id)


def _destroy_subnet(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for subnet_id in _find(resource, ec2, "describe_subnets", "Subnets", "SubnetId"):
        call_until_free(f"delete subnet {subnet_id}", ec2.delete_subnet, SubnetId=subnet_id)


def _destroy_internet_gateway(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for igw_id in _find(resource, ec2, "describe_internet_gateways", "InternetGateways", "InternetGatewayId"):
        found = call(f"describe {igw_id}", ec2.describe_internet_gateways, missing_ok=True, InternetGatewayIds=[igw_id])
        for gateway in (found or {}).get("InternetGateways", []):
            for attachment in gateway.get("Attachments", []):
                call_until_free(
                    f"detach {igw_id}", ec2.detach_internet_gateway, InternetGatewayId=igw_id, VpcId=attachment["VpcId"]
                )
        call_until_free(f"delete internet gateway {igw_id}", ec2.delete_internet_gateway, InternetGatewayId=igw_id)


def _destroy_vpc(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    for vpc_id in _find(resource, ec2, "describe_vpcs", "Vpcs", "VpcId"):
        call_until_free(f"delete vpc {vpc_id}", ec2.delete_vpc, VpcId=vpc_id)


def _destroy_key_pair(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    name = resource.data.get("key_name") or resource.name
    call(f"delete key pair {name}", ec2.delete_key_pair, missing_ok=True, KeyName=name)


def _destroy_image(resource: Resource, region: str, endpoint: str | None) -> None:
    ec2 = client("ec2", region, endpoint)
    found = call("describe-images", ec2.describe_images, Owners=["self"], Filters=_tag_filters(resource))
    named = call(
        "describe-images", ec2.describe_images, Owners=["self"], Filters=[{"Name": "name", "Values": [resource.name]}]
    )
    ids = list(dict.fromkeys(_ids(resource) + [i["ImageId"] for i in found.get("Images", []) + named.get("Images", [])]))
    for image_id in ids:
        call(f"deregister {image_id}", ec2.deregister_image, missing_ok=True, ImageId=image_id)


def _destroy_snapshot(resource: Resource, region: str, endpoint: str | None) -> None:
    from .ec2_image import destroy_snapshot

    destroy_snapshot(resource, client("ec2", region, endpoint))


def _destroy_s3_object(resource: Resource, region: str, endpoint: str | None) -> None:
    s3 = client("s3", region, endpoint)
    bucket, key = resource.data.get("bucket"), resource.data.get("key")
    if bucket and key:
        call(f"delete s3://{bucket}/{key}", s3.delete_object, missing_ok=True, Bucket=bucket, Key=key)


_DESTROY = {
    "instance": _destroy_instance,
    "volume": _destroy_volume,
    "security-group": _destroy_security_group,
    "route-table": _destroy_route_table,
    "subnet": _destroy_subnet,
    "internet-gateway": _destroy_internet_gateway,
    "vpc": _destroy_vpc,
    "key-pair": _destroy_key_pair,
    "image": _destroy_image,
    "snapshot": _destroy_snapshot,
    "s3-object": _destroy_s3_object,
}


# --- the machine ----------------------------------------------------------------------------------


class Ec2Machine(Machine):
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
        self._endpoint: tuple[str, int] | None = None
        self._jump: Any = None
        self._jump_lock = threading.Lock()

    def _ec2(self) -> Any:
        return self.provider.ec2()

    def describe(self) -> dict[str, Any] | None:
        """The instance as EC2 describes it now (None while EC2 does not know it yet: eventual consistency)."""
        if self.instance_id is None:
            raise ProviderError(f"{self.name}: no instance was created")
        found = call(
            f"describe {self.instance_id}", self._ec2().describe_instances, missing_ok=True, InstanceIds=[self.instance_id]
        )
        for reservation in (found or {}).get("Reservations", []):
            for instance in reservation["Instances"]:
                self._described = instance
                return instance
        return None

    def wait_running(self, deadline: float) -> None:
        poll = self.options.poll_interval
        state = "unknown"
        while True:
            instance = self.describe()
            if instance is not None:
                state = instance["State"]["Name"]
                if state == "running":
                    break
                if state in ("shutting-down", "terminated", "stopping", "stopped"):
                    reason = (instance.get("StateReason") or {}).get("Message") or instance.get("StateTransitionReason")
                    raise PermanentError(f"{self.instance_id} is {state}" + (f": {reason}" if reason else ""))
            if time.monotonic() > deadline:
                raise ProviderError(f"{self.instance_id} still {state}")
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
        if not self.options.status_checks:
            return
        detail = "no status yet"
        while True:
            found = call(
                f"describe status of {self.instance_id}",
                self._ec2().describe_instance_status,
                InstanceIds=[self.instance_id],
                IncludeAllInstances=True,
            )
            for status in found.get("InstanceStatuses", []):
                system = status.get("SystemStatus", {}).get("Status", "initializing")
                instance_status = status.get("InstanceStatus", {}).get("Status", "initializing")
                passed = {"ok", "not-applicable"}
                if system in passed and instance_status in passed:
                    return
                if "impaired" in (system, instance_status):
                    raise ProviderError(
                        f"{self.instance_id} failed its status checks (system {system}, instance {instance_status})"
                    )
                detail = f"system status {system}, instance status {instance_status}"
            if time.monotonic() > deadline:
                raise ProviderError(f"{self.instance_id}: status checks not passed yet ({detail})")
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    def platform_address(self) -> str:
        """The public or private IP address EC2 gave the instance (``address`` option)."""
        instance = self._described or self.describe()
        if instance is None or (self.options.address == "public" and not instance.get("PublicIpAddress")):
            instance = self.describe()
        key = "PublicIpAddress" if self.options.address == "public" else "PrivateIpAddress"
        value = (instance or {}).get(key)
        if not value:
            hint = (
                "; use a subnet that maps public addresses, or address = \"private\" with a jump_host"
                if self.options.address == "public"
                else ""
            )
            raise ProviderError(f"{self.name}: {self.instance_id} has no {self.options.address} address{hint}")
        return value

    def transport(self) -> SSHTransport:
        host, port = self.provider.run.endpoint(self, self.platform_address(), 22)
        self._endpoint = (host, port)
        factory = None
        if self.options.jump_host:
            factory = functools.partial(self._jump_channel, host, port)
        return SSHTransport(
            host,
            port,
            self.options.user,
            self.provider.run.key_file,
            self.host_keys,
            connect_timeout=self.options.connect_timeout,
            sock_factory=factory,
        )

    # -- jump host

    def _open_jump(self) -> Any:
        import paramiko

        user, host, port = parse_jump(self.options.jump_host or "")
        known = Path(self.options.jump_known_hosts or "~/.ssh/known_hosts").expanduser()
        jump = paramiko.SSHClient()
        if known.is_file():
            jump.load_host_keys(str(known))
        jump.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = self.options.jump_key
        try:
            jump.connect(
                host,
                port,
                username=user or self.options.user,
                key_filename=str(Path(key).expanduser()) if key else None,
                look_for_keys=key is None,
                allow_agent=key is None,
                timeout=self.options.connect_timeout,
                banner_timeout=self.options.connect_timeout,
                auth_timeout=self.options.connect_timeout,
            )
        except paramiko.SSHException as e:
            jump.close()
            raise ProviderError(
                f"{self.name}: jump host {self.options.jump_host}: {e} (its host key must be in {known})"
            ) from None
        transport = jump.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return jump

    def _jump_channel(self, host: str, port: int) -> Any:
        """A direct-tcpip channel from the jump host to the instance's SSH port (used as SSHTransport's socket)."""
        with self._jump_lock:
            transport = self._jump.get_transport() if self._jump is not None else None
            if transport is None or not transport.is_active():
                if self._jump is not None:
                    self._jump.close()
                self._jump = self._open_jump()
                transport = self._jump.get_transport()
        return transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.options.connect_timeout
        )

    def _close_jump(self) -> None:
        with self._jump_lock:
            if self._jump is not None:
                self._jump.close()
                self._jump = None

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

    def login_command(self) -> str:
        if self._endpoint is not None:
            host, port = self._endpoint
        else:
            try:
                host, port = self.platform_address(), 22
            except Exception:  # noqa: BLE001 - a login hint must not fail
                host, port = f"<{self.name} address>", 22
        keys = self.host_keys() if self.instance_id else None
        if keys:
            known = self.provider.run.machine_dir(self.name) / "known_hosts"
            known.parent.mkdir(parents=True, exist_ok=True)
            shown = host if port == 22 else f"[{host}]:{port}"
            known.write_text("".join(f"{shown} {' '.join(k.split()[:2])}\n" for k in keys))
            check = f"-o UserKnownHostsFile={known}"
        else:
            check = "-o StrictHostKeyChecking=accept-new"
        jump = ""
        if self.options.jump_host:
            user, jhost, jport = parse_jump(self.options.jump_host)
            inner = f"ssh -p {jport} -W %h:%p"
            if self.options.jump_key:
                inner += f" -i {self.options.jump_key}"
            if self.options.jump_known_hosts:
                inner += f" -o UserKnownHostsFile={self.options.jump_known_hosts}"
            jump = f" -o 'ProxyCommand={inner} {user or self.options.user}@{jhost}'"
        port_flag = f" -p {port}" if port != 22 else ""
        return (
            f"ssh -i {self.provider.run.key_file}{port_flag} {check}{jump} -o IdentitiesOnly=yes "
            f"{self.options.user}@{host}"
        )

    def keep(self) -> None:
        """Mark kept in the ledger and on AWS (a tag-based sweep then leaves it alone until it expires)."""
        super().keep()
        ec2 = self._ec2()
        for resource in self.resources:
            ids = _ids(resource)
            if resource.kind == "s3-object" or not ids:
                continue
            tags = [{"Key": KEPT_TAG, "Value": "true"}, {"Key": EXPIRES_TAG, "Value": iso(resource.expires)}]
            try:
                call(f"tag {resource.kind}", ec2.create_tags, Resources=ids, Tags=tags)
            except ProviderError as e:
                log.warning("%s: could not tag %s as kept: %s", self.name, resource.kind, e)

    def destroy(self) -> None:
        """Destroy in dependency order (instance first, VPC last), whatever order things were recorded in."""
        self.resources.sort(key=lambda r: (RANK.get(r.kind, len(RANK)), r.created))
        try:
            super().destroy()
        finally:
            self._close_jump()
