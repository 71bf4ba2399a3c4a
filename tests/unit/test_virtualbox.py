"""The virtualbox provider's VBoxManage steps, for both version families, without VirtualBox."""

from dataclasses import replace
from pathlib import Path

import pytest

from cernvm_fixtures.errors import ConfigError, ProviderError
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import virtualbox as vb
from cernvm_fixtures.providers.kit import decode_fields, encode_fields

SIX, SEVEN = vb.SPELLING[6], vb.SPELLING[7]


def opts(**kw) -> vb.VirtualBoxOptions:
    return vb.VirtualBoxOptions(**kw)


@pytest.mark.parametrize(
    ("text", "family"),
    [("6.1.50r161033", 6), ("7.0.20r163906", 7), ("7.2.22_Debianr175245", 7), ("8.0.0", 7)],
)
def test_version_family(text, family):
    assert vb.family(text) == family


@pytest.mark.parametrize("text", ["6.0.24r139119", "5.2.44", "WARNING: The vboxdrv kernel module is not loaded"])
def test_unsupported_or_unreadable_version(text):
    with pytest.raises(ProviderError, match="too old|cannot read"):
        vb.family(text)


def pairs(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


@pytest.mark.parametrize(
    ("spell", "names"),
    [
        (
            SIX,
            ["--natpf1", "--nictype1", "--uartmode1", "--clipboard", "--draganddrop", "--cpuexecutioncap", "--audio"],
        ),
        (
            SEVEN,
            [
                "--nat-pf1",
                "--nic-type1",
                "--uart-mode1",
                "--clipboard-mode",
                "--drag-and-drop",
                "--cpu-execution-cap",
                "--audio-enabled",
            ],
        ),
    ],
)
def test_modifyvm_spells_the_documented_machine_per_version(spell, names):
    argv = vb.modifyvm("m", opts(), ssh_port=40222, console=Path("/r/console.log"), spell=spell)
    got = pairs(argv)
    assert all(name in got for name in names), set(names) - set(got)
    other = SEVEN if spell is SIX else SIX
    assert not any(n in argv for n in other.values() if n.startswith("--") and n not in spell.values())
    assert got["--memory"] == "2048" and got["--cpus"] == "1"
    assert got["--graphicscontroller"] == "vboxsvga"
    assert got["--nic1"] == "nat"
    nat = got[names[0]]
    assert nat == "guestssh,tcp,127.0.0.1,40222,,22", "SSH must be forwarded from 127.0.0.1 only"
    assert got[names[1]] == "virtio"
    assert argv[argv.index(names[2]) + 1 : argv.index(names[2]) + 3] == ["file", "/r/console.log"]
    assert got[names[3]] == got[names[4]] == "bidirectional"
    assert "--nic2" not in got, "no host-only adapter unless the target names an existing one"


def test_host_only_adapter_only_when_named():
    argv = vb.modifyvm("m", opts(host_only_adapter="vboxnet0"), ssh_port=1, console=Path("/c"), spell=SEVEN)
    got = pairs(argv)
    assert got["--nic2"] == "hostonly" and got["--host-only-adapter2"] == "vboxnet0"
    assert got["--nic-type2"] == "virtio"


def test_no_graphical_extensions_when_off():
    argv = vb.modifyvm("m", opts(graphical=False), ssh_port=1, console=Path("/c"), spell=SIX)
    assert "--clipboard" not in argv and "--draganddrop" not in argv


def test_storage_follows_cernvm_launch():
    assert vb.storageattach("m", vb.IDE, 0, 0, "dvddrive", Path("/i.iso"))[2:] == [
        "--storagectl",
        "IDE",
        "--port",
        "0",
        "--device",
        "0",
        "--type",
        "dvddrive",
        "--medium",
        "/i.iso",
    ]
    assert vb.createmedium(Path("/d.vdi"), 20) == [
        "createmedium",
        "disk",
        "--filename",
        "/d.vdi",
        "--size",
        "20480",
        "--format",
        "VDI",
        "--variant",
        "Standard",
    ]
    assert vb.createvm("m", "Linux26_64", Path("/b")) == [
        "createvm",
        "--name",
        "m",
        "--ostype",
        "Linux26_64",
        "--basefolder",
        "/b",
        "--register",
    ]
    assert vb.storagectl("m", vb.SATA)[-4:] == ["--controller", "IntelAhci", "--portcount", "2"]


def test_shared_folders_are_not_auto_mounted():
    argv = vb.sharedfolder("m", "data", Path("/h/data"))
    assert argv == ["sharedfolder", "add", "m", "--name", "data", "--hostpath", "/h/data"]
    assert "--automount" not in argv


def test_startvm_headless_or_gui():
    assert vb.startvm("m", True)[-2:] == ["--type", "headless"]
    assert vb.startvm("m", False)[-2:] == ["--type", "gui"]


def fake_vboxmanage(tmp_path, body: str) -> vb.VBoxManage:
    """A VBoxManage of version 7.0.20 that runs ``body`` (sh) for every other command."""
    script = tmp_path / "VBoxManage"
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo 7.0.20; exit 0; fi\n{body}\n')
    script.chmod(0o755)
    return vb.VBoxManage([str(script)])


def extradata_of(tmp_path, fields: dict[str, str]) -> dict[str, str]:
    """``fields`` stored as a VM's extradata, read back as ``getextradata <vm> enumerate`` prints them."""
    listing = tmp_path / "listing"
    listing.write_text("".join(f"Key: {key}, Value: {value}\n" for key, value in sorted(fields.items())))
    vbox = fake_vboxmanage(tmp_path, f'[ "$*" = "getextradata m enumerate" ] && cat {listing}')
    return vbox.extradata("m")


def test_ledger_entry_round_trips_through_extradata(tmp_path):
    resource = Resource(
        "virtualbox",
        "vm",
        "cvmfx-r-vb-1",
        "r",
        target="vb",
        data={"directory": "/s/runs/r/machines/cvmfx-r-vb-1", "vboxmanage": ["/usr/bin/VBoxManage"]},
        owner=Owner("host", 42, "777"),
        created=1_700_000_000.25,
        expires=1_700_086_400.5,
        kept=True,
    )
    fields = encode_fields(resource)
    assert all(key.startswith(vb.EXTRA) for key in fields), "sweep recognises our keys"
    assert vb.setextradata("m", "cvmfx-run", "r") == ["setextradata", "m", "cvmfx-run", "r"]
    back = decode_fields(extradata_of(tmp_path, {**fields, "GUI/LastCloseAction": "PowerOff"}))
    assert back == replace(resource, data={}), "the directory and the command are not trusted from extradata"


def test_extradata_that_is_not_ours_is_ignored(tmp_path):
    fields = encode_fields(Resource("virtualbox", "vm", "n", "r"))
    del fields["cvmfx-owner-pid"]
    assert decode_fields(extradata_of(tmp_path, fields)) is None
    assert decode_fields(extradata_of(tmp_path, {"GUI/LastCloseAction": "PowerOff"})) is None


def test_machinereadable_parsing():
    text = 'name="m"\nVMState="poweroff"\n"IDE-0-0"="/i.iso"\nForwarding(0)="guestssh,tcp,127.0.0.1,2,,22"\n'
    assert vb.parse_machinereadable(text) == {
        "name": "m",
        "VMState": "poweroff",
        "IDE-0-0": "/i.iso",
        "Forwarding(0)": "guestssh,tcp,127.0.0.1,2,,22",
    }


def test_errors_tell_syntax_from_runtime_and_not_found():
    syntax = vb.VBoxError(["modifyvm", "m"], 2, "VBoxManage: error: Unknown option: --nat-pf1\nUsage: ...")
    assert "syntax error" in str(syntax) and "Unknown option" in str(syntax)
    gone = vb.VBoxError(
        ["showvminfo", "m"],
        1,
        "VBoxManage: error: Could not find a registered machine named 'm'\n"
        "VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)",
    )
    assert gone.not_found and "failed (rc 1)" in str(gone)
    assert not vb.VBoxError(
        ["startvm", "m"], 1, "VBoxManage: error: VT-x is being used by another hypervisor"
    ).not_found


def write(tmp_path, text):
    path = tmp_path / "launch.conf"
    path.write_text(text)
    return str(path)


def test_cernvm_launch_config_maps_to_options(tmp_path):
    path = write(
        tmp_path,
        "# a CernVM Launch machine\nname=myvm\napiPort=22\ncpus=2\nmemory=4096\ndisk=20000\n"
        "executionCap=80\nflags=49\ncernvmVersion=latest\n",
    )
    options = vb.LaunchConfig.read(path, "t").apply(opts())
    assert (options.cpus, options.memory, options.execution_cap, options.disk_size) == (2, 4096, 80, 20)
    assert options.headless is False, "flag 16 (headful) is set in 49"
    assert options.graphical is True


def test_cernvm_launch_headless_without_flag_16(tmp_path):
    options = vb.LaunchConfig.read(write(tmp_path, "flags=33\n"), "t").apply(opts())
    assert options.headless is True and options.graphical is True


def test_cernvm_launch_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"launch.conf:2: 'colour=red' is not a CernVM Launch setting; valid keys"):
        vb.LaunchConfig.read(write(tmp_path, "cpus=1\ncolour=red\n"), "t")
    with pytest.raises(ConfigError, match=r"memory='lots' is not a whole number"):
        vb.LaunchConfig.read(write(tmp_path, "memory=lots\n"), "t").apply(opts())
    with pytest.raises(ConfigError, match=r"host-only second adapter \(64\).*host_only_adapter"):
        vb.LaunchConfig.read(write(tmp_path, "flags=113\n"), "t").apply(opts())
    with pytest.raises(ConfigError, match="memory"):
        vb.LaunchConfig.read(write(tmp_path, "memory=512\n"), "t").apply(opts())
    with pytest.raises(ConfigError, match=r"t: cannot read CernVM Launch config"):
        vb.LaunchConfig.read(str(tmp_path / "missing.conf"), "t")


