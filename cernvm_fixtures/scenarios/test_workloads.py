"""Experiment workloads (CernVM's release checklist: "run experiment workloads"): every command the profile lists
under ``workloads.commands`` succeeds on the instance, within ``workloads.timeout`` (times the platform's slowdown).

A workload is what an experiment's job does first: source its setup script from CernVM-FS and run a program on
data. The profile says which (the test appliance's reads a histogram program and its data from its OS repository;
CernVM's profiles cite where theirs come from).
"""

from cernvm_fixtures import expect
from cernvm_fixtures.errors import CommandTimeout


def test_profile_workloads_succeed(cernvm):
    commands = expect(cernvm, "workloads.commands")
    timeout = cernvm.profile.workloads.timeout * cernvm.slowdown
    failed = []
    for name, command in commands.items():
        try:
            result = cernvm.run(command, timeout=timeout)
        except CommandTimeout:
            failed.append(f"workload {name!r} did not finish within {timeout:g} s: {command}")
            continue
        if not result.succeeded:
            said = (result.stderr.strip() or result.stdout.strip())[-600:] or "(no output)"
            failed.append(f"workload {name!r} failed (exit status {result.exit_status}): {command}\n  it said: {said}")
    assert not failed, f"profile {cernvm.profile.name!r}: " + "\n".join(failed)
