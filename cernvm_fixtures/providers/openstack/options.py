"""The openstack provider's target keys (a leaf: imports nothing from its siblings)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..base import RemoteOptions, SshCidr
from ..kit import FIELD_PREFIX

METADATA_KEY = "^[a-zA-Z0-9-_:. ]{1,255}$"
"""Nova's pattern for a server metadata key (``parameter_types.metadata``, every microversion): no '/', for one."""


class OpenStackOptions(RemoteOptions):
    """Target keys of the ``openstack`` provider. The generic ``image`` key is a Glance image or a local file."""

    cloud: str | None = None
    """The cloud's name in clouds.yaml; default: OS_CLOUD or the OS_* variables (openstacksdk's own chain)."""
    flavor: str = "cvm.medium"
    """Flavor name or id (CERN's documented flavor is cvm.medium)."""
    network: str | None = None
    """Network name or id to attach the server to; default: the project's only network."""
    properties: dict[str, str] = {"cern-services": "false"}
    """Server metadata (``--property``); the documentation recommends cern-services=false for a faster creation."""
    ssh_cidr: SshCidr
    """The runner's own address as a CIDR (``203.0.113.7/32``): the security group admits tcp/22 from it alone."""
    config_drive: bool = False
    """Also hand the context to the server on a config drive (CernVM reads the metadata service otherwise)."""
    address: Literal["fixed", "floating"] = "fixed"
    """Reach the server at its fixed address (e.g. from inside the cloud, or via ``jump_host``) or a floating IP."""
    floating_ip_pool: str | None = None
    """External network to allocate the floating IP from (needed with ``address = "floating"``)."""
    poll_interval: float = Field(2.0, gt=0)
    """Seconds between API polls while waiting."""
    slowdown: float = Field(5.0, ge=1.0)
    """Readiness deadlines are multiplied by this (a cloud server takes minutes to build and boot)."""

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [
            f"{k!r}: keys and values are 1-255 and 0-255 characters"
            for k, v in value.items()
            if not 1 <= len(k) <= 255 or len(v) > 255
        ]
        problems += [
            f"key {k!r} does not match Nova's pattern {METADATA_KEY} (letters, digits, '-', '_', ':', '.', ' ')"
            for k in value
            if 1 <= len(k) <= 255 and not re.search(METADATA_KEY, k)
        ]
        problems += [f"{k!r} is set by cernvm-fixtures itself" for k in value if k.startswith(FIELD_PREFIX)]
        if problems:
            raise ValueError("server metadata Nova accepts: " + "; ".join(problems))
        return value

    @model_validator(mode="after")
    def _floating_needs_pool(self) -> OpenStackOptions:
        if self.address == "floating" and not self.floating_ip_pool:
            raise ValueError('address = "floating" needs floating_ip_pool (the external network to allocate from)')
        return self