def test_config_rejects_a_vboxmanage_that_does_not_exist():
    from cernvm_fixtures import config

    with pytest.raises(ConfigError, match=r"targets\.vb\.vboxmanage.*not an executable"):
        config.parse({"targets": {"vb": {"provider": "virtualbox", "vboxmanage": ["/nonexistent/VBoxManage"]}}}, "f")


def test_vboxmanage_runs_again_when_vboxsvc_was_not_reachable(tmp_path, monkeypatch):
    """The per-user VBoxSVC may be shutting down when VBoxManage connects: that error is retried, others are not."""
    monkeypatch.setattr(vb.time, "sleep", lambda seconds: None)
    counter = tmp_path / "calls"
    script = tmp_path / "VBoxManage"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo 7.0.20; exit 0; fi\n'
        f"echo x >> {counter}\n"
        f'if [ "$1" = list ] && [ $(wc -l < {counter}) -lt 3 ]; then\n'
        "  echo 'VBoxManage: error: Failed to create the VirtualBox object!' >&2\n"
        "  echo 'VBoxManage: error: Most likely, the VirtualBox COM server is not running or failed to start.' >&2\n"
        "  exit 1\n"
        "fi\n"
        'if [ "$1" = startvm ]; then\n'
        '  echo "VBoxManage: error: VT-x is being used by another hypervisor" >&2; exit 1\n'
        "fi\n"
        "echo ok\n"
    )
    script.chmod(0o755)
    vbox = vb.VBoxManage([str(script)])
    assert vbox("list", "vms") == "ok\n"
    assert len(counter.read_text().splitlines()) == 3
    with pytest.raises(vb.VBoxError, match="VT-x"):
        vbox("startvm", "m")
    assert len(counter.read_text().splitlines()) == 4


