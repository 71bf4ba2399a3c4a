"""Find what crashed, killed or cancelled runs left behind: from every ledger, then from provider tags."""

from __future__ import annotations

import logging

from . import providers
from .config import Config
from .dirs import state_dir
from .errors import CernvmError
from .ledger import Ledger, Resource, all_ledgers

log = logging.getLogger(__name__)


def find_leftovers(config: Config, *, include_kept: bool = False) -> list[tuple[Ledger | None, Resource]]:
    """Resources nobody is responsible for, newest first (the order to destroy them in).

    Ledger entries count when expired or when their owner process is gone;
    resources found on a platform with no ledger entry (the state directory was
    lost, or another machine made them) count by their own tags: owner and expiry.
    """
    found: list[tuple[Ledger | None, Resource]] = []
    recorded: set[str] = set()
    for ledger in all_ledgers(state_dir()):
        for resource in ledger.entries():
            recorded.add(resource.name)
            if resource.leftover() or (include_kept and resource.kept):
                found.append((ledger, resource))
    scanned: set[tuple[str, str, str]] = set()
    for target in config.targets.values():
        try:
            platform = providers.get(target.provider).leftovers(target, recorded)
        except CernvmError as e:
            log.warning("cannot scan target %s for leftovers: %s", target.name, e)
            continue
        for resource in platform:
            key = (resource.provider, resource.kind, resource.name)
            if key not in scanned and (resource.leftover() or (include_kept and resource.kept)):
                scanned.add(key)
                found.append((None, resource))
    found.sort(key=lambda pair: pair[1].created, reverse=True)
    return found
