"""What the cloud suites share (EC2 on moto; OpenStack, GCE and Azure on their fakes; their contract tests): the
target each cloud's tests boot, the config file of a child process, runs whose SSH goes to the session's KVM
stand-in (the fake serving the stand-in's console as the machine's, so host keys are checked, not trusted), what a
cloud still holds, and the check that nothing of a run is left.

The ``cloud`` argument is what the cloud's fixture gives: :class:`Moto`, :class:`FakeOpenStack`, :class:`Gce` or
:class:`AzureCloud`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.run import Keep, Run

from .fakes import moto_server
from .fakes.azure.fixtures import AzureCloud
from .fakes.gce.fixtures import Gce
from .fakes.moto_server import Moto
from .fakes.openstack.cloud import FakeOpenStack
from .fakes.openstack.fixtures import CLOUD
from .helpers import (
    ROOT,
    SuiteReport,
    create_only,
    domains_under,
    ledger_entries,
    run_suite,
    subprocess_env,
    write_target,
)

CIDR = "203.0.113.7/32"
"""Where SSH may come from, for every cloud target of the tests (a documentation range)."""
PROJECT = {"project": "cernvm-fixtures-tests"}
"""The tests' own tags (labels) on what a run makes, beside cernvm-fixtures' own."""
FORGED = (
    "-----BEGIN SSH HOST KEY KEYS-----\n"
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@forged\n"
    "-----END SSH HOST KEY KEYS-----\n"
)
"""A console's host-key block naming a key the stand-in does not have: the login must refuse the stand-in."""


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
    serve: Callable[[Any, Any, Any, Callable[[], str]], None]
    """``serve(cloud, machine, standin, console)``: the fake serves ``console()`` as the machine's console (and the
    stand-in's screen as its screen)."""
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
    found = {"arm": cloud.arm.tagged("cvmfx-run", run.id), "blob": cloud.blob_names(run.id)}
    return {k: v for k, v in found.items() if v}


def moto_serve(moto: Moto, machine: Any, standin: Any, console: Callable[[], str]) -> None:
    moto_server.CONSOLES[machine.instance_id] = console
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
        lambda fake, machine, standin, console: fake.set_console(machine.server_id, console()),
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
        lambda gce, machine, standin, console: gce.api.write_serial(machine.name, console()),
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
        lambda cloud, machine, standin, console: cloud.arm.consoles.__setitem__(machine.name.lower(), console),
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
    state: Path,
    standin: Any = None,
    *,
    cloud: Any = None,
    console: Callable[[], str] | None = None,
    keep: Keep = Keep.NEVER,
    endpoint: Any = None,
) -> Run:
    """A run whose state lives in ``state``. With the session's stand-in, its SSH goes to the stand-in (to its
    127.0.0.1 forward unless ``endpoint`` says otherwise) with the stand-in's key, which the stand-in accepts; with
    the cloud too, the cloud's fake serves the stand-in's console (or ``console()``) as the machine's before each
    connection."""
    if standin is not None:
        to = endpoint or (lambda machine, host, port: ("127.0.0.1", standin.machine.ssh_port))

        def endpoint(machine: Any, host: str, port: int) -> tuple[str, int]:
            if cloud is not None:
                CLOUDS[type(cloud)].serve(cloud, machine, standin, console or standin.console_log)
            return to(machine, host, port)

    run = Run(state=state, keep=keep, endpoint=endpoint)
    if standin is not None:
        run.directory.mkdir(parents=True, mode=0o700)
        shutil.copy2(standin.machine.provider.run.key_file, run.directory / "id_ed25519")
    return run


def run_for(tmp_path: Path, standin: Any = None, **options: Any) -> Run:
    """A run of this test (state in ``tmp_path``/state): see ``run_in``."""
    return run_in(tmp_path / "state", standin, **options)


def assert_launch_fails(
    tmp_path: Path, cloud: Any, target: config.Target, error: type[Exception], match: str, **create: Any
) -> None:
    """``create_only`` of ``target`` (with ``create``) fails with ``error``, its message matching ``match``, and
    leaves nothing on the cloud or in the ledger."""
    run = run_for(tmp_path)
    with pytest.raises(error, match=match):
        create_only(target, run, **create)
    assert_nothing_left(cloud, run)


def assert_forged_host_key_refused(tmp_path: Path, cloud: Any, standin: Any, target: config.Target) -> None:
    """With the stand-in answering SSH but the cloud's console announcing another host key (FORGED), the launch
    of ``target`` fails at login, naming the key it was not given, and leaves nothing."""
    from cernvm_fixtures.errors import ReadinessError
    from cernvm_fixtures.instance import launch

    run = run_for(tmp_path, standin, cloud=cloud, console=lambda: FORGED)
    with pytest.raises(ReadinessError, match="not among the 1 key"):
        launch(target, run)
    assert_nothing_left(cloud, run)


