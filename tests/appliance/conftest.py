"""Fixtures for the appliance builder tests that really build."""

from __future__ import annotations

import pytest

from cernvm_fixtures import appliance


@pytest.fixture(scope="session")
def appliances() -> dict[str, appliance.Appliance]:
    """Every variant, built once per session into the per-user cache."""
    built = {}
    try:
        for variant in appliance.VARIANTS:
            built[variant] = appliance.build(variant)
    except appliance.ApplianceError as err:
        pytest.fail(f"cannot build the appliance: {err}", pytrace=False)
    return built


@pytest.fixture(scope="session")
def ok_appliance(appliances) -> appliance.Appliance:
    return appliances["ok"]
