"""The network cable (CernVM's release checklist: "pull the network cable and reboot, should take longer but should
not hang"): with the cable pulled, a reboot completes (the screen shows the profile's ``cable.ready_screen`` within
``cable.deadline``, times the platform's slowdown), and once the cable is back the instance is ready again.

Destructive, so on a fresh instance of its own, booted only where the provider can pull the cable (its ``no_cable``
otherwise says why) and the profile asks for the check. Without network there is no SSH: the screen read from
outside is all the harness sees of that boot.
"""

import re
import time

import pytest

from cernvm_fixtures import expect, providers
from cernvm_fixtures.checklist import fresh_instance

POLL = 1.0


def wait_for_screen(instance, wanted: bool, pattern: re.Pattern, seconds: float) -> str:
    """Poll the screen (from outside) until ``pattern`` is on it (``wanted``) or gone; the last text either way."""
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        text = instance.machine.screen_text() or ""
        if bool(pattern.search(text)) == wanted:
            return text
        time.sleep(POLL)
    raise TimeoutError(text)


def test_a_boot_without_network_completes_and_the_network_comes_back(request, cernvm_target):
    no_cable = providers.get(cernvm_target.provider).no_cable
    instance = fresh_instance(request, cernvm_target, "cable.ready_screen", no_cable)
    pattern = re.compile(expect(instance, "cable.ready_screen"))
    deadline = expect(instance, "cable.deadline") * instance.slowdown
    if instance.machine.screen_text() is None:
        pytest.skip(f"{instance.target.name}: the provider cannot read this instance's screen from outside")
    before = instance.transport.boot_id
    instance.transport.exec("(sleep 2; reboot) >/dev/null 2>&1 &", timeout=30)
    instance.set_link(False)
    try:
        try:
            wait_for_screen(instance, False, pattern, 120 * instance.slowdown)  # the reboot cleared the screen
        except TimeoutError:
            pytest.fail(f"{instance.name} did not reboot: the screen still shows the last boot's end")
        started = time.monotonic()
        try:
            wait_for_screen(instance, True, pattern, deadline)
        except TimeoutError as e:
            shown = "\n".join(str(e).strip().splitlines()[-8:])
            pytest.fail(
                f"{instance.name}: a boot with the network cable pulled did not complete within {deadline:g} s "
                f"(profile {instance.profile.name!r}: cable.deadline x{instance.slowdown:g}; the screen never matched "
                f"cable.ready_screen {pattern.pattern!r}): it hangs without network. The screen shows:\n{shown}"
            )
        took = time.monotonic() - started
    finally:
        instance.set_link(True)
    instance.wait_ready()
    assert instance.transport.boot_id != before, f"{instance.name}: the boot id did not change"
    assert instance.run("true").succeeded, f"{instance.name}: no command runs once the cable is back"
    print(f"{instance.name}: booted without network in {took:.0f} s, ready again once the cable was back")
