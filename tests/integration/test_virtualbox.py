"""The virtualbox provider against the real VBoxManage 7.2, with QEMU standing in for the hypervisor.

This host has no VirtualBox kernel driver, so ``startvm`` cannot run. Every other
step runs for real: VirtualBox 7.2 from Debian unstable, in a chroot that
``./dev setup`` builds, writes the ``.vbox`` file these tests read back. The
stand-in VBoxManage (tests/fakes/virtualbox/vboxmanage.py) passes every command to
it except ``startvm``/``controlvm poweroff``/``showvminfo``'s state, where QEMU
boots the media the ``.vbox`` file names. A real boot runs where /dev/vboxdrv exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from cernvm_fixtures.errors import ScreenUnavailable
from cernvm_fixtures.providers import virtualbox as vb
from cernvm_fixtures.run import Run

from ..fakes.virtualbox import CHROOT, PROFILE, REAL, STANDIN, media, qemus_under, target, vms
from ..fakes.virtualbox import vboxmanage as standin_vboxmanage
from ..helpers import ROOT, cli, create_only, ledger_entries, outcomes, run_scenarios, skip_reasons

NS = {"vb": "http://www.virtualbox.org/"}


@pytest.fixture(scope="module", autouse=True)
def real_vboxmanage():
    """The real VBoxManage must be there: ./dev setup builds it; a missing one is a set-up failure, not a skip."""
    assert (CHROOT / vb.DEBIAN_VBOXMANAGE.lstrip("/")).is_file(), f"no VBoxManage in {CHROOT}: run ./dev setup"
    assert vb.version(tuple(REAL)).startswith("7."), vb.version(tuple(REAL))


def assert_nothing_left(directory: Path, names: list[str]) -> None:
    assert not set(names) & set(vms()), "VMs still registered"
    assert str(directory) not in media(), "media still registered"
    assert qemus_under(directory) == [], "stand-in QEMU still running"


def test_the_real_vboxmanage_writes_the_documented_machine(tmp_path):
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target(), run)
    try:
        info = vb.VBoxManage(REAL).info(machine.name)
        assert info["VMState"] == "poweroff", "the real VirtualBox did not start it: the stand-in did"
        vbox = ElementTree.parse(info["CfgFile"]).getroot().find("vb:Machine", NS)
        assert vbox.get("OSType") == "Linux26_64"
        hw = vbox.find("vb:Hardware", NS)
        assert hw.find("vb:Memory", NS).get("RAMSize") == "2048"
        assert hw.find("vb:Display", NS).get("controller") == "VBoxSVGA"
        assert hw.find("vb:Clipboard", NS).get("mode") == hw.find("vb:DragAndDrop", NS).get("mode") == "Bidirectional"
        adapter = hw.find("vb:Network/vb:Adapter[@slot='0']", NS)
        assert adapter.get("type") == "virtio" and adapter.find("vb:NAT", NS) is not None
        rule = adapter.find("vb:NAT/vb:Forwarding", NS)
        assert (rule.get("hostip"), rule.get("hostport"), rule.get("guestport")) == (
            "127.0.0.1",
            str(machine.ssh_port),
            "22",
        )
        port = hw.find("vb:UART/vb:Port[@slot='0']", NS)
        assert port.get("hostMode") == "RawFile" and port.get("path") == str(machine.console_file)
        folder = hw.find("vb:SharedFolders/vb:SharedFolder", NS)
        assert folder.get("name") == "data" and folder.get("autoMount") == "false"
        images = {i.get("uuid"): i.get("location") for i in vbox.iterfind("vb:MediaRegistry//*[@location]", NS)}
        layout = {
            (c.get("name"), d.get("port"), d.get("device")): (
                d.get("type"),
                Path(images[d.find("vb:Image", NS).get("uuid")]).name,
            )
            for c in hw.iterfind("vb:StorageControllers/vb:StorageController", NS)
            for d in c.iterfind("vb:AttachedDevice", NS)
        }
        assert layout == {
            ("IDE", "0", "0"): ("DVD", layout[("IDE", "0", "0")][1]),
            ("SATA", "0", "0"): ("HardDisk", "scratch.vdi"),
            ("SATA", "1", "0"): ("DVD", "context.iso"),
        }, "CernVM Launch's layout: boot ISO on IDE 0:0, scratch on SATA 0, context ISO on SATA 1"
        assert layout[("IDE", "0", "0")][1].endswith(".iso")
        extradata = {e.get("name"): e.get("value") for e in vbox.iterfind("vb:ExtraData/vb:ExtraDataItem", NS)}
        assert extradata[vb.EXTRA + "run"] == run.id and extradata[vb.EXTRA + "name"] == machine.name
        assert vb.VBoxManage(STANDIN).info(machine.name)["VMState"] == "running"
        assert len(qemus_under(run.directory)) == 1
    finally:
        machine.destroy()
    assert_nothing_left(run.directory, [machine.name])
    assert ledger_entries(tmp_path / "state") == []
    assert not machine.directory.exists()


def test_every_resource_is_recorded_before_vboxmanage_creates_it(tmp_path, monkeypatch):
    run = Run(state=tmp_path / "state")
    seen = []
    original = vb.VBoxManage.__call__

    def intercept(self, *args, **kwargs):
        if args[0] in ("createmedium", "createvm"):
            kinds = {r.kind for r in run.ledger.entries()}
            seen.append((args[0], kinds))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(vb.VBoxManage, "__call__", intercept)
    machine, _ = create_only(target(), run)
    machine.destroy()
    assert seen == [("createmedium", {"directory", "disk"}), ("createvm", {"directory", "disk", "vm"})]
    assert_nothing_left(run.directory, [machine.name])


def test_the_standin_finds_media_recorded_in_another_registry(tmp_path):
    """VirtualBox records a medium in one registry (the first machine it was attached to, or the global one): a
    machine sharing the boot ISO may have no record of it in its own file, and the stand-in must still boot it.
    Its own file's records are dropped here to stand for that (it happened under load in CI)."""
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target(), run)
    try:
        config = vb.VBoxManage(REAL).info(machine.name)["CfgFile"]
        registry = ElementTree.parse(config).getroot().iterfind(".//vb:MediaRegistry//*[@location]", NS)
        own = {i.get("uuid"): i.get("location") for i in registry}
        assert len(own) == 3, own
        for uuid, path in own.items():
            assert standin_vboxmanage.location({}, uuid) == path
        with pytest.raises(SystemExit, match="is in no media registry"):
            standin_vboxmanage.location({}, "{00000000-1111-2222-3333-444444444444}")
        # the appliance's CernVM-FS server is forwarded for a boot ISO registered elsewhere too (in CI, without
        # it, the guest stopped at "Unable to mount cvmfs root filesystem!")
        tree = ElementTree.parse(config)
        for registry in tree.getroot().iterfind(".//vb:MediaRegistry", NS):
            registry.clear()
        elsewhere = tmp_path / "elsewhere.vbox"
        tree.write(elsewhere)
        argv = standin_vboxmanage.qemu_argv(str(elsewhere))
        netdev = argv[argv.index("-netdev") + 1]
        assert "guestfwd=tcp:10.0.2.100:80-cmd:" in netdev, netdev
    finally:
        machine.destroy()
    assert_nothing_left(run.directory, [machine.name])


