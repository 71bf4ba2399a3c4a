"""Image conversion with the real qemu-img: the format a target takes, made once, never half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cernvm_fixtures import config, convert
from cernvm_fixtures.errors import ConfigError
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


def test_a_failed_conversion_leaves_nothing_to_use(tmp_path):
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb" + os.urandom(4096))
    with pytest.raises(ConfigError, match=r"^t: targets\.azure\.image: qemu-img convert failed \(exit \d+\): .+"):
        convert.convert(broken, ".vhd", "t: targets.azure.image")
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert left == [], f"a failed conversion left {left}"


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
    path = azure(hdd).image_file(".vhd", "fixed VHDs", convertible=(".hdd", ".qcow2"))
    assert path.suffix == ".vhd" and path.is_relative_to(Path(os.environ["CERNVM_FIXTURES_CACHE"]))


def test_a_format_the_provider_cannot_take_is_named_with_what_it_can(tmp_path):
    ova = tmp_path / "x.ova"
    ova.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"targets\.azure\.image: .*x\.ova.*fixed VHDs, or converts \.hdd/\.qcow2"):
        azure(ova).image_file(".vhd", "fixed VHDs", convertible=(".hdd", ".qcow2"))


def test_conversions_are_listed_and_pruned_with_the_downloads(hdd):
    from cernvm_fixtures import download

    vhd = convert.convert(hdd, ".vhd", "w")
    assert [e[0] for e in download.entries()] == [vhd]
    assert download.prune(max_bytes=0) == [vhd] and not vhd.exists()
