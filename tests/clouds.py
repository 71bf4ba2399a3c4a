"""What the cloud suites share (EC2 on moto; OpenStack, GCE and Azure on their fakes; their contract tests): the
target each cloud's tests boot, the config file of a child process, runs whose SSH goes to the session's KVM
stand-in (the fake serving the stand-in's console as the machine's, so host keys are checked, not trusted), what a
cloud still holds, and the check that nothing of a run is left.

The ``cloud`` argument is what the cloud's fixture gives: :class:`Moto`, :class:`FakeOpenStack`, :class:`Gce` or
:class:`AzureCloud`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cernvm_fixtures import config
from cernvm_fixtures.run import Keep, Run

from .fakes import moto_server
from .fakes.azure.fixtures import AzureCloud
from .fakes.gce.fixtures import Gce
from .fakes.moto_server import Moto
from .fakes.openstack.cloud import FakeOpenStack
from .fakes.openstack.fixtures import CLOUD
from .helpers import write_target

CIDR = "203.0.113.7/32"
"""Where SSH may come from, for every cloud target of the tests (a documentation range)."""
PROJECT = {"project": "cernvm-fixtures-tests"}
"""The tests' own tags (labels) on what a run makes, beside cernvm-fixtures' own."""


@dataclass(frozen=True)
class Cloud:
    """One cloud as its tests use it."""

    target: str
    """The name of the target its tests boot."""
    platform: Callable[[Any, str], dict[str, Any]]
    """The options pointing its provider at the fake (and at the image given)."""
    tests: dict[str, Any]
    """The options of the target its tests boot: host keys from the console (the stand-in prints its own there),
    quick polls, deadlines for TCG on a shared machine, the tests' own tags."""
    child: dict[str, Any]
    """The options of a child process's config file."""
    serve: Callable[[Any, Any, Any], None]
    """``serve(cloud, machine, standin)``: the fake serves the stand-in's console (and screen) as the machine's."""
    held: Callable[[Any, Run | None], dict[str, list[str]]]
    """What the cloud holds, by kind: of the run (EC2, Azure), or all that cernvm-fixtures made (OpenStack, GCE)."""


def gce_held(gce: Gce, run: Run | None = None) -> dict[str, list[str]]:
    """What the APIs hold that cernvm-fixtures made (the session's user image and its object excepted)."""
    held = gce.api.held()
    held["image"] = [i for i in held.get("image", []) if i.startswith("cvmfx-")]
    objects = [o for o in gce.objects() if o.startswith("cernvm-fixtures/")]
    return {k: v for k, v in {**held, "object": objects}.items() if v}


def azure_held(cloud: AzureCloud, run: Run | None) -> dict[str, list[str]]:
    assert run is not None, "what the fake ARM holds of a run"
    found = {"arm": cloud.arm.tagged("cernvm-fixtures:run", run.id), "blob": cloud.blob_names(run.id)}
    return {k: v for k, v in found.items() if v}


def moto_serve(moto: Moto, machine: Any, standin: Any) -> None:
    moto_server.CONSOLES[machine.instance_id] = standin.console_log
    moto_server.SCREENS[machine.instance_id] = standin.machine.screenshot