def test_vboxmanage_gives_up_when_vboxsvc_stays_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(vb.time, "sleep", lambda seconds: None)
    script = tmp_path / "VBoxManage"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo 6.1.50; exit 0; fi\n'
        "echo 'VBoxManage: error: Failed to create the VirtualBox object!' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    with pytest.raises(vb.VBoxError, match="Failed to create the VirtualBox object"):
        vb.VBoxManage([str(script)])("list", "vms")


def test_leftovers_are_vms_with_our_entry_in_their_own_machine_directory(tmp_path):
    """Sweep without the ledger: a VM counts when its extradata decodes to a virtualbox entry of its own name and its
    settings file lies in runs/<run>/machines/<name> (the directory comes from there, never from extradata)."""
    from cernvm_fixtures import config

    state = tmp_path / "state"
    vms = {
        "cvmfx-r1-vb-1": ("r1", "cvmfx-r1-vb-1", state / "runs/r1/machines/cvmfx-r1-vb-1"),
        "cvmfx-r1-vb-2": ("r1", "cvmfx-r1-vb-2", tmp_path / "elsewhere"),  # not in a machine directory
        "cvmfx-r2-vb-3": ("r2", "cvmfx-r2-vb-9", state / "runs/r2/machines/cvmfx-r2-vb-3"),  # another name
        "cvmfx-r3-vb-4": ("r3", "cvmfx-r3-vb-4", state / "runs/r3/machines/cvmfx-r3-vb-4"),  # recorded
    }
    listing = tmp_path / "vms"
    listing.write_text(
        "".join(f'"{name}" {{0000000{i}-0000-0000-0000-000000000000}}\n' for i, name in enumerate(vms))
        + '"someone-else" {00000009-0000-0000-0000-000000000000}\n'
    )
    for name, (run, entry_name, directory) in vms.items():
        fields = encode_fields(Resource("virtualbox", "vm", entry_name, run, target="vb"))
        (tmp_path / f"{name}.extradata").write_text("".join(f"Key: {k}, Value: {v}\n" for k, v in fields.items()))
        (tmp_path / f"{name}.info").write_text(f'name="{name}"\nCfgFile="{directory}/{name}/{name}.vbox"\n')
    vbox = fake_vboxmanage(
        tmp_path,
        f'case "$1" in\n  list) cat {listing} ;;\n  getextradata) cat {tmp_path}/"$2".extradata ;;\n'
        f'  showvminfo) cat {tmp_path}/"$2".info ;;\nesac',
    )
    target = config.parse({"targets": {"vb": {"provider": "virtualbox", "vboxmanage": vbox.command}}}, "f").targets[
        "vb"
    ]
    found = vb.VirtualBoxProvider.leftovers(target, {"cvmfx-r3-vb-4"})
    directory = str(state / "runs/r1/machines/cvmfx-r1-vb-1")
    assert [(r.kind, r.name, r.run, r.data) for r in found] == [
        ("vm", "cvmfx-r1-vb-1", "r1", {"directory": directory, "vboxmanage": vbox.command}),
        ("directory", "cvmfx-r1-vb-1", "r1", {"path": directory}),
    ]


