"""Find what crashed, killed or cancelled runs left behind: from every ledger, then from provider tags; and reap
what a run itself still holds when it ends."""

from __future__ import annotations

import logging

from . import providers
from .config import Config
from .dirs import state_dir
from .errors import CernvmError
from .interrupts import signals_deferred
from .ledger import Ledger, Owner, Resource, all_ledgers
from .providers.base import teardown_rank
from .run import Run

log = logging.getLogger(__name__)


def find_leftovers(config: Config, *, include_kept: bool = False) -> list[tuple[Ledger | None, Resource]]:
    """Resources nobody is responsible for, in the order to destroy them in (dependents first, newest first).

    Ledger entries count when expired or when their owner process is gone;
    resources found on a platform with no ledger entry (the state directory was
    lost, or another machine made them) count by their own tags: owner and expiry.
    """
    found: list[tuple[Ledger | None, Resource]] = []
    recorded: set[str] = set()

    def wanted(resource: Resource) -> bool:
        if resource.leftover():
            return True
        return include_kept and resource.kept and owned_by_caller(resource)

    for ledger in all_ledgers(state_dir()):
        for resource in ledger.entries():
            recorded.add(resource.name)
            if wanted(resource):
                found.append((ledger, resource))
    scanned: set[tuple[str, str, str]] = set()
    for target in config.targets.values():
        try:
            platform = providers.get(target.provider).leftovers(target, recorded)
        except Exception as e:  # noqa: BLE001 - one target's error (ours or an SDK's) must not stop the sweep
            log.warning("cannot scan target %s for leftovers: %s", target.name, e)
            continue
        for resource in platform:
            key = (resource.provider, resource.kind, resource.name)
            if key not in scanned and wanted(resource):
                scanned.add(key)
                found.append((None, resource))
    found.sort(key=lambda pair: teardown_key(pair[1]), reverse=True)
    return found


ID_KEYS = ("id", "ids", "gce_name", "group", "key", "blob", "domain", "container")
"""Ledger data keys holding the platform's own id or name of a resource, in the order to show them."""


def platform_id(resource: Resource) -> str:
    """What the platform itself calls the resource (its id, ARM id, object key...), for ``sweep --dry-run`` to show
    the real thing about to be deleted, not only the machine name its tags claim."""
    for key in ID_KEYS:
        value = resource.data.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return resource.name


def owned_by_caller(resource: Resource) -> bool:
    """Whether the resource's provider says the caller made it (False for a provider not installed)."""
    try:
        return providers.get(resource.provider).owned_by_caller(resource)
    except CernvmError:
        return False


def teardown_key(resource: Resource) -> tuple[int, float]:
    """Destroy in the reverse of the provider's declared creation order, newest first."""
    try:
        order = providers.get(resource.provider).creation_order
    except CernvmError:
        order = ()
    return teardown_rank(order, resource)


def reap(run: Run, reason: str) -> None:
    """Destroy the run's resources nobody owns any more (not kept; its owner gone, or this process): each is a leak,
    logged with ``reason``; one that cannot be destroyed stays in the ledger for ``cernvm-fixtures sweep``."""
    me = Owner.current()
    for resource in reversed(run.ledger.entries()):  # newest first: an instance before its network
        if resource.kept or (resource.owner != me and resource.owner.alive()):
            continue
        log.warning("cernvm: destroying %s %s %s (%s)", resource.provider, resource.kind, resource.name, reason)
        with signals_deferred():
            try:
                providers.get(resource.provider).destroy_resource(resource)
            except CernvmError as e:
                log.error(
                    "cernvm: could not destroy %s %s: %s (cernvm-fixtures sweep retries)",
                    resource.kind,
                    resource.name,
                    e,
                )
                continue
            run.ledger.forget(resource)
