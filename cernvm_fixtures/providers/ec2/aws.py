"""The AWS SDK seam (a leaf: imports nothing from its siblings): clients, the one error translation, paging, region.

Every boto3/botocore error becomes one ProviderError naming what was attempted (never a secret), through
:data:`AWS` (the kit's :class:`~cernvm_fixtures.providers.kit.SdkErrors`): ``AWS.call`` for every call,
``AWS.delete_until_free`` for a delete AWS refuses while something still depends on the resource.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from ...errors import ConfigError
from ..kit import ClientCache, SdkErrors, sdk

log = logging.getLogger(__name__)

GONE_CODES = {"InvalidAMIID.Unavailable", "Gateway.NotAttached", "NoSuchKey", "NoSuchBucket", "NotFound", "404"}
BUSY_CODES = {"DependencyViolation", "VolumeInUse", "InvalidSnapshot.InUse", "InvalidGroup.InUse", "IncorrectState"}

DESTROY_POLL = 2.0
"""Seconds between checks while waiting for AWS during teardown."""
DESTROY_TIMEOUT = 600.0
"""How long teardown waits for an instance to terminate."""
BUSY_TIMEOUT = 300.0
"""How long teardown retries a delete that AWS refuses because something still depends on the resource
(e.g. a terminated instance's network interface, which AWS releases a minute or two later)."""


def boto3_module() -> Any:
    """boto3, or a ConfigError saying how to install it."""
    return sdk("ec2", "ec2", "boto3")


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


def _new_client(key: tuple[str, str, str | None]) -> Any:
    service, region, endpoint_url = key
    boto3 = boto3_module()
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="cernvm-fixtures",
    )
    return boto3.session.Session(region_name=region).client(service, endpoint_url=endpoint_url, config=config)


_clients: ClientCache[tuple[str, str, str | None], Any] = ClientCache(_new_client)


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """One boto3 client per service, region and endpoint for the process (clients are thread-safe)."""
    return _clients.get((service, region, endpoint_url))


def reset_clients() -> None:
    """Forget cached clients (e.g. after the credentials in the environment changed)."""
    _clients.clear()


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def gone(code: str) -> bool:
    """Whether an AWS error code means: that resource does not exist (any more)."""
    return code.endswith(".NotFound") or code in GONE_CODES


def message(error: BaseException) -> str:
    """What AWS said: ``Code: Message`` of a ClientError, the text of any other botocore error (never credentials)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict) and error_code(error):
        return f"{error_code(error)}: {response.get('Error', {}).get('Message') or error}"
    return str(error)


def _errors() -> tuple[type[BaseException], ...]:
    exceptions = sdk("ec2", "ec2", "botocore.exceptions")
    return (exceptions.ClientError, exceptions.BotoCoreError)


AWS = SdkErrors(
    _errors,
    not_found=lambda error: gone(error_code(error)),
    busy=lambda error: error_code(error) in BUSY_CODES,
    message=message,
)
"""boto3's errors read once: ``AWS.call(what, fn, missing_ok=..., **params)`` and ``AWS.delete_until_free``."""


def pages(ec2: Any, operation: str, key: str, **params: Any) -> list[Any]:
    """Every item under ``key`` of every page of a paginated operation."""

    def collect() -> list[Any]:
        items: list[Any] = []
        for page in ec2.get_paginator(operation).paginate(**params):
            items.extend(page.get(key, []))
        return items

    return AWS.call(operation, collect)


def resolve_region(configured: str | None, where: str) -> str:
    """The configured region, else boto3's own chain; either must be one botocore knows for EC2."""
    if configured:
        return configured
    region = boto3_module().session.Session().region_name
    if not region:
        raise ConfigError(
            f"{where}: not set, and boto3 found no default region (AWS_REGION, AWS_DEFAULT_REGION or the "
            'profile\'s region); set region = "eu-west-1" or similar'
        )
    known = known_regions()
    if known is not None and region not in known:
        raise ConfigError(
            f"{where}: boto3's default region {region!r} is not an EC2 region boto3 knows: {', '.join(sorted(known))}"
        )
    return region
