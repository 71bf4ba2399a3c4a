"""The ``ec2`` target keys, validated at load time (nothing here talks to AWS)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ... import netcheck
from ..base import RemoteOptions
from ..kit import FIELD_PREFIX
from .aws import known_regions
from .tags import OUR_TAGS

AMI_ID = re.compile(r"^ami-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
TAG_TEXT = re.compile(r"^[\w\s+\-=.:/@]*$")


def tag_problems(tags: dict[str, str], reserved: int = OUR_TAGS) -> list[str]:
    """What is wrong with user tags under AWS's limits, leaving room for ours (empty: nothing)."""
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
        if key == "Name" or key.startswith(FIELD_PREFIX):
            problems.append(f"key {key!r} is set by cernvm-fixtures itself")
        if not TAG_TEXT.match(key) or not TAG_TEXT.match(value):
            problems.append(f"tag {key!r}={value!r} has characters AWS does not allow")
    return problems


class Ec2Options(RemoteOptions):
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
    """Extra tags on every resource (AWS limits; no ``aws:`` prefix; ``Name`` and ``cvmfx-*`` are ours)."""
    address: Literal["public", "private"] = "public"
    """Which address of the instance to reach it at (``private``: e.g. from inside the VPC or via ``jump_host``)."""
    metadata_tokens: Literal["optional", "required"] = "optional"
    """IMDSv2 tokens; CernVM 4's amiconfig reads user data with IMDSv1, so ``required`` breaks it."""
    import_bucket: str | None = None
    """S3 bucket a raw ``.hvm`` image is uploaded to for import (needed when ``image`` is a file)."""
    import_role: str | None = None
    """IAM role VM Import uses (AWS default: ``vmimport``)."""
    import_timeout: float = Field(3600.0, gt=0)
    status_checks: bool = True
    """Part of *running*: wait until EC2's instance and system status checks pass."""
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud VM takes minutes to pass its status checks)."""

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
        return netcheck.ssh_cidr(value, bool(info.data.get("allow_wide_ssh")))

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
        problems = tag_problems(value)
        if problems:
            raise ValueError(
                "valid AWS tags (keys of 1-128 and values of 0-256 letters, digits, spaces and + - = . _ : / @; "
                "no 'aws:' prefix; 'Name' and 'cvmfx-*' are set by cernvm-fixtures): " + "; ".join(problems)
            )
        return value
