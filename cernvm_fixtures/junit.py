"""What a target test's report carries for the people reading it later: JUnit properties naming the target and
the instance it ran on (provider, image, profile, readiness times, host key trust), and for a failure the
instance's screen. ``cernvm-fixtures report`` reads the properties back (:mod:`cernvm_fixtures.report`)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from .config import Target
from .download import redact
from .instance import Instance
from .report import SCREEN_TEXT_PROPERTY, SCREENSHOT_PROPERTY, TARGET
from .screen import Capture

Properties = list[tuple[str, str]]


def target_properties(target: Target, instances: Iterable[Instance]) -> Properties:
    """What a JUnit reader (``cernvm-fixtures report``) shows of a test's target and the instances it used."""
    found = [(TARGET, target.declared), ("cernvm_verification", target.verification)]
    if target.image_label is not None:
        found.append(("cernvm_image_label", target.image_label))
    for instance in instances:
        found += instance_properties(instance)
    return found


def instance_properties(instance: Instance) -> Properties:
    """What a JUnit reader shows of the instance a test ran on."""
    found = [
        ("cernvm_provider", instance.target.provider),
        ("cernvm_image", redact(instance.target.image)),
        ("cernvm_profile", instance.profile.name),
    ]
    if instance.ready_after is not None:
        found.append(("cernvm_ready_s", f"{instance.ready_after:.2f}"))
    found += [
        (f"cernvm_ready_{step.replace(' ', '_')}_s", f"{seconds:.2f}") for step, seconds in instance.timings.items()
    ]
    if instance.host_key_trust:
        found.append(("cernvm_host_key", instance.host_key_trust))
    return found


def record(item: pytest.Item, report: pytest.TestReport, found: Properties) -> None:
    """Add properties to the test's report (the summary grid reads it) and to the item (JUnit XML takes the item's
    properties from the teardown report)."""
    report.user_properties.extend(found)
    item.user_properties.extend(found)


def attach_screen(item: pytest.Item, report: pytest.TestReport, name: str, capture: Capture) -> None:
    """The screen of a failing test's instance: a report section (next to the console tail) and JUnit properties
    naming the PNG and holding the screen text (``cernvm-fixtures report`` shows both)."""
    report.sections.append((f"cernvm {name}: screen", capture.describe()))
    found = []
    if capture.path is not None:
        found.append((SCREENSHOT_PROPERTY, str(capture.path)))
    if capture.text is not None:
        found.append((SCREEN_TEXT_PROPERTY, capture.text))
    record(item, report, found)
