"""The libvirt domain XML follows the documented CernVM layout and the loopback-only network rule."""

from pathlib import Path
from xml.etree import ElementTree

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.providers.kvm import NS, KvmOptions, domain_xml, probe_xml

QEMU = "{http://libvirt.org/schemas/domain/qemu/1.0}"


def render(**overrides):
    options = KvmOptions(**overrides.pop("options", {}))
    args = dict(
        name="cvmfx-r-kvm-1",
        domain_type="qemu",
        options=options,
        uri="qemu:///session",
        iso=Path("/img/ucernvm.iso"),
        kernel=None,
        disk=Path("/run/vm/scratch.img"),
        seed=Path("/run/vm/seed.iso"),
        console=Path("/run/vm/console.log"),
        shared={"data": Path("/run/vm/shared/data")},
        ssh_port=40022,
        metadata={"cvmfx-name": "cvmfx-r-kvm-1", "cvmfx-run": "r"},
    )
    args.update(overrides)
    return ElementTree.fromstring(domain_xml(**args))


def test_documented_layout():
    dom = render()
    assert dom.get("type") == "qemu"
    assert dom.find("os/type").get("arch") == "x86_64" and dom.find("os/type").text == "hvm"
    assert dom.find("os/boot").get("dev") == "cdrom"
    assert {f.tag for f in dom.find("features")} == {"acpi", "apic", "pae"}
    assert dom.find("memory").text == "2048" and dom.find("memory").get("unit") == "MiB"
    disks = dom.findall("devices/disk")
    iso, scratch, seed = disks
    assert (iso.get("device"), iso.find("target").get("dev"), iso.find("target").get("bus")) == ("cdrom", "hdc", "ide")
    assert iso.find("readonly") is not None and iso.find("source").get("file") == "/img/ucernvm.iso"
    assert (scratch.get("device"), scratch.find("target").get("bus")) == ("disk", "virtio")
    assert (seed.get("device"), seed.find("target").get("dev")) == ("cdrom", "hdd")
    assert dom.find("devices/serial/source").get("path") == "/run/vm/console.log"
    assert dom.find("devices/graphics") is None, "no VNC unless asked for (it has no password)"
    graphics = render(options={"graphics": True}).find("devices/graphics")
    assert (graphics.get("type"), graphics.get("listen")) == ("vnc", "127.0.0.1")


def test_machine_type_is_always_named():
    """A host's default machine type decides nothing: RHEL 9's QEMU defaults to q35, which has no IDE."""
    assert render().find("os/type").get("machine") == "pc", "the default is the guide's i440fx layout"
    assert render(options={"machine": "q35"}).find("os/type").get("machine") == "q35"
    kernel = (Path("/a/vmlinuz"), Path("/a/initrd"), "console=ttyS0")
    assert render(iso=None, kernel=kernel, options={"machine": "q35"}).find("os/type").get("machine") == "q35"


# machine type -> (bus, target) of the ISO's and of the seed's CD drive, and the NIC's -device placement
LAYOUTS = {
    "pc": (("ide", "hdc"), ("ide", "hdd"), "bus=pci.0,addr=0x1e"),
    "q35": (("sata", "sda"), ("sata", "sdb"), "bus=pcie.0,addr=0x9"),
}


@pytest.mark.parametrize("machine", LAYOUTS)
def test_cd_drives_on_a_bus_the_machine_type_has(machine):
    iso_drive, seed_drive, _ = LAYOUTS[machine]
    dom = render(options={"machine": machine})
    drives = [(d.get("device"), d.find("target").get("bus"), d.find("target").get("dev")) for d in dom.iter("disk")]
    assert drives == [("cdrom", *iso_drive), ("disk", "virtio", "vda"), ("cdrom", *seed_drive)]
    assert dom.find("os/boot").get("dev") == "cdrom"
    if machine == "q35":
        assert all(target.get("bus") != "ide" for target in dom.iter("target")), "q35 has no IDE controller"
    kernel = (Path("/a/vmlinuz"), Path("/a/initrd"), "console=ttyS0")
    seed_only = render(iso=None, kernel=kernel, options={"machine": machine})
    assert [(d.find("target").get("bus"), d.find("target").get("dev")) for d in seed_only.iter("disk")] == [
        ("virtio", "vda"),
        seed_drive,
    ]


