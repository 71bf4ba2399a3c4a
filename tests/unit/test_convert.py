"""Image conversion with the real qemu-img: the format a target takes, made once, never half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cernvm_fixtures import config, convert
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.images import Accepts, local_file
from cernvm_fixtures.providers.azure import check_vhd

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")

DATA = os.urandom((1 << 20) + 4096 + 17)
"""A disk whose size is not a whole number of MiB (Azure needs one)."""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CERNVM_FIXTURES_CACHE", str(tmp_path / "cache"))


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def raw_of(path: Path, fmt: str, tmp_path: Path) -> bytes:
    """The disk's content as qemu-img reads it back (a fixed VHD has no header to probe: name its format)."""
    out = tmp_path / "back.raw"
    qemu_img("convert", "-f", fmt, "-O", "raw", str(path), str(out))
    return out.read_bytes()


@pytest.fixture
def hdd(tmp_path) -> Path:
    path = tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.hdd"
    path.write_bytes(DATA)
    return path


def test_raw_becomes_a_fixed_vhd_azure_takes(hdd, tmp_path):
    vhd = convert.convert(hdd, ".vhd", "t: targets.azure.image")
    assert vhd.name == "ucernvm-prod.2021.05-1.cernvm.x86_64.vhd"
    check_vhd(vhd, "t: targets.azure.image")  # footer, fixed, whole MiB: raises otherwise
    back = raw_of(vhd, "vpc", tmp_path)
    assert back[: len(DATA)] == DATA and back[len(DATA) :] == bytes(len(back) - len(DATA))
    assert len(back) % (1 << 20) == 0


def test_qcow2_becomes_raw_for_ec2(hdd, tmp_path):
    qcow2 = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(hdd), str(qcow2))
    hvm = convert.convert(qcow2, ".hvm", "t: targets.ec2.image")
    assert hvm.suffix == ".hvm" and hvm.read_bytes()[: len(DATA)] == DATA


def test_converted_once_then_reused(hdd, monkeypatch):
    first = convert.convert(hdd, ".vhd", "w")
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(convert.shutil, "which", lambda name: "/nonexistent/qemu-img")
    assert convert.convert(hdd, ".vhd", "w") == first and first.stat().st_mtime_ns == stamp


def test_a_failed_conversion_leaves_nothing_to_use(tmp_path, monkeypatch):
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + os.urandom(4096))
    monkeypatch.setattr(convert, "check_source", lambda *args: None)  # refused there: this is about convert
    with pytest.raises(ConfigError, match=r"^t: targets\.azure\.image: qemu-img convert failed \(exit \d+\): .+"):
        convert.convert(broken, ".vhd", "t: targets.azure.image")
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert left == [], f"a failed conversion left {left}"


def test_an_image_qemu_img_cannot_read_is_refused_before_converting(tmp_path):
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + os.urandom(4096))
    with pytest.raises(ConfigError, match=r"^t: qemu-img info failed \(exit \d+\): .*broken\.qcow2"):
        convert.convert(broken, ".vhd", "t")


def test_without_qemu_img_the_error_says_what_to_install(hdd, monkeypatch):
    monkeypatch.setattr(convert.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"^w: converting .*\.hdd to \.vhd needs qemu-img \(Debian: .*qemu-utils\)"):
        convert.convert(hdd, ".vhd", "w")


def azure(image: Path) -> config.Target:
    raw = {
        "provider": "azure",
        "image": str(image),
        "profile": "cernvm4",
        "location": "westeurope",
        "ssh_cidr": "203.0.113.7/32",
    }
    return config.parse({"targets": {"azure": raw}}, "t").targets["azure"]


def test_a_target_converts_what_its_provider_accepts(hdd):
    path = local_file(azure(hdd), Accepts(".vhd", "fixed VHDs", convertible=(".hdd", ".qcow2")))
    assert path.suffix == ".vhd" and path.is_relative_to(Path(os.environ["CERNVM_FIXTURES_CACHE"]))


def test_a_format_the_provider_cannot_take_is_named_with_what_it_can(tmp_path):
    ova = tmp_path / "x.ova"
    ova.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"targets\.azure\.image: .*x\.ova.*fixed VHDs, or converts \.hdd/\.qcow2"):
        local_file(azure(ova), Accepts(".vhd", "fixed VHDs", convertible=(".hdd", ".qcow2")))


def test_conversions_are_listed_and_pruned_with_the_downloads(hdd):
    from cernvm_fixtures import download

    vhd = convert.convert(hdd, ".vhd", "w")
    assert [e[0] for e in download.entries()] == [vhd]
    assert download.prune(max_bytes=0) == [vhd] and not vhd.exists()


# --- images that name other files: refused before qemu-img convert reads them --------------------------------


SECRET = b"aws_secret_access_key = do-not-leak-me\n"


@pytest.fixture
def secret(tmp_path) -> Path:
    """A host file a hostile image names (as ~/.aws/credentials would be), one MiB so it fits a whole extent."""
    path = tmp_path / "credentials"
    path.write_bytes(SECRET + bytes((1 << 20) - len(SECRET)))
    return path


def assert_nothing_written(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    left = [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"] if cache.exists() else []
    assert left == [], f"a refused image left {left}"


@pytest.mark.attack_row("a malicious image (backing file, extent)", "ec2", "gce", "azure")
def test_a_qcow2_with_a_backing_file_is_refused(tmp_path, secret):
    image = tmp_path / "cernvm.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(image))
    with pytest.raises(ConfigError, match=rf"^t: .*cernvm\.qcow2: refused: .* backing file {secret}"):
        convert.convert(image, ".hvm", "t")
    assert_nothing_written(tmp_path)


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path, secret):
    image = tmp_path / "cernvm.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", str(image), "1M")
    with pytest.raises(ConfigError, match=rf"^t: .*cernvm\.qcow2: refused: .* data file {secret}"):
        convert.convert(image, ".vhd", "t")
    assert_nothing_written(tmp_path)


@pytest.mark.attack_row("a malicious image (backing file, extent)", "ec2", "gce", "azure")
def test_a_vmdk_naming_an_extent_elsewhere_is_refused(tmp_path, secret):
    image = tmp_path / "cernvm.vmdk"
    image.write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
        f'RW 2048 FLAT "{secret}" 0\n'
    )
    with pytest.raises(ConfigError, match=rf"^t: .*cernvm\.vmdk: refused: .* VMDK extent {secret}"):
        convert.convert(image, ".hvm", "t")
    assert_nothing_written(tmp_path)


def test_an_image_in_another_format_than_its_name_says_is_refused(hdd, tmp_path):
    disguised = tmp_path / "cernvm.hdd"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(hdd), str(disguised))
    with pytest.raises(ConfigError, match=r"^t: .*cernvm\.hdd: refused: qemu-img finds a qcow2 image.*says raw"):
        convert.convert(disguised, ".vhd", "t")
    assert_nothing_written(tmp_path)


def test_self_contained_vmdk_and_fixed_vhd_still_convert(hdd, tmp_path):
    vmdk, vhd = tmp_path / "disk.vmdk", tmp_path / "disk.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", str(hdd), str(vmdk))
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size", str(hdd), str(vhd))
    for source in (vmdk, vhd):  # a fixed VHD has no header: qemu-img probes it as raw
        assert convert.convert(source, ".hvm", "t").read_bytes()[: len(DATA)] == DATA
