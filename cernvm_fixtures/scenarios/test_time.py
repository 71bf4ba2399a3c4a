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


def processes(cernvm) -> dict[str, set[str]]:
    """Process name -> PIDs (a process may end between the glob and the read: only what was read counts)."""
    listing = cernvm.run("for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm 2>/dev/null); done").stdout
    found: dict[str, set[str]] = {}
    for line in listing.splitlines():
        pid, _, name = line.partition(" ")
        if name:
            found.setdefault(name.strip(), set()).add(pid)
    return found


def test_time_daemon_running(cernvm):
    names = set(expect(cernvm, "time.daemon"))
    first = processes(cernvm)
    assert first, "cannot read the process list of the guest (/proc/<pid>/comm)"
    shown = sorted(name for name in first if "/" not in name and not name.startswith("kworker"))
    daemons = {pid for name in names & set(first) for pid in first[name]}
    assert daemons, (
        f"no time daemon runs: no process named {' or '.join(sorted(names))} (profile {cernvm.profile.name!r}, "
        f"time.daemon); running: {', '.join(shown)}"
    )
    # a daemon that keeps dying and being restarted is not running: the same process must still be there
    time.sleep(3)
    now = processes(cernvm)
    later = {pid for name in names & set(now) for pid in now[name]}
    assert daemons & later, (
        f"the time daemon ({' or '.join(sorted(names))}) does not stay up: process(es) {', '.join(sorted(daemons))} "
        f"ended within 3 s, now {', '.join(sorted(later)) or 'none'} (restarted in a loop?)"
    )
