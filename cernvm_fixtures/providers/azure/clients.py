"""Reaching Azure: the SDK imported lazily, one credential and one management client per key for the process, the
SDK's errors translated once (not found, still in use, ``<code>: <message>``), and the one way a machine's ARM
resource is created (recorded first, tagged with its ledger entry).

Next to the leaf :mod:`.tags` (it imports only the kit and that), so every other sibling may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..kit import ClientCache, SdkErrors, sdk
from .tags import ARM, split_id, tag_dict

if TYPE_CHECKING:
    from ...config import Target
    from .options import AzureOptions
    from .tags import Recorder

MANAGEMENT_SCOPE = "https://management.azure.com/.default"
NOT_FOUND_CODES = frozenset({"ResourceGroupNotFound", "ResourceNotFound", "NotFound"})
"""Error codes that say the resource (or its group) is gone: a delete is done, a lookup finds nothing."""
BUSY_CODES = frozenset(
    {
        "InUseNetworkSecurityGroupCannotBeDeleted",
        "InUseSubnetCannotBeDeleted",
        "NicInUse",
        "PublicIPAddressCannotBeDeleted",
        "OperationNotAllowed",
        "AnotherOperationInProgress",
        "RetryableError",
        "InUseNicCannotBeDeleted",
    }
)
"""Error codes of a delete Azure refuses while something still uses the resource: retried until BUSY_TIMEOUT."""
BUSY_TIMEOUT = 600.0
"""How long teardown retries a delete Azure refuses because something still uses the resource."""
MANAGEMENT = {
    "compute": ("azure.mgmt.compute", "ComputeManagementClient"),
    "network": ("azure.mgmt.network", "NetworkManagementClient"),
    "resource": ("azure.mgmt.resource.resources", "ResourceManagementClient"),
}
"""The management clients by the name callers use, as (module, class)."""


def azure_module(module: str) -> Any:
    """An Azure SDK module, imported on first use (a ConfigError naming the extra to install if it is missing)."""
    return sdk("azure", "azure", module)


def error_code(error: BaseException) -> str:
    """ARM's error code of an SDK error (``NicInUse``...), else its HTTP status, else empty."""
    code = getattr(getattr(error, "error", None), "code", None)
    return str(code or getattr(error, "status_code", "") or "")


def _message(error: BaseException) -> str:
    text = getattr(getattr(error, "error", None), "message", None) or getattr(error, "message", None) or str(error)
    code = error_code(error)
    return f"{code}: {text}" if code else str(text)


def _not_found(error: BaseException) -> bool:
    gone = azure_module("azure.core.exceptions").ResourceNotFoundError
    return isinstance(error, gone) or error_code(error) in NOT_FOUND_CODES


ERRORS = SdkErrors(
    lambda: (azure_module("azure.core.exceptions").AzureError,),
    not_found=_not_found,
    busy=lambda error: error_code(error) in BUSY_CODES,
    message=_message,
)
"""Every call to the Azure SDK goes through ``ERRORS.call``, every delete through ``ERRORS.delete_until_free``."""


def _new_credential(instance_discovery: bool) -> Any:
    identity = azure_module("azure.identity")
    return identity.DefaultAzureCredential(disable_instance_discovery=not instance_discovery)


_credentials: ClientCache[bool, Any] = ClientCache(_new_credential)


def credential(instance_discovery: bool = True) -> Any:
    """One DefaultAzureCredential for the process (it caches tokens); the only source of credentials."""
    return _credentials.get(instance_discovery)


ClientKey = tuple[str, str, str | None, bool, float]
"""(client name, subscription, endpoint, instance discovery, polling interval)."""


def _new_client(key: ClientKey) -> Any:
    which, subscription, endpoint, instance_discovery, poll = key
    module, name = MANAGEMENT[which]
    extra: dict[str, Any] = {"polling_interval": poll}
    if endpoint:
        extra.update(base_url=endpoint, credential_scopes=[MANAGEMENT_SCOPE])
    return getattr(azure_module(module), name)(credential(instance_discovery), subscription, **extra)


_clients: ClientCache[ClientKey, Any] = ClientCache(_new_client)


def client(name: str, data: dict[str, Any]) -> Any:
    """The ``compute``, ``network`` or ``resource`` management client for a ledger entry's (or the options')
    subscription and endpoint (see :func:`entry_data`)."""
    return _clients.get(
        (
            name,
            data["subscription"],
            data.get("endpoint"),
            data.get("instance_discovery", True),
            float(data.get("poll_interval", 5.0)),
        )
    )


def begin_create(
    machine: Recorder,
    sdk_client: Any,
    options: AzureOptions,
    kind: str,
    *,
    more_tags: Mapping[str, str] | None = None,
    **fields: Any,
) -> tuple[str, Any]:
    """Record the machine's ARM resource of ``kind``, then start creating it in the target's location from
    ``fields`` (of its SDK model), tagged with the user's tags, its ledger entry and ``more_tags``. Returns its id
    and the create operation's poller. ``sdk_client``: the management client :data:`~.tags.ARM` names for it."""
    arm = ARM[kind]
    models = azure_module(MANAGEMENT[arm.client][0] + ".models")
    entry = machine.record(kind)
    group, name = split_id(entry.data["id"])
    tags = {**tag_dict(entry, options.tags), **(more_tags or {})}
    body = getattr(models, arm.model)(location=options.location, tags=tags, **fields)
    begin = getattr(sdk_client, arm.operations).begin_create_or_update
    return entry.data["id"], ERRORS.call(f"create {arm.what} {name}", begin, group, name, body)


def create_recorded(machine: Recorder, sdk_client: Any, options: AzureOptions, kind: str, **fields: Any) -> str:
    """:func:`begin_create` (same arguments), then wait until Azure made the resource; returns its id."""
    resource_id, poller = begin_create(machine, sdk_client, options, kind, **fields)
    ERRORS.call(f"create {ARM[kind].what} {split_id(resource_id)[1]}", poller.result)
    return resource_id


def reset_clients() -> None:
    """Forget cached credentials and clients (e.g. after the environment changed)."""
    _credentials.clear()
    _clients.clear()


def blob_service(account_url: str, instance_discovery: bool) -> Any:
    """A blob service client with the one credential of the process."""
    blob = azure_module("azure.storage.blob")
    return blob.BlobServiceClient(account_url, credential=credential(instance_discovery))


def subscription_id(target: Target) -> str:
    """The target's subscription id: its ``subscription`` key, else AZURE_SUBSCRIPTION_ID."""
    found = target.options.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not found:
        raise ConfigError(
            f"{target.where('subscription')}: not set, and AZURE_SUBSCRIPTION_ID is not in the environment"
        )
    return str(found)


def entry_data(subscription: str, options: AzureOptions) -> dict[str, Any]:
    """What every ledger entry carries to reach Azure again without the config (nothing secret)."""
    return {
        "subscription": subscription,
        "endpoint": options.endpoint,
        "instance_discovery": options.instance_discovery,
        "poll_interval": options.poll_interval,
    }
