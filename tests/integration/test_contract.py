"""The provider contract suite (cernvm_fixtures.testing.contract) on the real engines: Docker and KVM.

Each class fills in the adapter: the target, the engine's objects of a run (by the run directory their
labels or domain XML name), and an interceptor at the SDK's create calls (ledger before create).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing.contract import Intercept, Objects, ProviderContract

from ..helpers import docker_objects_under, domains_under

pytestmark = pytest.mark.integration


@contextmanager
def wrapped(methods: list[tuple[type, str]], on_create: Callable[[], None]) -> Iterator[None]:
    """Call ``on_create`` before each of these SDK methods runs (the calls that create an engine object)."""
    originals = [(cls, name, getattr(cls, name)) for cls, name in methods]

    def wrap(original: Callable) -> Callable:
        def call(*args, **kwargs):
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
            # (providers/docker.py _release_held); test_sigkill_then_sweep checks it from a process that ends
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
