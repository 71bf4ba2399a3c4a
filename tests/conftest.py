"""Fixtures shared by the harness's own tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cernvm_fixtures.testing import register_provider
from cernvm_fixtures.testing.local import PROFILE, machines_under

# Fixtures of the emulators and fakes, for every test module that asks for them.
from .fakes.azure.fixtures import azure_cloud  # noqa: F401
from .fakes.gce.fixtures import gce, gce_session  # noqa: F401
from .fakes.openstack import openstack_cloud  # noqa: F401
from .integration.moto_server import moto  # noqa: F401

pytest_plugins = ["pytester"]

LOCAL_TARGETS = f"""
[targets.alpha]
provider = "local"
profile = "{PROFILE}"

[targets.beta]
provider = "local"
profile = "{PROFILE}"
"""
"""Two targets of the local provider, for the plugin's tests."""


@pytest.fixture(scope="session")
def local_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``local`` provider installed (an entry point on sys.path and PYTHONPATH) for the rest of the session."""
    site = register_provider(tmp_path_factory.mktemp("site"), "local", "cernvm_fixtures.testing.local:LocalProvider")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        yield site


@pytest.fixture
def local_provider(
    local_site: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The ``local`` provider with a state directory of this test's own; yields that directory.

    Fails the test if a local machine of its state directory is still running at the end.
    """
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(state))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    yield state
    assert machines_under(state) == [], "local machines left running"