def assert_standin_screen(path: Path) -> None:
    """``path`` is a PNG of the stand-in's screen as a fake served it: its VGA text screen, not blank."""
    from PIL import Image

    with Image.open(path) as picture:
        assert (picture.format, picture.size) == ("PNG", (720, 400)), "the stand-in's VGA text screen"
        assert len(picture.convert("RGB").getcolors(1 << 16) or ()) > 1, "blank: one colour"


def held(cloud: Any, run: Run | None = None) -> dict[str, list[str]]:
    """What the cloud still holds, by kind (see ``Cloud.held``)."""
    return CLOUDS[type(cloud)].held(cloud, run)


def assert_nothing_left(cloud: Any, run: Run) -> None:
    """Nothing of the run is left: on the cloud, and in its ledger."""
    assert held(cloud, run) == {}, f"the {CLOUDS[type(cloud)].target} cloud still holds what the run made"
    assert run.ledger.entries() == []


# --- the scenario suite through stand-ins (tests/standins.py) -------------------------------------------------


CLOUD_CELLS = {
    "test_kernel_release",
    "test_kernel_command_line",
    "test_repositories_mounted_read_only",
    "test_os_repository_is_the_root_source",
    "test_probe",
    "test_content_readable",
    "test_scratch_disk_mounted",
    "test_bootloader_version_file",
    "test_hostname",
    "test_user_data_recorded",
    "test_ucernvm_block_delivered",
}
"""Scenarios a cloud's suite through stand-ins runs for real."""
SHARED_FOLDER_CELLS = {"test_shared_folders_mounted", "test_host_to_guest", "test_guest_to_host"}
CHECKLIST_CELLS = {
    "test_no_error_messages_at_boot",
    "test_clock_matches_the_host",
    "test_time_daemon_running",
    "test_dev_shm_is_a_writable_tmpfs",
    "test_password_authentication_as_the_profile_says",
    "test_root_cannot_log_in_with_a_password",
    "test_power_button_powers_off",
    "test_profile_workloads_succeed",
    "test_reboot_after_contextualization_keeps_scratch_and_context",
    "test_a_boot_without_network_completes_and_the_network_comes_back",
    "test_context_users_exist_with_their_group",
    "test_context_users_log_in_as_the_profile_says",
    "test_small_scratch_disk",
    "test_large_scratch_disk",
    "test_upgrade_from_the_previous_release_keeps_the_scratch_disk",
    "test_password_protected_context",
}
"""The release checklist's scenarios: a stand-in's profile declares none of their keys (skipped: "sets no ..."),
and no cloud provider presses a power button yet (skipped with its no_power_button)."""


def assert_through_standins(suite: SuiteReport, work: Path, instances: int, source: bool = False) -> None:
    """A cloud's suite through stand-ins ran CLOUD_CELLS, skipped what only the real cloud shows (naming the
    stand-in) and the shared folders no cloud has, and booted one stand-in per instance. With ``source``, the
    stand-in got its context the cloud's way, so the user data's source was checked, not skipped."""
    skipped = dict(suite.skipped)
    assert set(suite.cases) - set(skipped) >= CLOUD_CELLS, skipped
    assert "stand-in" in skipped.pop("test_network_driver")
    if source:
        assert "test_user_data_source" in suite.cases and "test_user_data_source" not in skipped
    else:
        assert "stand-in" in skipped.pop("test_user_data_source")
    checklist = {name: skipped.pop(name) for name in CHECKLIST_CELLS if name in skipped}
    assert set(checklist) == CHECKLIST_CELLS, checklist
    assert all(
        "sets no" in why or "not implemented" in why or "no network cable" in why for why in checklist.values()
    ), checklist
    assert set(skipped) == SHARED_FOLDER_CELLS, skipped
    assert all("no shared folders" in why for why in skipped.values()), skipped
    standins = (work / "standins.log").read_text().splitlines()
    assert len(standins) == instances, f"one stand-in per instance: {standins}"


def suite_through_standins(
    tmp_path: Path,
    cloud: Any,
    image: str,
    env: Mapping[str, str] = {},
    timeout: float = 1500,
    source: bool = False,
    **options: Any,
) -> SuiteReport:
    """The scenario suite in a child process against the cloud's fake, through one stand-in per instance (the
    plugin tests/standins.py), from a config file with the cloud's stand-in profile and ``options`` (the child's
    environment: ``env`` on top of the usual). It ran what stand-ins can show (``assert_through_standins``: two
    instances, the suite's and its separate context one), and left no stand-in, ledger entry or run directory."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    provider = CLOUDS[type(cloud)].platform(cloud, image)["provider"]
    profile = ROOT / "tests" / "integration" / f"{provider}_standin.toml"
    config_file(work / "cernvm.toml", cloud, image, profile=str(profile), **options)
    state = tmp_path / "state"
    environment = {**subprocess_env(state), **env}
    suite = run_suite(work, tmp_path / "report.xml", environment, timeout, args=("-p", "tests.standins"))
    assert_through_standins(suite, work, instances=2, source=source)
    assert domains_under(tmp_path) == [], "stand-in domains left behind"
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    return suite
