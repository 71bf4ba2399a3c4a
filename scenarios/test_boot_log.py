"""No error messages at boot (CernVM's release checklist): the logs the profile names, scanned for error lines.

Each of the profile's ``errors.logs`` is a shell command printing that log's error lines (``journalctl -b -p
err`` on CernVM; a ``grep`` of the boot logs and the kernel's messages on the appliance); a line matching one of
``errors.harmless`` (regular expressions, known-harmless lines of that image) does not count.
"""

import re

from cernvm_fixtures import expect

SHOWN = 20
"""Error lines quoted in a failure (all are counted)."""


def test_no_error_messages_at_boot(cernvm):
    logs = expect(cernvm, "errors.logs")
    harmless = [re.compile(pattern) for pattern in cernvm.expected("errors.harmless") or []]
    found, unreadable = [], []
    for name, command in logs.items():
        result = cernvm.run(command, timeout=120)
        if result.exit_status > 1 or (result.stderr.strip() and not result.stdout.strip()):
            # grep's 1 means "no line matched"; more, or only complaints, means the log was not read
            unreadable.append(f"{name} ({command}) exited {result.exit_status}: {result.stderr.strip()[-300:]}")
            continue
        for line in result.stdout.splitlines():
            if line.strip() and not any(pattern.search(line) for pattern in harmless):
                found.append(f"{name}: {line.strip()}")
    assert not unreadable, f"cannot read the boot logs of profile {cernvm.profile.name!r}: " + "; ".join(unreadable)
    assert not found, (
        f"{len(found)} error line(s) at boot that profile {cernvm.profile.name!r} does not list as harmless "
        f"(errors.harmless): " + " | ".join(found[:SHOWN]) + (" | ..." if len(found) > SHOWN else "")
    )
