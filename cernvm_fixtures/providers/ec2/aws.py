"""The AWS SDK seam (a leaf: imports nothing from its siblings): clients, calls, retries, paging, region.

Every boto3/botocore error becomes one ProviderError naming what was attempted
(never a secret); this is the only place that translates ``ClientError``.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from ...errors import ConfigError, ProviderError
from ..kit import ClientCache

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


def error_code(error: Exception) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def gone(code: str) -> bool:
    """Whether an AWS error code means: that resource does not exist (any more)."""
    return code.endswith(".NotFound") or code in GONE_CODES


def translate(what: str, error: Exception) -> ProviderError:
    """The one ProviderError for a botocore error: ``what: Code: Message`` (never credentials)."""
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message") or str(error)
        return ProviderError(f"{what}: {error_code(error)}: {message}")
    return ProviderError(f"{what}: {error}")


def call(what: str, fn: Any, *, missing_ok: bool = False, busy_until: float | None = None, **params: Any) -> Any:
    """Call a boto3 operation; AWS and botocore errors become ProviderError naming ``what`` (never secrets).

    With ``missing_ok`` an error saying the resource does not exist returns None; until the monotonic time
    ``busy_until`` an error saying something still depends on the resource is retried.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    while True:
        try:
            return fn(**params)
        except ClientError as e:
            code = error_code(e)
            if missing_ok and gone(code):
                return None
            if busy_until is not None and code in BUSY_CODES and time.monotonic() < busy_until:
                log.debug("%s: still in use (%s), retrying", what, code)
                time.sleep(DESTROY_POLL)
                continue
            raise translate(what, e) from None
        except BotoCoreError as e:
            raise translate(what, e) from None


def call_until_free(what: str, fn: Any, *, timeout: float = BUSY_TIMEOUT, **params: Any) -> Any:
    """Like :func:`call` with ``missing_ok``, retrying while AWS says something still depends on the resource."""
    return call(what, fn, missing_ok=True, busy_until=time.monotonic() + timeout, **params)


def pages(ec2: Any, operation: str, key: str, **params: Any) -> list[Any]:
    """Every item under ``key`` of every page of a paginated operation."""
    from botocore.exceptions import BotoCoreError, ClientError

    items: list[Any] = []
    try:
        for page in ec2.get_paginator(operation).paginate(**params):
            items.extend(page.get(key, []))
    except (ClientError, BotoCoreError) as e:
        raise translate(operation, e) from None
    return items


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
