"""No error messages at boot (CernVM's release checklist): the logs the profile names, scanned for error lines.

Each of the profile's ``errors.logs`` is a shell command printing that log's error lines (``journalctl -b -p
err`` on CernVM; a ``grep`` of the boot logs and the kernel's messages on the appliance); a line matching one of
``errors.harmless`` (regular expressions, known-harmless lines of that image) does not count.
"""

from cernvm_fixtures import expect
from cernvm_fixtures.checklist import boot_errors

SHOWN = 20
"""Error lines quoted in a failure (all are counted)."""


def test_no_error_messages_at_boot(cernvm):
    expect(cernvm, "errors.logs")
    errors = boot_errors(cernvm)
    assert not errors.unreadable, f"cannot read the boot logs of profile {cernvm.profile.name!r}: " + "; ".join(
        errors.unreadable
    )
    found = errors.found
    assert not found, (
        f"{len(found)} error line(s) at boot that profile {cernvm.profile.name!r} does not list as harmless "
        f"(errors.harmless): " + " | ".join(found[:SHOWN]) + (" | ..." if len(found) > SHOWN else "")
    )