KILLED = """
import os, signal, sys
from cernvm_fixtures import config
from cernvm_fixtures.run import Run
from tests.fakes.virtualbox import target
from tests.helpers import create_only
run = Run()
machine, _ = create_only(target(), run)
print(machine.name, run.directory, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_then_sweep_from_extradata_alone(tmp_path):
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-c", KILLED],
        cwd=ROOT,
        env=dict(os.environ, CERNVM_FIXTURES_STATE=str(state)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    name, directory = done.stdout.split()
    assert name in vms() and qemus_under(Path(directory))
    for entry in state.glob("runs/*/ledger/*.json"):
        entry.unlink()  # the ledger is lost too: only the VM's extradata says it is ours
    (tmp_path / "cernvm.toml").write_text(
        textwrap.dedent(f"""
        [targets.vbox]
        provider = "virtualbox"
        profile = "{PROFILE}"
        vboxmanage = {STANDIN!r}
    """).replace("'", '"')
    )
    swept = cli(state, "sweep", cwd=tmp_path, timeout=300)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert name in swept.stdout + swept.stderr
    assert_nothing_left(Path(directory), [name])
    assert not Path(directory, "machines", name).exists()


def test_bad_launch_config_is_one_clear_error_and_creates_nothing(tmp_path):
    bad = tmp_path / "launch.conf"
    bad.write_text("cpus=2\nmemory=2048\nflags=113\n")
    before = vms()
    result = run_scenarios(
        tmp_path,
        config=f"""
        [targets.vbox]
        provider = "virtualbox"
        profile = "{PROFILE}"
        launch_config = "{bad}"
    """,
    )
    assert result.returncode != 0
    assert "targets.vbox.launch_config" in result.output and "host_only_adapter" in result.output
    assert "Traceback" not in result.output
    assert vms() == before


def test_scenario_suite_through_the_standin(tmp_path):
    result = run_scenarios(
        tmp_path,
        config=f"""
        [targets.virtualbox]
        provider = "virtualbox"
        profile = "{PROFILE}"
        vboxmanage = {STANDIN!r}
        slowdown = 4
        shared_folders = {{ data = "" }}
    """.replace("'", '"'),
    )
    found = outcomes(result.output)
    assert result.returncode == 0, result.output[-6000:]
    assert {name.split("[")[0] for name, status in found.items() if status == "PASSED"} >= {
        "test_kernel_release",
        "test_repositories_mounted_read_only",
        "test_scratch_disk_mounted",
        "test_shared_folders_mounted",
        "test_host_to_guest",
        "test_guest_to_host",
        "test_network_driver",
        "test_user_data_recorded",
        "test_hostname",
        "test_power_button_powers_off",  # acpipowerbutton (QEMU's system_powerdown in the stand-in)
        "test_a_boot_without_network_completes_and_the_network_comes_back",  # setlinkstate1 (QEMU's set_link)
    }, result.output[-4000:]
    assert not any(status != "PASSED" for status in found.values()), found
    assert_nothing_left(tmp_path, [])
    assert ledger_entries(tmp_path / "state") == []


@pytest.mark.skipif(not Path("/dev/vboxdrv").exists(), reason="no VirtualBox kernel driver (/dev/vboxdrv) on this host")
def test_scenario_suite_on_real_virtualbox(tmp_path):
    """The appliance under the real hypervisor (no shared folders: the appliance mounts 9p, not vboxsf)."""
    result = run_scenarios(
        tmp_path,
        config="""
        [targets.virtualbox]
        provider = "virtualbox"
    """,
    )
    assert result.returncode == 0, result.output[-6000:]
    assert all("shared_folders" in reason for reason in skip_reasons(result.output)), skip_reasons(result.output)


def test_screenshot_of_the_running_vm_through_controlvm_screenshotpng(tmp_path):
    """``controlvm screenshotpng`` of the VM the real VBoxManage defined, from the live machine and from its ledger
    entry alone (``cernvm-fixtures screen``): the stand-in QEMU's real screen, VGA text mode, not blank once the
    kernel writes to it (the ISO's serial port stays silent)."""
    from PIL import Image

    def colours(path: Path) -> int:
        """Colours of a PNG in 80x25 VGA text mode (9x16 font); 0 until the guest is there (the BIOS and the boot
        loader may show another mode first, e.g. 640x480)."""
        with Image.open(path) as image:
            assert image.format == "PNG"
            if image.size != (720, 400):
                return 0
            return len(image.convert("RGB").getcolors(1 << 16) or ())

    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target(), run)
    try:
        deadline = time.monotonic() + 300
        while colours(machine.screenshot(tmp_path / "live.png")) < 2:
            assert time.monotonic() < deadline, "the screen stayed blank"
            time.sleep(2)
        (vm,) = [r for r in machine.resources if r.kind == "vm"]
        again = vb.VirtualBoxProvider.screenshot_resource(vm, tmp_path / "from-ledger.png")
        assert colours(again) > 1, "blank: one colour"
    finally:
        machine.destroy()
    assert_nothing_left(run.directory, [machine.name])
    with pytest.raises(ScreenUnavailable, match="VirtualBox took no screenshot"):
        machine.screenshot(tmp_path / "gone.png")


