"""The cloud stand-ins, as a pytest plugin: a scenario run against a cloud's fake or emulator loads it
(``-p tests.standins``, see ``run_suite`` in tests/helpers.py) and gets one KVM stand-in per cloud instance,
booted from the user data the fake holds for that instance, reached on 127.0.0.1 (``pytest_cernvm_endpoint``)
and destroyed when the session ends. What a stand-in prints on its console goes to where the fake serves the
instance's console, so the provider reads the host keys from there as on the real cloud, and its screen is named
to the fake that serves the instance's screenshot. Each booted stand-in is logged to ``standins.log``.

The session's own stand-in (the ``standin`` fixture in tests/conftest.py) is booted from ``standin_target`` too.
"""

from __future__ import annotations

import base64
import email
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from cernvm_fixtures import config
from cernvm_fixtures.context import Context
from cernvm_fixtures.run import Run

DEADLINES = {"running": 120, "reachable": 300, "login": 120, "ready": 120}
"""TCG on a shared 2-core machine."""


def standin_target(what: str) -> config.Target:
    """The KVM target of a stand-in (``what`` names it in config errors). KVM hangs when nested: TCG. Booted
    directly with console=ttyS0, as CernVM's hvm, tar.gz and vhd images boot (the ISO has no console=): the
    cloud suites check host keys against the serial console the fakes serve."""
    raw = {
        "standin": {
            "provider": "kvm",
            "domain_type": "qemu",
            "deadlines": DEADLINES,
            "boot": "kernel",
            "kernel_args": "console=ttyS0",
        }
    }
    return config.parse({"targets": raw}, what).targets["standin"]


@dataclass(frozen=True)
class UserData(Context):
    """A context that renders to the user data the cloud holds for the instance, byte for byte."""

    blob: bytes = b""

    def render(self) -> bytes:
        return self.blob


def cloud_config(blob: bytes) -> dict:
    """The ``#cloud-config`` part of user data (plain or MIME multipart)."""
    message = email.message_from_bytes(blob)
    parts = [p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()]
    for part in parts if message.is_multipart() else [blob]:
        if part.startswith(b"#cloud-config"):
            return yaml.safe_load(part)
    raise AssertionError("the user data the cloud holds has no cloud-config part")


class Cloud(NamedTuple):
    """How the stand-ins meet one cloud's fake: ``user_data(machine, host)`` reads what the cloud holds for an
    instance (and may check what a real instance would check); ``booted(machine, standin)`` runs once its
    stand-in is up (to serve its console and screen as the instance's)."""

    user_data: Callable[[Any, str], bytes]
    booted: Callable[[Any, Any], None]


class StandIns:
    """The stand-ins of one session's cloud instances, by instance name."""

    def __init__(self) -> None:
        self.standins: dict[str, Any] = {}
        self.run: Run | None = None
        self.stop = threading.Event()

    def endpoint(self, machine: Any, host: str) -> tuple[str, int] | None:
        """Where SSH to ``machine`` goes: its stand-in's 127.0.0.1 forward (booted on first use); None for a
        machine of no cloud here."""
        cloud = CLOUDS.get(machine.provider.name)
        if cloud is None:
            return None
        if machine.name not in self.standins:
            self.standins[machine.name] = self.boot(machine, host, cloud)
            with open("standins.log", "a") as log:
                print(machine.name, host, "->", self.standins[machine.name].name, file=log)
        return "127.0.0.1", self.standins[machine.name].ssh_port

    def boot(self, machine: Any, host: str, cloud: Cloud) -> Any:
        from cernvm_fixtures.providers.kvm import KvmProvider

        blob = cloud.user_data(machine, host)
        if self.run is None:
            self.run = Run()
        provider = KvmProvider(standin_target(f"{machine.provider.name} stand-in"), self.run)
        standin = provider.machine(self.run.name("standin"))
        try:
            provider.launch(standin, UserData(hostname=cloud_config(blob)["hostname"], blob=blob))
        except BaseException:
            standin.destroy()
            raise
        cloud.booted(machine, standin)
        return standin

    def forward_console(self, standin: Any, url: str) -> None:
        """Send what the stand-in's console gains to ``url`` (a fake's test hook) until the session ends."""
        threading.Thread(target=forward_console, args=(standin, url, self.stop), daemon=True).start()

    @staticmethod
    def name_screen(standin: Any, url: str) -> None:
        """Tell a fake (its test hook ``url``) which libvirt domain's screen is the instance's: the fake takes the
        stand-in's screenshot itself whenever the cloud's screenshot call asks for it."""
        request = urllib.request.Request(url, data=standin.name.encode(), method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def finish(self) -> None:
        self.stop.set()
        while self.standins:
            self.standins.popitem()[1].destroy()
        if self.run is not None:
            self.run.finish()


def forward_console(standin: Any, url: str, stop: threading.Event) -> None:
    """POST what the stand-in's console file gains to ``url`` until ``stop`` is set or the instance is gone."""
    sent = 0
    while not stop.is_set():
        data = standin.console_file.read_bytes() if standin.console_file.exists() else b""
        if len(data) > sent:
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=data[sent:], method="POST"), timeout=10).read()
            except urllib.error.HTTPError:
                return
            sent = len(data)
        stop.wait(0.3)


