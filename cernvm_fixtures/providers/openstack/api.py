"""The openstacksdk seam (a leaf: imports nothing from its siblings): the SDK imported lazily, one connection per
cloud for the process, and one translation of its errors (and keystoneauth's) into ProviderError."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..kit import ClientCache, SdkErrors, sdk


def openstacksdk() -> Any:
    """openstacksdk, imported on first use (a ConfigError naming the extra to install without it)."""
    return sdk("openstack", "openstack", "openstack")


def _connect(cloud: str | None) -> Any:
    openstack = openstacksdk()
    try:
        return openstack.connect(cloud=cloud) if cloud else openstack.connect()
    except openstack.exceptions.ConfigException as e:
        where = f"cloud {cloud!r}" if cloud else "OS_CLOUD / OS_* variables"
        raise ConfigError(
            f"openstacksdk cannot configure {where}: {e} (it reads clouds.yaml, "
            "OS_CLOUD and OS_* variables; cernvm-fixtures never holds a password)"
        ) from None


_connections: ClientCache[str | None, Any] = ClientCache(_connect, close=lambda conn: conn.close())


def connection(cloud: str | None) -> Any:
    """One openstacksdk connection per cloud name for the process (None: OS_CLOUD / OS_* variables)."""
    return _connections.get(cloud)


def reset_connections() -> None:
    """Forget (and close) the cached connections (e.g. after clouds.yaml or the environment changed)."""
    _connections.clear()


def _errors() -> tuple[type[BaseException], ...]:
    keystoneauth = sdk("openstack", "openstack", "keystoneauth1.exceptions")  # openstacksdk's own dependency
    return (openstacksdk().exceptions.SDKException, keystoneauth.ClientException)


def conflict(error: BaseException) -> bool:
    """Whether the cloud answered 409: the resource is in use, or one of that name exists."""
    return isinstance(error, openstacksdk().exceptions.ConflictException)


def _message(error: BaseException) -> str:
    if isinstance(error, openstacksdk().exceptions.HttpException):
        return f"HTTP {error.status_code}: {error.details or error.message}"
    return str(error)


SDK = SdkErrors(
    _errors,
    not_found=lambda error: isinstance(error, openstacksdk().exceptions.NotFoundException),
    busy=conflict,
    message=_message,
)
"""openstacksdk's and keystoneauth's errors as ProviderError "<step>: HTTP <code>: <details>"; 404 is "not found",
409 "busy" (a delete is retried)."""
