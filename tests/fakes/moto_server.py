"""A moto server (server mode, HTTP on 127.0.0.1) standing in for the EC2 and S3 APIs, with fake credentials.

A pytest plugin (the root conftest declares it): the fixture ``moto`` is session scoped, one server per pytest
process (per xdist worker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .screens import standin_screen

REGION = "eu-west-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAMOTOTESTING0000",
    "AWS_SECRET_ACCESS_KEY": "moto-testing-secret",
    "AWS_DEFAULT_REGION": REGION,
    # Never ask the instance metadata service (169.254.169.254) for credentials, and ignore ~/.aws.
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/cernvm-fixtures-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/cernvm-fixtures-tests/aws-credentials",
}
UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
TAG_KEY = "cvmfx-run"
CONSOLES: dict[str, Callable[[], str]] = {}
"""Instance id -> what moto answers GetConsoleOutput with for it (a KVM stand-in's console, so the provider
reads the stand-in's host keys from it as from a real instance's); others get moto's canned sample."""
CONSOLES_ENV = "CVMFX_TEST_MOTO_CONSOLES"
"""For the stand-ins plugin in another process (tests/standins.py): a directory where file ``<instance id>`` names
the console file to serve. Not EC2: the tests' control channel, like the other fakes' ``/_test/`` routes."""
SCREENS: dict[str, Callable[[Path], Path]] = {}
"""Instance id -> how to take a screenshot of its stand-in (PNG to the path given: a KVM stand-in's
``machine.screenshot``), which moto answers GetConsoleScreenshot with, as JPG like EC2. In the CONSOLES_ENV
directory, file ``<instance id>.screen`` names the stand-in's libvirt domain for a stand-in in another process."""


def serve_consoles(directory: Path) -> Callable[..., Any]:
    """moto's GetConsoleOutput answering from CONSOLES and ``directory``, else as moto does."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString

    canned = General.get_console_output

    def get_console_output(self: Any) -> Any:
        instance_id = self._get_param("InstanceId")
        source = CONSOLES.get(instance_id)
        named = directory / instance_id
        if source is None and named.exists():
            path = Path(named.read_text())
            source = lambda: path.read_text(errors="replace") if path.exists() else ""  # noqa: E731
        if source is None:
            return canned(self)
        instance = self.ec2_backend.get_instance(instance_id)  # an unknown id fails as in moto itself
        output = Base64EncodedString.from_raw_string(source())
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(), "Output": output})

    return get_console_output


def serve_screens(directory: Path) -> Callable[..., Any]:
    """GetConsoleScreenshot, which moto lacks: the stand-in's real screen now, as a JPG in base64 (EC2's format);
    an instance without a stand-in has none to show."""
    import base64
    import io
    import tempfile

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from PIL import Image

    def get_console_screenshot(self: Any) -> Any:
        instance_id = self._get_param("InstanceId")
        instance = self.ec2_backend.get_instance(instance_id)  # an unknown id fails as in moto itself
        take = SCREENS.get(instance_id)
        named = directory / f"{instance_id}.screen"
        if take is None and named.exists():
            take = standin_screen(named.read_text().strip())
        if take is None:
            raise EC2ClientError("UnsupportedOperation", f"{instance_id} has no stand-in whose screen to show")
        with tempfile.TemporaryDirectory() as temporary:
            with Image.open(take(Path(temporary) / "screen.png")) as png:
                jpg = io.BytesIO()
                png.convert("RGB").save(jpg, format="JPEG")
        return ActionResult({"InstanceId": instance.id, "ImageData": base64.b64encode(jpg.getvalue()).decode()})

    return get_console_screenshot


@dataclass(frozen=True)
class Moto:
    url: str
    region: str = REGION

    def client(self, service: str = "ec2") -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=self.region)

    def tagged(self, key: str = TAG_KEY, value: str | None = None) -> dict[str, list[str]]:
        """Everything moto holds that carries tag ``key`` (with ``value``), by kind; terminated instances excluded."""
        ec2 = self.client()
        flt = (
            [{"Name": f"tag:{key}", "Values": [value]}] if value is not None else [{"Name": "tag-key", "Values": [key]}]
        )
        found: dict[str, list[str]] = {}

        def put(kind: str, ids: list[str]) -> None:
            if ids:
                found[kind] = sorted(ids)

        put(
            "instance",
            [
                i["InstanceId"]
                for r in ec2.describe_instances(Filters=flt)["Reservations"]
                for i in r["Instances"]
                if i["State"]["Name"] != "terminated"
            ],
        )
        put("vpc", [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]])
        put("subnet", [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]])
        put("route-table", [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=flt)["RouteTables"]])
        put(
            "internet-gateway",
            [g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=flt)["InternetGateways"]],
        )
        put("security-group", [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]])
        put("key-pair", [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]])
        put("volume", [v["VolumeId"] for v in ec2.describe_volumes(Filters=flt)["Volumes"]])
        put("snapshot", [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]])
        put("image", [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]])
        return found


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A ThreadedMotoServer on a free port of 127.0.0.1, with fake credentials in the environment and the
    consoles and screens of stand-ins served as their instances' console output and screenshot (CONSOLES,
    SCREENS, CONSOLES_ENV)."""
    from moto.ec2.responses.general import General
    from moto.server import ThreadedMotoServer

    from cernvm_fixtures.providers import ec2

    patch = pytest.MonkeyPatch()
    consoles = tmp_path_factory.mktemp("moto-consoles")
    patch.setattr(General, "get_console_output", serve_consoles(consoles))
    patch.setattr(General, "get_console_screenshot", serve_screens(consoles), raising=False)
    patch.setenv(CONSOLES_ENV, str(consoles))
    for name in UNSET:
        patch.delenv(name, raising=False)
    for name, value in FAKE_CREDENTIALS.items():
        patch.setenv(name, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    ec2.reset_clients()
    try:
        yield Moto(f"http://{host}:{port}")
    finally:
        server.stop()
        patch.undo()
        CONSOLES.clear()
        SCREENS.clear()
        ec2.reset_clients()
