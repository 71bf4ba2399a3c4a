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
import sys
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


def standin_target(what: str, **options: Any) -> config.Target:
    """The KVM target of a stand-in (``what`` names it in config errors), with ``options``. KVM hangs when nested:
    TCG. Booted directly with console=ttyS0, as CernVM's hvm, tar.gz and vhd images boot (the ISO has no console=):
    the cloud suites check host keys against the serial console the fakes serve."""
    raw = {
        "standin": {
            "provider": "kvm",
            "domain_type": "qemu",
            "deadlines": DEADLINES,
            "boot": "kernel",
            "kernel_args": "console=ttyS0",
            **options,
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
        self.booting: dict[str, threading.Event] = {}
        self.failed: dict[str, str] = {}
        self.lock = threading.Lock()
        self.run: Run | None = None
        self.stop = threading.Event()

    def endpoint(self, machine: Any, host: str) -> tuple[str, int] | None:
        """Where SSH to ``machine`` goes: its stand-in's 127.0.0.1 forward (booted on first use, unless the
        Azure watcher booted it when the VM was created); None for a machine of no cloud here."""
        cloud = CLOUDS.get(machine.provider.name)
        if cloud is None:
            return None
        standin = self.standin(machine.name, host, lambda: self.boot(machine, host, cloud))
        return "127.0.0.1", standin.ssh_port

    def standin(self, name: str, host: str, boot: Callable[[], Any]) -> Any:
        """The stand-in of instance ``name``, booted by ``boot`` once; a caller asking while another boots it
        waits for that boot."""
        with self.lock:
            event = self.booting.get(name)
            first = event is None
            if first:
                event = self.booting[name] = threading.Event()
        assert event is not None
        if not first:
            event.wait()
        else:
            try:
                self.standins[name] = boot()
                with open("standins.log", "a") as log:
                    print(name, host, "->", self.standins[name].name, file=log)
            except BaseException as e:
                self.failed[name] = f"{type(e).__name__}: {e}"
                raise
            finally:
                event.set()
        if name not in self.standins:
            raise AssertionError(f"{name}: its stand-in did not boot: {self.failed.get(name)}")
        return self.standins[name]

    def boot(self, machine: Any, host: str, cloud: Cloud) -> Any:
        blob = cloud.user_data(machine, host)
        standin = self.launch(standin_target(f"{machine.provider.name} stand-in"), blob)
        cloud.booted(machine, standin)
        return standin

    def launch(self, target: config.Target, blob: bytes) -> Any:
        """A KVM stand-in of ``target`` booted with the user data ``blob`` (not waited for)."""
        from cernvm_fixtures.providers.kvm import KvmProvider

        with self.lock:
            if self.run is None:
                self.run = Run()
            run = self.run
        provider = KvmProvider(target, run)
        standin = provider.machine(run.name("standin"))
        try:
            provider.launch(standin, UserData(hostname=cloud_config(blob)["hostname"], blob=blob))
        except BaseException:
            standin.destroy()
            raise
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
        for event in list(self.booting.values()):
            event.wait(300)  # a boot the Azure watcher started: its stand-in is destroyed with the others
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

WIRESERVER = "10.0.2.16:8016"
"""Where an Azure stand-in's guest reaches its VM's WireServer (named on its kernel line, ``cvmfx_wireserver=``):
Azure's is 168.63.129.16:80, but QEMU's user network forwards only addresses of its own 10.0.2.0/24 (libslirp refuses
a guestfwd to 168.63.129.16: "Conflicting/invalid host:port in guest forwarding rule"), and names a forward's device
by its guest port, which 80 already has (the appliance's CernVM-FS server: "duplicate yank instance")."""


def azure_compute(url: str) -> Any:
    """The fake ARM's compute client, with the service principal of the environment."""
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient

    credential = ClientSecretCredential(
        os.environ["AZURE_TENANT_ID"],
        os.environ["AZURE_CLIENT_ID"],
        os.environ["AZURE_CLIENT_SECRET"],
        authority=url,
        disable_instance_discovery=True,
    )
    return ComputeManagementClient(
        credential,
        os.environ["AZURE_SUBSCRIPTION_ID"],
        base_url=url,
        credential_scopes=["https://management.azure.com/.default"],
    )


def azure_custom_data(url: str, group: str, name: str) -> bytes:
    """The custom data the fake holds for the VM (through the SDK)."""
    vm = azure_compute(url).virtual_machines.get(group, name)
    return base64.b64decode(vm.properties.os_profile.custom_data)


def azure_user_data(machine: Any, host: str) -> bytes:
    """The custom data the fake holds for the machine's VM."""
    return azure_custom_data(machine.options.endpoint, machine.group, machine.name)


def azure_serve(url: str, name: str, standin: Any) -> None:
    """The stand-in's console file becomes the VM's serial log in the fake (host keys are checked strictly), its
    screen the boot diagnostics screenshot."""
    import requests

    requests.put(f"{url}/_test/console/{name}", json={"file": str(standin.console_file)}, timeout=10)
    requests.put(f"{url}/_test/screen/{name}", json={"domain": standin.name}, timeout=10)


def azure_booted(machine: Any, standin: Any) -> None:
    azure_serve(machine.options.endpoint, machine.name, standin)


def azure_target(port: int) -> config.Target:
    """An Azure stand-in's KVM target: its context on a disc shaped like Azure's provisioning disc, and its VM's
    WireServer (on 127.0.0.1:``port``) forwarded to :data:`WIRESERVER`, named on the kernel line."""
    return standin_target(
        "azure stand-in",
        context_medium="azure",
        guest_forwards={WIRESERVER: port},
        kernel_args=f"console=ttyS0 cvmfx_wireserver={WIRESERVER}",
    )


def watch_azure(url: str, stop: threading.Event) -> None:
    """Boot a stand-in for each VM the fake ARM at ``url`` holds in creation, waiting for its guest's ready report
    (its test hook ``/_test/provisioning``), until ``stop`` is set: on Azure the guest boots while the VM is
    created, and its report ends the creation, so the stand-in cannot wait for the first SSH."""
    import requests

    seen: set[str] = set()
    while not stop.wait(0.5):
        try:
            waiting = requests.get(f"{url}/_test/provisioning", timeout=10).json()
        except requests.RequestException:
            continue
        for vm in waiting:
            if vm["name"] in seen:
                continue
            seen.add(vm["name"])
            threading.Thread(target=boot_azure, args=(url, vm), daemon=True).start()


def boot_azure(url: str, vm: dict[str, Any]) -> None:
    """The stand-in of one VM being created (its failure is kept for the SSH that would have reached it)."""

    def boot() -> Any:
        standin = STANDINS.launch(azure_target(vm["port"]), azure_custom_data(url, vm["group"], vm["name"]))
        azure_serve(url, vm["name"], standin)
        return standin

    try:
        STANDINS.standin(vm["name"], "(created)", boot)
    except BaseException as e:  # noqa: BLE001 - kept in STANDINS.failed, raised where the VM's SSH asks for it
        print(f"stand-in of {vm['name']} did not boot: {type(e).__name__}: {e}", file=sys.stderr)


CLOUDS = {
    "ec2": Cloud(ec2_user_data, ec2_booted),
    "openstack": Cloud(openstack_user_data, openstack_booted),
    "gce": Cloud(gce_user_data, gce_booted),
    "azure": Cloud(azure_user_data, azure_booted),
}
STANDINS = StandIns()


def pytest_cernvm_endpoint(machine: Any, host: str, port: int) -> tuple[str, int] | None:
    return STANDINS.endpoint(machine, host)


def pytest_sessionstart(session: Any) -> None:
    """Against the fake ARM (its URL is the environment's Azure authority), watch for VMs being created."""
    url = os.environ.get("AZURE_AUTHORITY_HOST", "")
    if url.startswith("https://127.0.0.1:"):
        threading.Thread(target=watch_azure, args=(url, STANDINS.stop), daemon=True).start()


def pytest_sessionfinish(session: Any) -> None:
    STANDINS.finish()