@pytest.mark.parametrize("machine", LAYOUTS)
@pytest.mark.parametrize("nic_model", ["virtio", "e1000"])
def test_user_network_nic_on_the_root_bus_of_the_machine_type(machine, nic_model):
    """pci.0 does not exist on q35 (libvirt names its pcie-root-ports pci.1 and up): QEMU would not start."""
    dom = render(options={"machine": machine, "nic_model": nic_model})
    args = [a.get("value") for a in dom.find(f"{QEMU}commandline")]
    device = {"virtio": "virtio-net-pci", "e1000": "e1000"}[nic_model]
    assert args[args.index("-device") + 1] == f"{device},netdev=n0,{LAYOUTS[machine][2]}"
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in args[args.index("-netdev") + 1]


@pytest.mark.parametrize("machine", LAYOUTS)
def test_libvirt_places_the_other_devices_on_either_machine_type(machine):
    """9p shares and the NAT NIC carry no address: libvirt puts them on pcie-root-ports on q35 by itself."""
    dom = render(options={"machine": machine}, shared={"data": Path("/h/data"), "two": Path("/h/two")})
    assert [(f.get("accessmode"), f.find("target").get("dir")) for f in dom.iter("filesystem")] == [
        ("mapped", "data"),
        ("mapped", "two"),
    ]
    nat = render(options={"machine": machine, "network": "nat"}, ssh_port=None)
    assert nat.find("devices/interface/source").get("network") == "default"
    assert dom.find(".//address") is None and nat.find(".//address") is None


def test_machine_type_choice_is_checked_at_load(tmp_path):
    (tmp_path / "cernvm.toml").write_text("[targets.kvm]\nprovider = 'kvm'\nmachine = 'i440fx'\n")
    with pytest.raises(ConfigError) as error:
        config.load(None, tmp_path)
    message = str(error.value).replace(str(tmp_path / "cernvm.toml"), "FILE")
    assert "FILE: targets.kvm.machine: expected 'pc' or 'q35' (got 'i440fx')" in message


