"""pytest fixtures: the fake ARM and Azurite on 127.0.0.1 over HTTPS, with service-principal credentials in the
environment, so the provider's DefaultAzureCredential takes the environment path to the fake's token endpoint.

A pytest plugin (the root conftest declares it).
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import azurite as azurite_mod
from .arm import Arm
from .rbac import WRITER, BlobRoles
from .wireserver import WireServer, report_ready

SUBSCRIPTION = "00000000-0000-4000-8000-00000000c0de"
TENANT = "11111111-1111-4111-8111-11111111c0de"
CLIENT = "22222222-2222-4222-8222-22222222c0de"
UNSET = (
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
)
CONTAINER = "cernvm-images"


@dataclass
class AzureCloud:
    arm: Arm
    azurite: azurite_mod.Azurite
    secret: str
    env: dict[str, str]
    roles: BlobRoles | None = None
    """Azure RBAC's data-plane check in front of Azurite; the tests' principal holds Storage Blob Data Contributor."""

    @property
    def url(self) -> str:
        return self.arm.url

    @property
    def blob_endpoint(self) -> str:
        """The blob service the provider is given: Azurite behind the role check (the tests' own ``blobs()`` reach
        Azurite directly)."""
        assert self.roles is not None
        return f"{self.roles.url}/{azurite_mod.ACCOUNT}"

    def credential(self):
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            TENANT, CLIENT, self.secret, authority=self.arm.url, disable_instance_discovery=True
        )

    def client(self, kind: str):
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        cls = {
            "compute": ComputeManagementClient,
            "network": NetworkManagementClient,
            "resource": ResourceManagementClient,
        }[kind]
        return cls(
            self.credential(),
            SUBSCRIPTION,
            base_url=self.arm.url,
            polling_interval=0.05,
            credential_scopes=["https://management.azure.com/.default"],
        )

    def blobs(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.azurite.account_url, credential=self.credential())

    def blob_names(self, run: str | None = None) -> list[str]:
        """Blobs in the container; with ``run``: those whose metadata names that run as their uploader."""
        found = self.blobs().get_container_client(CONTAINER).list_blobs(include=["metadata"])
        return sorted(b.name for b in found if run is None or (b.metadata or {}).get("cvmfx_run") == run)


def agent(name: str, wireserver: WireServer) -> None:
    """The guest's ready report for a VM just created, made from this process over the WireServer protocol: for the
    tests whose SSH goes to the session's shared stand-in (booted once, so it cannot be each VM's guest). Tests of a
    guest that never reports set the fake's ``guest`` to None; the suite's child process boots a real one per VM."""
    try:
        report_ready(f"http://127.0.0.1:{wireserver.port}")
    except OSError:  # the VM (and its WireServer) went before its guest reported: as for a real guest, nothing to do
        pass


def _blob_footer(cloud_credential, url: str) -> tuple[int, bytes] | None:
    """(size, last 512 bytes) of the blob at ``url``, None if there is none: what ARM reads to make an image."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobClient

    blob = BlobClient.from_blob_url(url, credential=cloud_credential)
    try:
        size = blob.get_blob_properties().size
    except ResourceNotFoundError:
        return None
    tail = min(size, 512)
    return size, blob.download_blob(offset=size - tail, length=tail).readall() if tail else b""


@pytest.fixture(scope="session")
def azure_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureCloud]:
    """The fake ARM and Azurite, each on a free port of 127.0.0.1 with one trustme CA; credentials in the env."""
    from cernvm_fixtures.providers import azure

    directory: Path = tmp_path_factory.mktemp("azure-cloud")
    secret = "fake-secret-" + secrets.token_hex(8)
    arm = Arm(directory, tenant=TENANT, client_id=CLIENT, secret=secret, polls=1).start()
    arm.guest = agent
    patch = pytest.MonkeyPatch()
    for name in UNSET:
        patch.delenv(name, raising=False)
    env = {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_AUTHORITY_HOST": arm.url,
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
        "REQUESTS_CA_BUNDLE": str(arm.ca_file),
    }
    for name, value in env.items():
        patch.setenv(name, value)
    try:
        emulator = azurite_mod.start(directory, arm.cert_file, arm.key_file)
    except azurite_mod.AzuriteUnavailable as e:
        arm.stop()
        patch.undo()
        pytest.fail(str(e))
    trusted = ssl.create_default_context(cafile=str(arm.ca_file))
    roles = BlobRoles(emulator.url, trusted, arm.context).start()
    roles.roles[CLIENT] = {WRITER}
    cloud = AzureCloud(arm, emulator, secret, env, roles)
    checker = cloud.credential()
    arm.blob_footer = lambda url: _blob_footer(checker, url)
    cloud.blobs().create_container(CONTAINER)
    azure.reset_clients()
    try:
        yield cloud
    finally:
        roles.stop()
        emulator.stop()
        arm.stop()
        patch.undo()
        azure.reset_clients()


@pytest.fixture
def azure_cloud(azure_session: AzureCloud) -> Iterator[AzureCloud]:
    """The session's fake ARM, with each test's requests and responses held to the SDK's models."""
    with azure_session.arm.checked():
        yield azure_session