# --- EC2 on moto: instances moto only pretends to run -----------------------------------------------------


def ec2_user_data(machine: Any, host: str) -> bytes:
    """The user data moto holds for the instance (read back with describe_instance_attribute)."""
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=machine.options.endpoint_url, region_name=machine.traits["region"])
    value = ec2.describe_instance_attribute(InstanceId=machine.instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value)


def ec2_booted(machine: Any, standin: Any) -> None:
    """moto serves the stand-in's console as the instance's console output and its screen as the instance's
    screenshot (the tests' hooks in tests/fakes/moto_server.py)."""
    hooks = Path(os.environ["CVMFX_TEST_MOTO_CONSOLES"])
    (hooks / machine.instance_id).write_text(str(standin.console_file))
    (hooks / f"{machine.instance_id}.screen").write_text(standin.name)


# --- OpenStack: servers the local fake only records --------------------------------------------------------


def openstack_user_data(machine: Any, host: str) -> bytes:
    """The user data the fake holds for the server (through openstacksdk, as Nova's OS-EXT-SRV-ATTR:user_data)."""
    from cernvm_fixtures.providers import openstack

    assert host.startswith("192.0.2."), host
    server = openstack.connection(machine.options.cloud).compute.get_server(machine.server_id)
    return base64.b64decode(server.user_data)


def openstack_booted(machine: Any, standin: Any) -> None:
    """What the stand-in prints on its console goes to the server's console log (the fake's test hook)."""
    from cernvm_fixtures.providers import openstack

    base = openstack.connection(machine.options.cloud).config.get_auth_args()["auth_url"].rsplit("/identity", 1)[0]
    STANDINS.forward_console(standin, f"{base}/_test/console/{machine.server_id}")


# --- GCE: instances the local Compute API only pretends to run ------------------------------------------


def gce_user_data(machine: Any, host: str) -> bytes:
    """The instance's ``user-data`` metadata, if its ``ssh-keys`` metadata names exactly the keys the stand-in
    will admit. The appliance installs keys from the cloud-config only; the user data must stay byte for byte what
    the instance holds (a scenario compares it), so the stand-in is booted only if it would admit exactly the keys
    of the instance's ssh-keys metadata, as GCE's guest agent would install them."""
    instance = machine._instances().get(project=machine.project, zone=machine.options.zone, instance=machine.name)
    metadata = {item.key: item.value for item in instance.metadata.items}
    keys = [line.split(":", 1)[1] for line in metadata["ssh-keys"].splitlines() if line.startswith("root:")]
    blob = metadata["user-data"].encode()
    assert keys and keys == cloud_config(blob).get("ssh_authorized_keys"), keys
    assert metadata.get("block-project-ssh-keys") == "true"
    return blob


def gce_booted(machine: Any, standin: Any) -> None:
    """The stand-in's console becomes the instance's serial port 1, its screen the instance's screenshot."""
    STANDINS.forward_console(standin, f"{machine.options.endpoint}/_test/console/{machine.name}")
    STANDINS.name_screen(standin, f"{machine.options.endpoint}/_test/screen/{machine.name}")


# --- Azure: VMs the fake ARM only pretends to run ------------------------------------------------------------


def azure_user_data(machine: Any, host: str) -> bytes:
    """The custom data the fake holds for the VM (through the SDK, with the service principal of the
    environment)."""
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient

    url = machine.options.endpoint
    credential = ClientSecretCredential(
        os.environ["AZURE_TENANT_ID"],
        os.environ["AZURE_CLIENT_ID"],
        os.environ["AZURE_CLIENT_SECRET"],
        authority=url,
        disable_instance_discovery=True,
    )
    compute = ComputeManagementClient(
        credential,
        os.environ["AZURE_SUBSCRIPTION_ID"],
        base_url=url,
        credential_scopes=["https://management.azure.com/.default"],
    )
    vm = compute.virtual_machines.get(machine.group, machine.name)
    return base64.b64decode(vm.properties.os_profile.custom_data)


def azure_booted(machine: Any, standin: Any) -> None:
    """The stand-in's console file becomes the VM's serial log in the fake (host keys are checked strictly), its
    screen the boot diagnostics screenshot."""
    import requests

    url = f"{machine.options.endpoint}/_test/console/{machine.name}"
    requests.put(url, json={"file": str(standin.console_file)}, timeout=10)
    url = f"{machine.options.endpoint}/_test/screen/{machine.name}"
    requests.put(url, json={"domain": standin.name}, timeout=10)


CLOUDS = {
    "ec2": Cloud(ec2_user_data, ec2_booted),
    "openstack": Cloud(openstack_user_data, openstack_booted),
    "gce": Cloud(gce_user_data, gce_booted),
    "azure": Cloud(azure_user_data, azure_booted),
}
STANDINS = StandIns()


def pytest_cernvm_endpoint(machine: Any, host: str, port: int) -> tuple[str, int] | None:
    return STANDINS.endpoint(machine, host)


def pytest_sessionfinish(session: Any) -> None:
    STANDINS.finish()
