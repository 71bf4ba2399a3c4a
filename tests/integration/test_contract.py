"""The provider contract suite (cernvm_fixtures.testing.contract) on the real engines (Docker, KVM), and on
EC2 (moto's server), OpenStack (the fake Nova/Neutron/Glance), GCE (the local Compute API held to Google's
discovery document) and Azure (the fake ARM and Azurite), driven by their real SDKs, with the session's KVM
stand-in answering SSH for the clouds' machines; and on VirtualBox (the real VBoxManage defines each machine,
QEMU boots it: this host has no VirtualBox kernel driver).

Each class fills in the adapter: the target, the engine's objects of a run (by the run directory their
labels or domain XML name, or the run tag), and an interceptor at the SDK's create calls (ledger before create).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing.contract import Intercept, Objects, ProviderContract

from ..clouds import run_in, target_for
from ..fakes import virtualbox as vbox
from ..fakes.azure.fixtures import CONTAINER
from ..fakes.azure.vhd import make_vhd
from ..helpers import docker_objects_under, domains_under


@contextmanager
def wrapped(
    methods: list[tuple[type, str]], on_create: Callable[[], None], only: Callable[..., bool] | None = None
) -> Iterator[None]:
    """Call ``on_create`` before each of these SDK methods runs (the calls that create an engine object), or only
    before the calls whose arguments ``only`` accepts."""
    originals = [(cls, name, getattr(cls, name)) for cls, name in methods]

    def wrap(original: Callable) -> Callable:
        def call(*args, **kwargs):
            if only is None or only(*args, **kwargs):
                on_create()
            return original(*args, **kwargs)

        return call

    for cls, name, original in originals:
        setattr(cls, name, wrap(original))
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


class TestDockerContract(ProviderContract):
    contract_skips = {"test_reboot_gives_a_new_boot_id": "a container does not reboot (its boot id is the host's)"}

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls) -> config.Target:
        return config.parse_target("contract", {"provider": "docker", "mode": "parrot"}, "docker contract")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls) -> Objects:
        from cernvm_fixtures.providers import docker

        def objects(run: Run) -> set[str]:
            # the run's image is shared by this process's machines and removed when the process exits
            # (providers/docker/__init__.py _release_held); test_sigkill_then_sweep checks it from a process that ends
            held = {f"image {[ref]}" for _, ref in docker._held}
            state = run.directory.parent.parent  # the labels record the state directory, not the run's
            return set(docker_objects_under(state, run=run.id)) - held

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        from docker.api.client import APIClient

        creates = [
            (APIClient, "create_container"),
            (APIClient, "create_volume"),
            (APIClient, "import_image"),
            (APIClient, "import_image_from_file"),
            (APIClient, "commit"),
        ]
        return lambda on_create: wrapped(creates, on_create)

    @pytest.fixture
    def contract_child(self) -> tuple[str, dict[str, str]]:
        return '[targets.contract]\nprovider = "docker"\nmode = "parrot"\n', {}


class TestKvmContract(ProviderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls) -> config.Target:
        return config.parse_target("contract", {"provider": "kvm"}, "kvm contract")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls) -> Objects:
        def objects(run: Run) -> set[str]:
            files = {p.name for p in (run.directory / "machines").glob("*")}
            return set(domains_under(run.directory)) | files

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        import libvirt

        creates = [
            (libvirt.virConnect, "createXML"),
            (libvirt.virConnect, "defineXML"),
            (libvirt.virConnect, "createXMLWithFiles"),
            (libvirt.virStoragePool, "createXML"),
        ]
        return lambda on_create: wrapped(creates, on_create)

    @pytest.fixture
    def contract_child(self) -> tuple[str, dict[str, str]]:
        return '[targets.contract]\nprovider = "kvm"\n', {}


class TestVirtualBoxContract(ProviderContract):
    """VirtualBox through the real VBoxManage 7.2, with the stand-in VBoxManage booting each machine under QEMU."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls) -> config.Target:
        return vbox.target("contract", shared_folders={})

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls) -> Objects:
        def objects(run: Run) -> set[str]:
            found = {f"vm {name}" for name in vbox.vms() if run.id in name}
            found |= {f"vm {path}" for path in vbox.vm_files() if str(run.directory) in path}
            found |= {f"medium {line}" for line in vbox.media().splitlines() if str(run.directory) in line}
            found |= {f"qemu {line}" for line in vbox.qemus_under(run.directory)}
            return found | {f"directory {p.name}" for p in (run.directory / "machines").glob("*")}

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        from cernvm_fixtures.providers.virtualbox import VBoxManage

        def is_create(vboxmanage: VBoxManage, *args: str, **kwargs) -> bool:
            return args[0] in ("createmedium", "createvm")

        return lambda on_create: wrapped([(VBoxManage, "__call__")], on_create, only=is_create)

    @pytest.fixture
    def contract_child(self) -> tuple[str, dict[str, str]]:
        command = ", ".join(f'"{part}"' for part in vbox.STANDIN)
        text = f'[targets.contract]\nprovider = "virtualbox"\nvboxmanage = [{command}]\nprofile = "{vbox.PROFILE}"\n'
        return text + "slowdown = 4\n", {}


