"""The reboot after contextualization (CernVM's release checklist: "no error messages during after-init-reboot"):
the instance comes back within the profile's deadline, with a new boot id, on the same scratch disk (a file written
there before the reboot is still there), with the same context and host name, and boots without error messages.

Destructive (a reboot), so on a fresh instance of its own, booted only where the profile asks for the check.
"""

import secrets
import shlex
import time

from cernvm_fixtures import expect
from cernvm_fixtures.checklist import boot_errors, fresh_instance


def snapshot(instance, paths):
    """The host name and each file's content (None where it does not exist)."""
    found = {"hostname": instance.run("hostname").check().stdout.strip()}
    for path in paths:
        result = instance.run(f"cat {shlex.quote(path)}")
        found[path] = result.stdout if result.succeeded else None
    return found


def test_reboot_after_contextualization_keeps_scratch_and_context(request, cernvm_target):
    instance = fresh_instance(request, cernvm_target, "reboot.deadline")
    deadline = expect(instance, "reboot.deadline") * instance.slowdown
    scratch = expect(instance, "scratch.mountpoint")
    context = [p for p in (instance.expected(f"context.{k}") for k in ("user_data_file", "ucontext_file")) if p]
    marker = f"{scratch.rstrip('/')}/cvmfx-reboot-{secrets.token_hex(8)}"
    token = secrets.token_hex(16)
    instance.run(f"echo {token} > {marker} && sync").check()
    before = snapshot(instance, context)
    started = time.monotonic()
    instance.reboot()
    took = time.monotonic() - started
    assert took <= deadline, (
        f"the reboot took {took:.0f} s until the instance was ready again; profile {instance.profile.name!r} allows "
        f"{deadline:g} s (reboot.deadline x{instance.slowdown:g})"
    )
    kept = instance.run(f"cat {marker}")
    assert kept.succeeded and kept.stdout.strip() == token, (
        f"{marker}, written on the scratch disk ({scratch}) before the reboot, is "
        f"{'gone' if not kept.succeeded else 'changed'} after it: the scratch disk was formatted again or replaced "
        f"(profile {instance.profile.name!r})"
    )
    after = snapshot(instance, context)
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, "the reboot changed what contextualization set up: " + "; ".join(
        f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items()
    )
    errors = boot_errors(instance)  # the logs the profile names (none: nothing to scan)
    assert not errors.found and not errors.unreadable, "after the reboot: " + "; ".join(
        errors.unreadable + errors.found
    )
    instance.run(f"rm -f {marker}")
