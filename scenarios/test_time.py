"""Correct time and a running time daemon (CernVM's release checklist).

The guest's clock is compared with the host's around one ``date +%s``; the daemon is found by process name
(``/proc/<pid>/comm``). Whether the daemon actually synchronises is not checked: the test appliance's daemon
has no server to reach (no NTP may leave the test host), and the real one's server may be anywhere.
"""

import time

from cernvm_fixtures import expect


def test_clock_matches_the_host(cernvm):
    skew = expect(cernvm, "time.skew")
    before = time.time()
    result = cernvm.run("date +%s").check()
    after = time.time()
    guest = int(result.stdout.strip())
    # the guest read its clock at some moment in [before, after]; date +%s drops the fraction: [guest, guest + 1)
    behind, ahead = before - (guest + 1), guest - after
    off = max(behind, ahead, 0.0)
    assert off <= skew, (
        f"the guest's clock is {off:.1f} s {'behind' if behind > 0 else 'ahead of'} the host's "
        f"(date +%s gave {guest}; the host's clock read {before:.1f} before and {after:.1f} after the command); "
        f"profile {cernvm.profile.name!r} allows {skew:g} s (time.skew)"
    )


def test_time_daemon_running(cernvm):
    names = expect(cernvm, "time.daemon")
    # a process may end between the glob and cat: only what was read counts
    running = {line.strip() for line in cernvm.run("cat /proc/[0-9]*/comm 2>/dev/null").stdout.splitlines()}
    assert running, "cannot read the process list of the guest (/proc/<pid>/comm)"
    shown = sorted(name for name in running if "/" not in name and not name.startswith("kworker"))
    assert running & set(names), (
        f"no time daemon runs: no process named {' or '.join(names)} (profile {cernvm.profile.name!r}, time.daemon); "
        f"running: {', '.join(shown)}"
    )