CLOUDS: dict[type, Cloud] = {
    Moto: Cloud(
        "ec2",
        lambda moto, image: {"provider": "ec2", "image": image, "region": moto.region, "endpoint_url": moto.url},
        {
            "host_key": "console",
            "poll_interval": 0.1,
            "slowdown": 1,
            "tags": PROJECT,
            "deadlines": {"running": 20, "reachable": 20, "login": 20, "ready": 20},
        },
        {"poll_interval": 0.2, "slowdown": 1},
        moto_serve,
        lambda moto, run: moto.tagged(value=run.id),
    ),
    FakeOpenStack: Cloud(
        "os",
        lambda fake, image: {"provider": "openstack", "image": image, "cloud": CLOUD},
        {
            "host_key": "console",
            "poll_interval": 0.05,
            "slowdown": 1,
            "deadlines": {"running": 10, "reachable": 20, "login": 20, "ready": 20},
        },
        {"poll_interval": 0.1, "slowdown": 1},
        lambda fake, machine, standin: fake.set_console(machine.server_id, standin.console_log()),
        lambda fake, run: fake.holds(),
    ),
    Gce: Cloud(
        "gce",
        lambda gce, image: {
            "provider": "gce",
            "image": image,
            "zone": gce.zone,
            "endpoint": gce.api.url,
            "storage_endpoint": gce.storage,
            "bucket": gce.bucket,
        },
        {
            "host_key": "console",
            "poll_interval": 0.05,
            "slowdown": 1,
            "labels": PROJECT,
            "deadlines": {"running": 10, "reachable": 10, "login": 10, "ready": 10},
        },
        {"poll_interval": 0.1},
        lambda gce, machine, standin: gce.api.write_serial(machine.name, standin.console_log()),
        gce_held,
    ),
    AzureCloud: Cloud(
        "azure",
        lambda cloud, image: {
            "provider": "azure",
            "image": image,
            "location": "westeurope",
            "endpoint": cloud.url,
            "instance_discovery": False,
            "vm_size": "Standard_B2s",
        },
        {
            "host_key": "console",
            "poll_interval": 0.05,
            "slowdown": 1,
            "tags": PROJECT,
            "deadlines": {"running": 20, "reachable": 60, "login": 60, "ready": 60},
        },
        {"host_key": "console", "poll_interval": 0.05, "slowdown": 1},
        lambda cloud, machine, standin: cloud.arm.consoles.__setitem__(machine.name.lower(), standin.console_log),
        azure_held,
    ),
}


def options(cloud: Any, image: str, **extra: Any) -> dict[str, Any]:
    """The options of the target the cloud's tests boot, with ``extra``."""
    found = CLOUDS[type(cloud)]
    return {**found.platform(cloud, image), "profile": "appliance", "ssh_cidr": CIDR, **found.tests, **extra}


def target_for(cloud: Any, image: str, name: str | None = None, **extra: Any) -> config.Target:
    """The target the cloud's tests boot (named ``name``, else the cloud's usual name), with ``extra`` options."""
    name = name or CLOUDS[type(cloud)].target
    return config.parse({"targets": {name: options(cloud, image, **extra)}}, "test").targets[name]


def config_file(path: Path, cloud: Any, image: str, **extra: Any) -> Path:
    """A cernvm.toml declaring the cloud's target for a child process, with ``extra`` options."""
    found = CLOUDS[type(cloud)]
    raw = {**found.platform(cloud, image), "profile": "appliance", "ssh_cidr": CIDR, **found.child, **extra}
    return write_target(path, found.target, raw)


def run_in(
    state: Path, standin: Any = None, *, cloud: Any = None, keep: Keep = Keep.NEVER, endpoint: Any = None
) -> Run:
    """A run whose state lives in ``state``. With the session's stand-in, its SSH goes to the stand-in (to its
    127.0.0.1 forward unless ``endpoint`` says otherwise) with the stand-in's key, which the stand-in accepts; with
    the cloud too, the cloud's fake serves the stand-in's console as the machine's before each connection."""
    if standin is not None:
        to = endpoint or (lambda machine, host, port: ("127.0.0.1", standin.machine.ssh_port))

        def endpoint(machine: Any, host: str, port: int) -> tuple[str, int]:
            if cloud is not None:
                CLOUDS[type(cloud)].serve(cloud, machine, standin)
            return to(machine, host, port)

    run = Run(state=state, keep=keep, endpoint=endpoint)
    if standin is not None:
        run.directory.mkdir(parents=True, mode=0o700)
        shutil.copy2(standin.machine.provider.run.key_file, run.directory / "id_ed25519")
    return run


def run_for(
    tmp_path: Path, standin: Any = None, *, cloud: Any = None, keep: Keep = Keep.NEVER, endpoint: Any = None
) -> Run:
    """A run of this test (state in ``tmp_path``/state): see ``run_in``."""
    return run_in(tmp_path / "state", standin, cloud=cloud, keep=keep, endpoint=endpoint)


def held(cloud: Any, run: Run | None = None) -> dict[str, list[str]]:
    """What the cloud still holds, by kind (see ``Cloud.held``)."""
    return CLOUDS[type(cloud)].held(cloud, run)


def assert_nothing_left(cloud: Any, run: Run) -> None:
    """Nothing of the run is left: on the cloud, and in its ledger."""
    assert held(cloud, run) == {}, f"the {CLOUDS[type(cloud)].target} cloud still holds what the run made"
    assert run.ledger.entries() == []