def test_doctor_checks_vboxmanage_the_driver_and_kvm(tmp_path, monkeypatch):
    """Issue 26.10: the doctor (and the pre-session check) speaks for virtualbox: no VBoxManage is a problem; no
    kernel driver is a problem with VirtualBox's own command, a warning with a command of the target's own."""
    import importlib

    from cernvm_fixtures.providers import virtualbox as vbox

    vbm = importlib.import_module("cernvm_fixtures.providers.virtualbox.vboxmanage")

    missing = vbox.host_checks([str(tmp_path / "no-VBoxManage")])
    assert [(c.what, c.severity) for c in missing] == [("VBoxManage", "problem")]
    fake = tmp_path / "VBoxManage"
    fake.write_text("#!/bin/sh\necho 7.1.4r165100\n")
    fake.chmod(0o755)
    monkeypatch.setattr(vbox, "DRIVER", tmp_path / "no-vboxdrv")
    own = {c.what: c for c in vbox.host_checks([str(fake)])}
    assert own["VBoxManage"].severity == "ok" and own["kernel driver"].severity == "warning"
    monkeypatch.setattr(vbm, "default_command", lambda: [str(fake)])
    default = {c.what: c for c in vbox.host_checks(None)}
    assert default["kernel driver"].severity == "problem" and "modprobe vboxdrv" in default["kernel driver"].fix


def test_power_button_and_cable_argv():
    import importlib

    vbm = importlib.import_module("cernvm_fixtures.providers.virtualbox.vboxmanage")
    assert vbm.acpipowerbutton("vm") == ["controlvm", "vm", "acpipowerbutton"]
    assert vbm.setlinkstate("vm", 1, False) == ["controlvm", "vm", "setlinkstate1", "off"]
    assert vbm.setlinkstate("vm", 2, True) == ["controlvm", "vm", "setlinkstate2", "on"]