EC2_CREATES = (
    "ImportKeyPair",
    "CreateVpc",
    "CreateInternetGateway",
    "CreateSubnet",
    "CreateRouteTable",
    "CreateSecurityGroup",
    "RunInstances",
)
"""The EC2 calls that create a resource of the run (CreateTags, CreateRoute... only change one)."""


class TestEc2Contract(ProviderContract):
    """EC2 on moto's server; moto's instances have no reachable address, so the run's endpoint maps each of them
    to the session's KVM stand-in (SSH on 127.0.0.1), whose key the run uses; moto serves the stand-in's console
    as the instance's, so host keys are checked, not trusted."""

    contract_skips = {
        "test_reboot_gives_a_new_boot_id": "moto records a reboot, but the shared KVM stand-in must not reboot",
        "test_sigkill_then_sweep": "a child pytest cannot reach the stand-in; test_ec2.py sweeps a killed run's tags",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls, moto) -> config.Target:
        image = moto.client().register_image(
            Name=f"ucernvm-contract-{secrets.token_hex(3)}",
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            EnaSupport=True,
        )["ImageId"]
        return target_for(moto, image, "contract", tags={})

    @pytest.fixture(scope="class")
    @classmethod
    def contract_run(cls, standin, moto) -> Callable[[Path], Run]:
        return lambda state: run_in(state, standin, cloud=moto)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls, moto) -> Objects:
        return lambda run: {f"{kind} {i}" for kind, found in moto.tagged(value=run.id).items() for i in found}

    @pytest.fixture
    def contract_intercept(self, moto) -> Intercept:
        from cernvm_fixtures.providers import ec2

        client = ec2.client("ec2", moto.region, moto.url)

        @contextmanager
        def intercept(on_create: Callable[[], None]) -> Iterator[None]:
            def before(event_name: str, **kwargs) -> None:
                if event_name.rsplit(".", 1)[-1] in EC2_CREATES:
                    on_create()

            client.meta.events.register("before-call.ec2.*", before)
            try:
                yield
            finally:
                client.meta.events.unregister("before-call.ec2.*", before)

        return intercept