def test_a_boot_that_stops_is_reported_with_its_screen_and_the_text_on_it(tmp_path):
    """The appliance's ISO prints nothing on serial; a boot that stops (its CernVM-FS server refuses: µCernVM's
    "Unable to mount cvmfs root filesystem!") is reported with a non-blank screenshot and the screen's text, read
    from outside through ``debugvm info vgatext`` (the guest never answers SSH)."""
    from PIL import Image

    from cernvm_fixtures.context import UserData
    from cernvm_fixtures.errors import ReadinessError
    from cernvm_fixtures.instance import launch

    run = Run(state=tmp_path / "state")
    refused = UserData(ucernvm={"cvmfs_server": "127.0.0.1:9"})  # the guest's own loopback: refused at once
    try:
        with pytest.raises(ReadinessError) as err:
            launch(target(deadlines={"reachable": 20}), run, user_data=refused)
    finally:
        run.finish()
    capture = err.value.screen
    assert capture is not None and capture.path is not None, str(err.value)
    with Image.open(capture.path) as image:
        assert (image.format, image.size) == ("PNG", (720, 400))
        assert len(image.convert("RGB").getcolors(1 << 16) or ()) > 1, "blank: one colour"
    assert capture.text and "Unable to mount cvmfs root filesystem!" in capture.text, capture.text
    assert f"screenshot: {capture.path}" in str(err.value)
    assert not [name for name in vms() if run.id in name], "the VM was destroyed"
