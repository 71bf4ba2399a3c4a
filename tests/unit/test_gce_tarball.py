"""The tarball GCE imports an image from (issue 27): the provider archives a disk itself (gzip, GNU oldgnu tar,
one sparse member ``disk.raw`` padded to a whole GiB), checks a given ``.tar.gz`` before uploading it, and the local
Compute API refuses an object GCE could not import with GCE's own error. Tarballs made with GNU tar are the
reference the provider's writer and reader are held to."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.providers.gce import tarball

from ..fakes.gce.server import NOT_AN_IMAGE, imported_disk
from ..fakes.gce.tarballs import GIB, broken_tarball, gnu_tarball, sparse_disk

needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar makes the reference tarballs")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CERNVM_FIXTURES_CACHE", str(tmp_path / "cache"))


def extracted(archive: Path, folder: Path) -> Path:
    """disk.raw as GNU tar extracts it (sparse)."""
    folder.mkdir()
    subprocess.run(["tar", "-xSzf", str(archive)], cwd=folder, check=True)
    return folder / "disk.raw"


def digest(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


@needs_gnu_tar
def test_a_raw_disk_becomes_a_sparse_oldgnu_tarball_of_disk_raw_padded_to_a_whole_gib(tmp_path):
    disk = sparse_disk(tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.hdd", 3 << 20, b"\xeb\x63\x90CernVM" * 100)
    with open(disk, "r+b") as f:  # data in the middle, a hole at the end
        f.seek(2 << 20)
        f.write(b"scratch" * 1000)
    disk.chmod(0o600)
    before = disk.read_bytes()
    made = tarball.build(disk, "targets.gce.image")
    assert disk.read_bytes() == before and disk.stat().st_size == 3 << 20, "the user's disk is not padded in place"
    assert made.name == "ucernvm-prod.2021.05-1.cernvm.x86_64.tar.gz" and made.stat().st_size < 64 << 10
    assert made.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(made) as archive:
        (member,) = archive.getmembers()
        assert (member.name, member.size, member.type) == ("disk.raw", GIB, tarfile.GNUTYPE_SPARSE)
        assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644), "nothing of when or by whom"
    assert made.read_bytes()[3:8] == bytes(5), "gzip -n: no file name, no time"
    with open(made, "rb") as f:
        import gzip

        header = gzip.open(f).read(512)
    assert header[257:265] == b"ustar  \0", "oldgnu magic"
    out = extracted(made, tmp_path / "x")
    assert out.stat().st_size == GIB, "padded to a whole GiB"
    assert digest(out, disk.stat().st_size) == digest(disk, disk.stat().st_size), "the disk's bytes, unchanged"
    assert out.stat().st_blocks * 512 < 1 << 20, "the padding stays a hole"
    assert tarball.check(made, "w") == GIB
    assert imported_disk(io.BytesIO(made.read_bytes())) == GIB, "the local Compute API imports it"
    first = made.read_bytes()
    made.unlink()
    assert tarball.build(disk, "w").read_bytes() == first, "no times or owners: same disk, same tarball, same image"


@needs_gnu_tar
def test_a_qcow2_goes_through_qemu_img_to_the_same_disk(tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img converts the qcow2")
    raw = sparse_disk(tmp_path / "cernvm.raw", 4 << 20, b"CernVM boot sector" * 20)
    qcow2 = tmp_path / "cernvm.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    made = tarball.build(qcow2, "w")
    out = extracted(made, tmp_path / "x")
    assert out.stat().st_size == GIB and digest(out, 4 << 20) == digest(raw, 4 << 20)
    assert tarball.check(made, "w") == GIB
    (converted,) = made.parent.glob("*.raw")
    assert converted.stat().st_size == GIB, "the converter's own raw disk is padded in place, with a hole"
    assert converted.stat().st_blocks * 512 < 1 << 20
    assert sorted(p.name for p in made.parent.iterdir()) == [".lock", "cernvm.raw", "cernvm.tar.gz"], "no copy left"


@needs_gnu_tar
def test_a_raw_disk_of_a_whole_gib_is_archived_as_it_is(tmp_path):
    disk = sparse_disk(tmp_path / "whole.img", 2 * GIB, b"CernVM", at=GIB)
    made = tarball.build(disk, "w")
    assert tarball.check(made, "w") == 2 * GIB and disk.stat().st_size == 2 * GIB
    with tarfile.open(made) as archive:
        (member,) = archive.getmembers()
        assert member.name == "disk.raw" and (GIB, 4096) in member.sparse, member.sparse
    assert sorted(p.name for p in made.parent.iterdir()) == [".lock", "whole.tar.gz"], "no copy made"


def test_without_tar_or_gzip_on_path_the_tarball_is_a_config_error_naming_them(tmp_path, monkeypatch):
    disk = sparse_disk(tmp_path / "cernvm.hdd", 1 << 20, b"CernVM")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cp").symlink_to(shutil.which("cp") or "/bin/cp")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ConfigError, match=r"^w: making the GCE tarball of cernvm.hdd needs tar and gzip on PATH"):
        tarball.build(disk, "w")


def test_a_tar_that_fails_is_a_config_error_with_what_it_said(tmp_path, monkeypatch):
    """A tar that is not GNU tar (here a script that answers like BSD tar does) fails with its own words."""
    disk = sparse_disk(tmp_path / "cernvm.hdd", 1 << 20, b"CernVM")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tar").write_text("#!/bin/sh\necho 'tar: Option --format=oldgnu is not supported' >&2\nexit 1\n")
    (bin_dir / "tar").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(ConfigError, match=r"^w: tar .* failed \(exit 1\): tar: Option --format=oldgnu is not"):
        tarball.build(disk, "w")
    assert not list((tmp_path / "cache").rglob("*.part")), "nothing half-made is left"


def test_beyond_8_gib_sizes_take_gnu_base_256_and_every_reader_agrees(tmp_path):
    disk = sparse_disk(tmp_path / "big.raw", 9 * GIB + 5, b"x", at=9 * GIB)
    made = tarball.build(disk, "w")
    assert made.stat().st_size < 4096
    assert tarball.check(made, "w") == 10 * GIB
    assert imported_disk(io.BytesIO(made.read_bytes())) == 10 * GIB
    if shutil.which("tar"):
        listing = subprocess.run(["tar", "-tvzf", str(made)], capture_output=True, text=True, check=True).stdout
        assert f" {10 * GIB} " in listing and listing.rstrip().endswith(" disk.raw")


def test_many_data_regions_spill_into_sparse_extension_headers(tmp_path):
    disk = tmp_path / "holes.raw"
    with open(disk, "wb") as f:
        f.truncate(4 << 20)
        for i in range(40):  # 40 regions: 4 in the header, 36 in two extension blocks
            f.seek(i << 16)
            f.write(b"%03d" % i * 10)
    made = tarball.build(disk, "w")
    assert tarball.check(made, "w") == GIB
    with tarfile.open(made) as archive:
        (member,) = archive.getmembers()
        assert len([r for r in member.sparse if r[1]]) == 40, member.sparse
        data = archive.extractfile(member).read(4 << 20)
    assert data == disk.read_bytes()


@needs_gnu_tar
def test_a_tarball_made_by_gnu_tar_passes_as_it_is(tmp_path):
    made = gnu_tarball(tmp_path / "user.tar.gz", size=2 * GIB)
    assert tarball.check(made, "targets.gce.image") == 2 * GIB
    assert tarball.build.__name__ and not tarball.is_disk(made)


REFUSED = {
    "not-gzip": r"not a gzip file .*tar --format=oldgnu -Sczf",
    "gzip-of-nothing": r"the tar archive ends inside its first header",
    "not-tar": r"not a tar archive \(invalid header\)",
    "empty": r"an empty tar archive",
    "cut-tar": r"the tar archive ends inside disk.raw",
    "v7": r"not a GNU tar archive \(magic b'\\x00.*'\)",
    "directory": r"disk.raw is not a file \(tar type '5'\)",
    "truncated": r"truncated \(the gzip stream ends early\)",
    "pax": r"a PAX archive \(its extended header is a member of its own, which GCE refuses\)",
    "ustar": r"a POSIX ustar archive, not the GNU \(oldgnu\) format GCE documents",
    "wrong-name": r"the member is named 'disk.img', not 'disk.raw'",
    "two-members": r"it holds another member after disk.raw \('README'\)",
    "not-whole-gib": rf"disk.raw is {GIB + GIB // 2} bytes, not a whole number of GiB as GCE requires; pad it to 2 "
    rf"GiB \({2 * GIB} bytes: truncate -s 2G disk.raw\)",
}


@needs_gnu_tar
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_given_tarball_gce_cannot_import_is_refused_naming_the_file_and_the_fault(tmp_path, case):
    path = broken_tarball(tmp_path, case)
    with pytest.raises(ConfigError, match=rf"^targets\.gce\.image: {path}: {REFUSED[case]}"):
        tarball.check(path, "targets.gce.image")


@needs_gnu_tar
def test_a_tarball_whose_gzip_check_fails_at_its_very_end_is_refused(tmp_path):
    """The whole stream is read, so gzip's CRC of the content, in the last 8 bytes, is checked too."""
    data = bytearray(gnu_tarball(tmp_path / "good.tar.gz").read_bytes())
    data[-8] ^= 0xFF
    path = tmp_path / "bad-crc.tar.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"^w: {path}: not a gzip file \(CRC check failed"):
        tarball.check(path, "w")


@needs_gnu_tar
@pytest.mark.parametrize("case", list(REFUSED))
def test_the_local_compute_api_refuses_the_same_objects_with_gces_error(tmp_path, case):
    """Its reader is Python's tarfile, not the provider's: the two agree on every case."""
    found = imported_disk(io.BytesIO(broken_tarball(tmp_path, case).read_bytes()))
    if case == "wrong-name":
        assert found == (
            "INVALID_IMAGE_TAR",
            "The file inside the tar archive was named 'disk.img'. It should be named 'disk.raw'.",
        )
    else:
        assert found == NOT_AN_IMAGE == ("INVALID_IMAGE_TAR", "The tar archive is not a valid image.")