def test_user_network_forwards_ssh_from_loopback_only():
    dom = render()
    assert dom.find("devices/interface") is None
    args = [a.get("value") for a in dom.find(f"{QEMU}commandline")]
    netdev = args[args.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "restrict=on" in netdev, "the guest must not reach anything beyond the host"
    assert args[args.index("-device") + 1] == "virtio-net-pci,netdev=n0,bus=pci.0,addr=0x1e"


def test_nic_model_choice():
    args = [a.get("value") for a in render(options={"nic_model": "e1000"}).find(f"{QEMU}commandline")]
    assert args[args.index("-device") + 1].startswith("e1000,")


def test_nat_network_uses_libvirt_network_and_no_forward():
    dom = render(options={"network": "nat", "nat_network": "default"}, ssh_port=None)
    interface = dom.find("devices/interface")
    assert interface.get("type") == "network" and interface.find("source").get("network") == "default"
    assert interface.find("model").get("type") == "virtio"
    assert dom.find(f"{QEMU}commandline") is None


def test_direct_kernel_boot():
    dom = render(iso=None, kernel=(Path("/a/vmlinuz"), Path("/a/initrd"), "console=ttyS0 cvmfs_repos=x"))
    assert dom.find("os/kernel").text == "/a/vmlinuz" and dom.find("os/initrd").text == "/a/initrd"
    assert dom.find("os/cmdline").text == "console=ttyS0 cvmfs_repos=x"
    assert dom.find("os/boot") is None
    assert [d.get("device") for d in dom.findall("devices/disk")] == ["disk", "cdrom"]


def test_shared_folders_are_9p_mounts_that_cannot_create_host_setuid_files():
    fs = render(shared={"data": Path("/h/data"), "two": Path("/h/two")}).findall("devices/filesystem")
    assert [(f.get("accessmode"), f.find("source").get("dir"), f.find("target").get("dir")) for f in fs] == [
        ("mapped", "/h/data", "data"),
        ("mapped", "/h/two", "two"),
    ], "passthrough would let root in the guest create setuid-root files in the host folder"


def test_metadata_carries_the_ledger_entry_for_sweep():
    element = render().find(f"metadata/{{{NS}}}resource")
    assert dict(element.attrib) == {"cvmfx-name": "cvmfx-r-kvm-1", "cvmfx-run": "r"}


WEIRD = ["/img/a'b\".iso", "/img/<x>&.iso", "/tmp/R&D's dir/x"]


@pytest.mark.parametrize("path", WEIRD)
def test_paths_are_escaped(path):
    dom = render(
        iso=Path(path),
        disk=Path(path) / "scratch.img",
        console=Path(path) / "console.log",
        shared={"data": Path(path)},
        kernel=None,
    )
    assert dom.find("devices/disk/source").get("file") == path
    assert dom.find("devices/serial/source").get("path") == f"{path}/console.log"
    assert dom.find("devices/filesystem/source").get("dir") == path


@pytest.mark.parametrize("path", WEIRD)
def test_kernel_paths_are_escaped_in_the_domain_and_the_probe(path):
    dom = render(iso=None, kernel=(Path(path), Path(path + ".initrd"), "console=ttyS0 a=<&>"))
    assert dom.find("os/kernel").text == path and dom.find("os/initrd").text == path + ".initrd"
    assert dom.find("os/cmdline").text == "console=ttyS0 a=<&>"
    probe = ElementTree.fromstring(probe_xml(name="cvmfx-probe-1", kernel=Path(path), console=Path(path), uri="x"))
    assert probe.find("os/kernel").text == path and probe.find("devices/serial/source").get("path") == path


def netdev(dom) -> str:
    args = [a.get("value") for a in dom.iter(f"{QEMU}arg")]
    return args[args.index("-netdev") + 1]


def test_the_appliance_server_is_forwarded_and_the_guest_stays_isolated():
    """The appliance loads its OS from 10.0.2.100: a guestfwd to the server on 127.0.0.1 (a reconnecting
    character device: libvirt's QEMU sandbox forbids the cmd: form), with restrict=on."""
    value = netdev(render(stratum1=41234))
    assert "restrict=on" in value.split(",")
    assert "guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:41234,,reconnect=1" in value
    assert "guestfwd" not in netdev(render())
    assert "restrict=off" in netdev(render(restrict=False)).split(",")


@pytest.fixture
def iso(tmp_path) -> str:
    path = tmp_path / "ucernvm.iso"
    path.write_bytes(bytes(32769) + b"CD001" + bytes(2048))  # the ISO 9660 signature the config check reads
    return str(path)


def kvm_target(profile: str, **options):
    raw = {"kvm": {"provider": "kvm", "profile": profile, **options}}
    return config.parse({"targets": raw}, "cernvm.toml").targets["kvm"]


def test_an_image_that_boots_over_the_network_is_not_isolated(iso):
    from cernvm_fixtures.providers.kvm import KvmProvider

    real = kvm_target("cernvm4", image=iso)
    provider = KvmProvider(real, run=None)  # type: ignore[arg-type]
    assert provider.restricted(real.load_profile(), served=False) is False, "µCernVM needs its CernVM-FS servers"
    appliance = kvm_target("appliance")
    assert KvmProvider(appliance, run=None).restricted(appliance.load_profile(), served=True) is True  # type: ignore[arg-type]
    five = kvm_target("cernvm5", image=iso)
    assert KvmProvider(five, run=None).restricted(five.load_profile(), served=False) is True  # type: ignore[arg-type]
    pinned = kvm_target("cernvm4", image=iso, restrict=False)
    assert KvmProvider(pinned, run=None).restricted(pinned.load_profile(), served=True) is False  # type: ignore[arg-type]


def test_an_isolated_network_for_an_image_that_boots_over_it_is_refused_at_load(iso):
    target = kvm_target("cernvm4", image=iso, restrict=True)
    with pytest.raises(ConfigError) as err:
        target.load_profile()
    message = str(err.value)
    assert "targets.kvm.restrict" in message and "Unable to mount cvmfs root filesystem!" in message
    assert "restrict = false" in message
    with pytest.raises(ConfigError, match=r"targets\.kvm\.network: 'nat' cannot reach the test appliance"):
        kvm_target("appliance", network="nat").load_profile()
    kvm_target("appliance", restrict=True).load_profile()  # its server is forwarded: fine


@pytest.mark.parametrize("graphics", [False, True], ids=["default", "graphics"])
def test_a_vga_display_to_take_screenshots_of_and_no_listener_unless_asked(graphics):
    """Released CernVM images show boot errors only on tty0: the domain needs a display libvirt can screenshot."""
    devices = render(options={"graphics": graphics}).find("devices")
    tags = [d.tag for d in devices]
    assert [v.find("model").get("type") for v in devices.findall("video")] == ["vga"]
    assert tags.index("video") == tags.index("serial") + 1, "the video element follows the serial port"
    listeners = [(g.get("type"), g.get("listen")) for g in devices.findall("graphics")]
    assert listeners == ([("vnc", "127.0.0.1")] if graphics else []), "no VNC/SPICE listener unless graphics = true"


def test_vga_text_memory_rows_and_graphics_mode():
    from cernvm_fixtures.providers.kvm import vga_text

    def cells(text: str) -> bytes:
        return b"".join(bytes([ord(c), 0x07]) for c in text)

    screen = cells("boot".ljust(80) + " " * 80 + "Unable to mount cvmfs root filesystem!".ljust(80)) + bytes(320)
    assert vga_text(screen) == "boot\nUnable to mount cvmfs root filesystem!"
    assert vga_text(bytes(0x8000)) is None, "nothing written"
    assert vga_text(bytes(range(256)) * 128) is None, "pixels, not text"


def test_a_guest_forward_reaches_127_0_0_1_and_the_guest_stays_isolated():
    value = netdev(render(options={"guest_forwards": {"10.0.2.16:8016": 41235}}))
    assert "guestfwd=tcp:10.0.2.16:8016-tcp:127.0.0.1:41235,,reconnect=1" in value
    assert "restrict=on" in value.split(",")


@pytest.mark.parametrize(
    ("forwards", "message"),
    [
        ({"168.63.129.16:80": 1234}, "QEMU forwards only addresses of its user network 10.0.2.0/24"),
        ({"10.0.2.2:80": 1234}, "other than 10.0.2.2, 10.0.2.3"),
        ({"wireserver:80": 1234}, "'wireserver:80' is not a guest IPv4 address:port"),
        ({"10.0.2.16:80": 0}, "port 0 on 127.0.0.1 is not a TCP port"),
        ({"10.0.2.16:81": 1234, "10.0.2.17:81": 1235}, "QEMU names a forward's device by its guest port"),
    ],
)
def test_a_forward_qemu_cannot_make_is_refused_at_load(forwards, message):
    raw = {"targets": {"k": {"provider": "kvm", "guest_forwards": forwards}}}
    with pytest.raises(ConfigError, match=message):
        config.parse(raw, "test")


def test_a_forward_the_network_cannot_make_or_on_the_appliances_server_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"targets\.kvm\.guest_forwards: forwards are made by QEMU's user-mode"):
        kvm_target("appliance", network="nat", guest_forwards={"10.0.2.16:80": 1234}).load_profile()
    with pytest.raises(ConfigError, match=r"'10\.0\.2\.16:80': guest port 80 is the test appliance's CernVM-FS"):
        kvm_target("appliance", guest_forwards={"10.0.2.16:80": 1234}).load_profile()
    kvm_target("appliance", guest_forwards={"10.0.2.16:8016": 1234}).load_profile()
