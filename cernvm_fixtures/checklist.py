"""What several scenarios of CernVM's release checklist read the same way (the boot logs at boot and after a
reboot), so a scenario module never imports another."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from .instance import Instance


@dataclass(frozen=True)
class BootErrors:
    """The error lines of the profile's boot logs that it does not list as harmless, and the logs not read."""

    found: list[str]
    unreadable: list[str]


def boot_errors(instance: Instance) -> BootErrors:
    """Run each of the profile's ``errors.logs`` commands (each prints its log's error lines) and keep the lines no
    ``errors.harmless`` pattern matches, as ``<log>: <line>``; a command that fails (not grep's 1, "no line
    matched") or only complains counts as unreadable. Nothing found where the profile names no logs."""
    logs = instance.expected("errors.logs") or {}
    harmless = [re.compile(pattern) for pattern in instance.expected("errors.harmless") or []]
    found: list[str] = []
    unreadable: list[str] = []
    for name, command in logs.items():
        result = instance.run(command, timeout=120)
        if result.exit_status > 1 or (result.stderr.strip() and not result.stdout.strip()):
            unreadable.append(f"{name} ({command}) exited {result.exit_status}: {result.stderr.strip()[-300:]}")
            continue
        for line in result.stdout.splitlines():
            if line.strip() and not any(pattern.search(line) for pattern in harmless):
                found.append(f"{name}: {line.strip()}")
    return BootErrors(found, unreadable)


def fresh_instance(request: Any, target: Any, key: str, no_capability: str | None = None) -> Instance:
    """A fresh instance of ``target`` for a destructive check (``request``: the test's pytest request), booted only
    where the check can apply: skipped first, naming why, where the provider lacks what it needs (``no_capability``:
    its reason, e.g. the provider's ``no_power_button``) or the profile does not ask for ``key``."""
    import pytest

    from . import expect_ahead

    if no_capability:
        pytest.skip(f"{target.name}: {no_capability}")
    expect_ahead(target, key)
    instance: Instance = request.getfixturevalue("cernvm_fresh")
    return instance


def fresh_instance_with_disk(request: Any, target: Any, key: str, disk_size: int) -> Instance:
    """A fresh instance of ``target`` whose scratch disk is ``disk_size`` GiB, with the test's marker's user data,
    finished when the test ends; skipped first where the profile does not ask for ``key`` or the provider's targets
    have no ``disk_size`` option (GiB: KVM, VirtualBox) to choose the disk's size with."""
    import pytest

    from . import expect_ahead

    expect_ahead(target, key)
    if not hasattr(target.options, "disk_size"):
        pytest.skip(
            f"{target.name}: provider {target.provider!r} has no disk_size option: the scratch disk's size cannot be "
            "chosen"
        )
    sized = dataclasses.replace(target, options=target.options.model_copy(update={"disk_size": disk_size}))
    return _boot_fresh(request, sized)


def fresh_instance_of(request: Any, target: Any, image: str, no_capability: str | None = None) -> Instance:
    """A fresh instance of ``target`` booted from ``image`` instead of the target's own (e.g. the previous release,
    for an upgrade), finished when the test ends; skipped first where the provider lacks what the check needs
    (``no_capability``: its reason)."""
    import pytest

    if no_capability:
        pytest.skip(f"{target.name}: {no_capability}")
    return _boot_fresh(request, dataclasses.replace(target, image=image))


def _boot_fresh(request: Any, target: Any) -> Instance:
    """Boot a fresh instance of ``target`` with the test's marker's user data; the harness finishes it at the end."""
    from .items import item_user_data

    harness = request.getfixturevalue("cernvm_harness")
    instance: Instance = harness.fresh(target, item_user_data(request.node))
    harness.instances.used_by[request.node.nodeid].append(instance)
    request.addfinalizer(lambda: harness.finish(instance))
    return instance
