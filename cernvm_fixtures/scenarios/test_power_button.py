"""The power button (CernVM's release checklist: "test reaction to power button"): an ACPI power-button press
ends the instance by itself, within the profile's deadline (times the platform's slowdown).

Destructive, so on a fresh instance of its own, booted only where the provider can press the button (its
``no_power_button`` otherwise says why: containers have none, the clouds' stop calls are not wired up yet).
"""

import time

from cernvm_fixtures import expect, providers
from cernvm_fixtures.checklist import fresh_instance


def test_power_button_powers_off(request, cernvm_target):
    no_button = providers.get(cernvm_target.provider).no_power_button
    instance = fresh_instance(request, cernvm_target, "power.button_deadline", no_button)
    deadline = expect(instance, "power.button_deadline")
    seconds = deadline * instance.slowdown
    pressed = time.monotonic()
    instance.press_power_button()
    scaled = f", x{instance.slowdown:g} here" if instance.slowdown > 1 else ""
    while instance.is_running():
        waited = time.monotonic() - pressed
        assert waited < seconds, (
            f"{instance.name} still runs {waited:.0f} s after its ACPI power button was pressed: the image ignores "
            f"the power button, or shuts down too slowly (profile {instance.profile.name!r}: "
            f"power.button_deadline = {deadline:g} s{scaled})"
        )
        time.sleep(0.5)