class TestOpenStackContract(ProviderContract):
    """OpenStack through openstacksdk against the fake cloud; the fake serves the stand-in's console."""

    contract_skips = {
        "test_reboot_gives_a_new_boot_id": "the fake records a reboot, but the shared KVM stand-in must not reboot",
        "test_sigkill_then_sweep": "a child pytest cannot reach the stand-in; test_openstack.py sweeps a killed run",
    }

    @pytest.fixture(autouse=True)
    def no_failures_of_the_fake(self, openstack_cloud) -> None:
        """Each test's failures of the fake itself fail the test (``openstack_cloud``)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls, openstack_session) -> config.Target:
        image = openstack_session.add_image(f"CernVM 4 contract [{secrets.token_hex(3)}]", b"cernvm-bootloader")
        return target_for(openstack_session, image["id"], "contract")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_run(cls, standin, openstack_session) -> Callable[[Path], Run]:
        return lambda state: run_in(state, standin, cloud=openstack_session)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls, openstack_session) -> Objects:
        def objects(run: Run) -> set[str]:
            fake = openstack_session
            with fake.lock:
                named = [("server", s.body.get("name", "")) for s in fake.servers.values()]
                named += [("keypair", k) for k in fake.keypairs]
                named += [("security-group", g["name"]) for g in fake.groups.values()]
                named += [("image", i["name"]) for i in fake.images.values()]
                named += [("floating-ip", f.get("description") or "") for f in fake.floating_ips.values()]
            return {f"{kind} {name}" for kind, name in named if run.id in name}

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        from openstack.compute.v2._proxy import Proxy as Compute
        from openstack.image.v2._proxy import Proxy as Image
        from openstack.network.v2._proxy import Proxy as Network

        creates = [
            (Compute, "create_keypair"),
            (Compute, "create_server"),
            (Network, "create_security_group"),
            (Network, "create_ip"),
            (Image, "create_image"),
        ]
        return lambda on_create: wrapped(creates, on_create)


class TestGceContract(ProviderContract):
    """GCE through google-cloud-compute against the local Compute API; the API's serial port 1 carries the
    stand-in's console (where the provider reads the host keys from)."""

    contract_skips = {
        "test_reboot_gives_a_new_boot_id": "the local API records a reset, but the shared KVM stand-in must not reboot",
        "test_sigkill_then_sweep": "a child pytest cannot reach the stand-in; test_gce.py sweeps a killed run",
    }

    @pytest.fixture(autouse=True)
    def held_to_the_discovery_document(self, gce) -> None:
        """Each test's requests and responses are checked against Compute's discovery document (``gce``)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls, gce_session, gce_image) -> config.Target:
        deadlines = {"running": 10, "reachable": 20, "login": 20, "ready": 20}
        return target_for(gce_session, gce_image, "contract", labels={}, deadlines=deadlines)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_run(cls, standin, gce_session) -> Callable[[Path], Run]:
        return lambda state: run_in(state, standin, cloud=gce_session)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls, gce_session) -> Objects:
        def objects(run: Run) -> set[str]:
            held = {f"{kind} {name}" for kind, names in gce_session.api.held().items() for name in names}
            held |= {f"being inserted {target}" for target in gce_session.api.pending()}  # exists in a moment
            return {h for h in held if run.id in h}

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        from google.cloud import compute_v1, storage

        creates = [
            (compute_v1.InstancesClient, "insert_unary"),
            (compute_v1.FirewallsClient, "insert_unary"),
            (compute_v1.ImagesClient, "insert_unary"),
            (storage.Blob, "upload_from_filename"),
        ]
        return lambda on_create: wrapped(creates, on_create)


class TestAzureContract(ProviderContract):
    """Azure through the Azure SDK against the fake ARM API and Azurite; the fake serves the stand-in's console
    as the boot diagnostics serial log."""

    contract_skips = {
        "test_reboot_gives_a_new_boot_id": "the fake records a restart, but the shared KVM stand-in must not reboot",
        "test_sigkill_then_sweep": "a child pytest cannot reach the stand-in; test_azure.py sweeps a killed run",
    }

    @pytest.fixture(autouse=True)
    def held_to_the_sdk_models(self, azure_cloud) -> None:
        """Each test's requests and responses are checked against the SDK's models (``azure_cloud``)."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls, azure_session, tmp_path_factory) -> config.Target:
        from azure.mgmt.compute import models

        vhd = make_vhd(tmp_path_factory.mktemp("vhd") / "contract.vhd")
        blob = azure_session.blobs().get_blob_client(CONTAINER, f"contract-{secrets.token_hex(3)}.vhd")
        blob.create_page_blob(vhd.stat().st_size)
        blob.upload_page(vhd.read_bytes()[-512:], offset=vhd.stat().st_size - 512, length=512)
        group = "cernvm-contract-images"
        azure_session.client("resource").resource_groups.create_or_update(group, {"location": "westeurope"})
        disk = models.ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=blob.url)
        image = models.Image(
            location="westeurope",
            properties=models.ImageProperties(storage_profile=models.ImageStorageProfile(os_disk=disk)),
        )
        image_id = azure_session.client("compute").images.begin_create_or_update(group, "cernvm", image).result().id
        return target_for(azure_session, image_id, "contract", tags={})

    @pytest.fixture(scope="class")
    @classmethod
    def contract_run(cls, standin, azure_session) -> Callable[[Path], Run]:
        return lambda state: run_in(state, standin, cloud=azure_session)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls, azure_session) -> Objects:
        def objects(run: Run) -> set[str]:
            found = {f"arm {r}" for r in azure_session.arm.tagged("cvmfx-run", run.id)}
            return found | {f"blob {b}" for b in azure_session.blob_names(run.id)}

        return objects

    @pytest.fixture
    def contract_intercept(self, azure_cloud) -> Intercept:
        from azure.core.pipeline import Pipeline

        def is_create(pipeline: Pipeline, request, **kwargs) -> bool:
            """ARM creates with PUT (create_or_update); blob uploads to Azurite are PUTs too, but not creates."""
            return request.method == "PUT" and request.url.startswith(azure_cloud.url)

        return lambda on_create: wrapped([(Pipeline, "run")], on_create, only=is_create)
