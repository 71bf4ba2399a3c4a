"""The upgrade from the previous release (CernVM's release checklist: "upgrade from last production release"): a fresh
instance of the profile's ``upgrade.previous`` image gets the target's own image in its boot drive, keeping its
disks, and reboots; it must come back on the same scratch disk (a file written there before is still there) with
the bootloader version file changed to this release's, and boot without error messages.

Destructive, so on a fresh instance of its own, booted only where the provider can change a machine's image
(``no_upgrade`` otherwise says why) and the profile names the previous release.
"""

import re
import secrets
import shlex

from cernvm_fixtures import expect, expect_ahead, providers
from cernvm_fixtures.checklist import boot_errors, fresh_instance_of


def test_upgrade_from_the_previous_release_keeps_the_scratch_disk(request, cernvm_target):
    previous = expect_ahead(cernvm_target, "upgrade.previous")
    no_upgrade = providers.get(cernvm_target.provider).no_upgrade
    instance = fresh_instance_of(request, cernvm_target, previous, no_upgrade)
    scratch = expect(instance, "scratch.mountpoint")
    version_file = expect(instance, "scratch.version_file")
    pattern = expect(instance, "scratch.version")
    old = instance.run(f"cat {shlex.quote(version_file)}").check().stdout.strip()
    marker = f"{scratch.rstrip('/')}/cvmfx-upgrade-{secrets.token_hex(8)}"
    token = secrets.token_hex(16)
    instance.run(f"echo {token} > {marker} && sync").check()
    instance.change_image(cernvm_target)
    instance.reboot()
    where = f"after the upgrade from {previous!r} to {cernvm_target.image!r} (profile {instance.profile.name!r})"
    kept = instance.run(f"cat {marker}")
    assert kept.succeeded and kept.stdout.strip() == token, (
        f"{where}: {marker}, written on the scratch disk ({scratch}) before it, is "
        f"{'gone' if not kept.succeeded else 'changed'}: the scratch disk was formatted again or replaced"
    )
    new = instance.run(f"cat {shlex.quote(version_file)}").check().stdout.strip()
    assert new != old, (
        f"{where}: the bootloader version in {version_file} is still {old!r}: the new release did not boot, or "
        "its bootloader does not write its version"
    )
    assert re.match(pattern, new), f"{where}: bootloader version {new!r} in {version_file} does not match {pattern!r}"
    errors = boot_errors(instance)
    assert not errors.found and not errors.unreadable, f"{where}: " + "; ".join(errors.unreadable + errors.found)
    instance.run(f"rm -f {marker}")
