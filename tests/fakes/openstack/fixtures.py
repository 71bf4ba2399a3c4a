"""pytest fixtures: the local OpenStack on 127.0.0.1, named in a clouds.yaml the provider's credential chain reads.

A pytest plugin (the root conftest declares it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cloud import FakeOpenStack

CLOUD = "fake"
OS_VARIABLES = (
    "OS_CLOUD",
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
    "OS_TOKEN",
    "OS_AUTH_TYPE",
    "OS_REGION_NAME",
    "OS_CLIENT_SECURE_FILE",
    "OS_USER_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_SECRET",
)


def write_clouds_yaml(path: Path, fake: FakeOpenStack) -> Path:
    """A clouds.yaml naming the fake as cloud ``fake`` (the provider's credential chain reads it)."""
    path.write_text(yaml.safe_dump({"clouds": {CLOUD: fake.cloud_config()}}))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def openstack_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeOpenStack]:
    """The fake on a free port of 127.0.0.1, with OS_CLIENT_CONFIG_FILE pointing at its clouds.yaml."""
    from cernvm_fixtures.providers import openstack as provider

    fake = FakeOpenStack().start()
    patch = pytest.MonkeyPatch()
    for name in OS_VARIABLES:
        patch.delenv(name, raising=False)
    clouds = write_clouds_yaml(tmp_path_factory.mktemp("openstack") / "clouds.yaml", fake)
    patch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    provider.reset_connections()
    try:
        yield fake
    finally:
        patch.undo()
        fake.stop()
        provider.reset_connections()


@pytest.fixture
def openstack_cloud(openstack_session: FakeOpenStack) -> Iterator[FakeOpenStack]:
    """The session's fake, with each test's failures of the fake itself failing the test."""
    with openstack_session.checked():
        yield openstack_session
