"""The Google Cloud SDK seam (a leaf: imports nothing from its siblings): the SDK imported lazily, one client per
kind and endpoint, one translation of its errors, operations waited for on the endpoint that started them.

Credentials come only from Application Default Credentials (``google.auth.default()``); nothing secret is logged,
recorded or written, and no error message carries a request.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ...errors import ProviderError
from ..kit import ClientCache, SdkErrors, sdk, wait_until

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def compute_v1() -> ModuleType:
    """google.cloud.compute_v1 (request and body types), or a ConfigError naming the extra to install."""
    return sdk("gce", "gce", "google.cloud.compute_v1")


def _exceptions() -> ModuleType:
    return sdk("gce", "gce", "google.api_core.exceptions")


def reason(error: BaseException) -> str:
    """Google's error reason (``notFound``, ``alreadyExists``, ``resourceInUseByAnotherResource``, ...)."""
    found = getattr(error, "reason", None)
    if found:
        return str(found)
    for item in getattr(error, "errors", None) or []:
        if isinstance(item, dict) and item.get("reason"):
            return str(item["reason"])
    return ""


def _message(error: BaseException) -> str:
    """``<code> <reason>: <message>`` of an API call's error; any other SDK error as it reads."""
    if isinstance(error, _exceptions().GoogleAPICallError):
        return f"{error.code} {reason(error) or type(error).__name__}: {error.message}"
    return str(error)


def _busy(error: BaseException) -> bool:
    """GCE refuses the delete because another resource still uses this one (a disk made from an image...)."""
    if reason(error) == "resourceInUseByAnotherResource":
        return True
    return getattr(error, "code", None) == 400 and "in use" in str(getattr(error, "message", ""))


ERRORS = SdkErrors(
    lambda: (_exceptions().GoogleAPIError,),
    not_found=lambda error: isinstance(error, _exceptions().NotFound),
    busy=_busy,
    message=_message,
)
"""Every google-cloud call goes through ``ERRORS.call``; teardown's deletes through ``ERRORS.delete_until_free``."""


def insert(what: str, fn: Callable[..., Any], **params: Any) -> Any | None:
    """Start an insert (``fn(**params)``); None if the name is taken already (409: someone else's resource, left
    alone); any other API error is a ProviderError naming ``what``."""
    conflict = _exceptions().Conflict

    def attempt() -> Any | None:
        try:
            return fn(**params)
        except conflict:
            return None

    return ERRORS.call(what, attempt)


# --- clients, lazily, one per kind and endpoint --------------------------------------------------


def credentials() -> tuple[Any, str | None]:
    """Application Default Credentials and their project; a clear error when there are none."""
    exceptions = sdk("gce", "gce", "google.auth.exceptions")
    auth = sdk("gce", "gce", "google.auth")
    try:
        return auth.default(scopes=SCOPES)
    except exceptions.DefaultCredentialsError as e:
        raise ProviderError(
            f"google.auth found no Application Default Credentials ({e}; it looks at GOOGLE_APPLICATION_CREDENTIALS, "
            "gcloud's `gcloud auth application-default login` and the GCE metadata server); cernvm-fixtures never "
            "reads them from its own config"
        ) from None


def _new_client(key: tuple[str, str | None]) -> Any:
    kind, endpoint = key
    creds, project = credentials()
    client_options = sdk("gce", "gce", "google.api_core.client_options")
    options = client_options.ClientOptions(api_endpoint=endpoint) if endpoint else None
    if kind == "storage":
        storage = sdk("gce", "gce", "google.cloud.storage")
        return storage.Client(project=project, credentials=creds, client_options=options)
    return getattr(compute_v1(), kind)(credentials=creds, transport="rest", client_options=options)


_clients: ClientCache[tuple[str, str | None], Any] = ClientCache(_new_client)


def client(kind: str, endpoint: str | None = None) -> Any:
    """One google-cloud client per kind (``InstancesClient``, ``storage``...) and endpoint, for the process."""
    return _clients.get((kind, endpoint))


def reset_clients() -> None:
    """Forget cached clients (e.g. after the credentials in the environment changed)."""
    _clients.clear()


# --- long-running operations ---------------------------------------------------------------------


def finished_operation(
    what: str,
    name: str,
    project: str,
    zone: str | None,
    endpoint: str | None,
    deadline: float,
    *,
    missing_ok: bool = False,
) -> Any | None:
    """Wait until the zone (or global) operation ``name`` is DONE, asking ``operations.wait`` on ``endpoint``
    (never ``operation.result()``, which polls Google's public endpoint whatever the client was built with);
    returns it, or with ``missing_ok`` None if GCE no longer knows it. Each poll is a cancel checkpoint."""
    operations = client("ZoneOperationsClient" if zone else "GlobalOperationsClient", endpoint)
    where = {"project": project, "operation": name, **({"zone": zone} if zone else {})}
    seen = "not asked yet"
    gone = object()

    def done() -> Any | None:
        nonlocal seen
        found = ERRORS.call(f"{what}: wait for {name}", operations.wait, missing_ok=missing_ok, **where)
        if found is None:
            return gone
        seen = found.status.name
        return found if seen == "DONE" else None

    found = wait_until(f"{what} (operation {name})", done, deadline, 0.0, status=lambda: f"still {seen}")
    return None if found is gone else found


def wait_operation(
    what: str, operation: Any, project: str, zone: str | None, endpoint: str | None, deadline: float
) -> None:
    """Wait for an operation an insert, delete or setLabels call returned; one ending in error raises naming its
    codes (``QUOTA_EXCEEDED: ...``)."""
    finished = operation
    if operation.status.name != "DONE":
        finished = finished_operation(what, operation.name, project, zone, endpoint, deadline)
    errors = list(finished.error.errors) if finished.error else []
    if errors:
        text = "; ".join(f"{e.code}: {e.message}" for e in errors)
        raise ProviderError(f"{what}: {text}")
