"""The file GCE makes an image from: a gzipped tar whose one member is ``disk.raw``, in GNU (oldgnu) format, the raw
disk a whole number of GB (GCE's GB is 2**30: gcloud's ``BYTES_IN_ONE_GB``). :func:`build` makes one from any disk
qemu-img reads with GNU tar and gzip, Google's own recipe (``tar --format=oldgnu -Sczf image.tar.gz disk.raw``:
holes, and the padding to a whole GB, are not stored); :func:`check` refuses a given ``.tar.gz`` that is not one,
before it is uploaded, reading it with Python's tarfile; both stream (a disk is gigabytes).

An archive GCE cannot read ends the image's insert operation in ``INVALID_IMAGE_TAR: The tar archive is not a valid
image.`` (a PAX archive, Python tarfile's default, among them: its extended header is a member of its own).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ... import convert
from ...download import images_dir, touch_used
from ...errors import ConfigError

GIB = 1 << 30
MEMBER = "disk.raw"
BLOCK = 512
RAW = (".hdd", ".raw", ".img", ".hvm")
"""Suffixes of raw disks, archived as they are (CernVM publishes .hdd and .hvm raw)."""
DISKS = (*RAW, ".qcow2", ".vmdk", ".vdi", ".vhd")
"""Every disk the provider turns into a tarball (the others through qemu-img, see :mod:`cernvm_fixtures.convert`)."""
GNU_MAGIC = b"ustar  \0"
USTAR_MAGIC = b"ustar\x0000"
FILES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE)
CHUNK = 8 << 20
HOW = "make one with: tar --format=oldgnu -Sczf NAME.tar.gz disk.raw (disk.raw padded with truncate -s <N>G)"
TOOLS = ("tar", "gzip", "cp")
"""What :func:`build` runs: GNU tar, gzip and coreutils' cp, in every Debian base (essential packages), so no
dependency of ours."""


def is_disk(path: Path) -> bool:
    """Whether ``path`` is a disk the provider archives itself (not a ready ``.tar.gz``)."""
    return path.name.lower().endswith(DISKS)


def build(disk: Path, where: str) -> Path:
    """The cached tarball of ``disk`` (raw, or converted to raw by qemu-img once), made the first time: written to a
    temporary name and renamed when complete, under the conversion cache's lock, identical for identical content
    (no times or owners in it), so the image named by its hash is reused by every later run."""
    tools = {name: shutil.which(name) or "" for name in TOOLS}
    missing = [name for name, found in tools.items() if not found]
    if missing:
        raise ConfigError(
            f"{where}: making the GCE tarball of {disk.name} needs {' and '.join(missing)} on PATH "
            "(GNU tar, gzip and coreutils: apt-get install tar gzip coreutils)"
        )
    if disk.name.lower().endswith(RAW):
        raw, ours, key = disk, False, "gce-" + sparse_digest(disk)
    else:
        raw, ours, key = convert.convert(disk, ".raw", where), True, convert.digest(disk)
    folder = images_dir() / "converted" / key
    final = folder / (disk.name.rsplit(".", 1)[0] + ".tar.gz")
    if final.is_file():
        touch_used(final)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            part, copy = final.with_name(final.name + ".part"), final.with_name(final.name + ".raw.part")
            try:
                padded = whole_gib(raw, None if ours else copy, tools["cp"], where)
                archive(padded, part, tools["tar"], where)
                os.replace(part, final)
            except OSError as e:
                raise ConfigError(f"{where}: making the GCE tarball of {disk.name}: {e.strerror or e}") from None
            finally:
                part.unlink(missing_ok=True)
                copy.unlink(missing_ok=True)
    touch_used(final)
    return final


def whole_gib(raw: Path, copy: Path | None, cp: str, where: str) -> Path:
    """``raw`` grown with a hole to a whole GiB (at least one): in place when it is ours (the converter's output),
    else a sparse copy at ``copy`` (the user's file is never modified); ``raw`` itself when it already is."""
    size = raw.stat().st_size
    whole = max(1, -(-size // GIB)) * GIB
    if size == whole:
        return raw
    if copy is not None:
        _run([cp, "--sparse=always", "--reflink=auto", "--", str(raw), str(copy)], where)
        raw = copy
    os.truncate(raw, whole)
    return raw


def archive(raw: Path, out: Path, tar: str, where: str) -> None:
    """``raw`` as ``out``: GNU tar's sparse oldgnu archive of it named ``disk.raw``, gzipped, with nothing of when or
    by whom it was made (times 0, owner root, mode 0644, gzip -n: no name or time)."""
    _run(
        [
            tar,
            "--create",
            f"--file={out}",
            "--force-local",  # a colon in the cache's path does not name a remote host
            "--format=oldgnu",
            "--sparse",
            "--use-compress-program=gzip -n",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0644",
            f"--transform=s|.*|{MEMBER}|",
            f"--directory={raw.parent}",
            "--",
            raw.name,
        ],
        where,
    )


def _run(argv: list[str], where: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        name = os.path.basename(argv[0])
        raise ConfigError(f"{where}: {name} {argv[-1]} failed (exit {done.returncode}): {done.stderr.strip()}")


def sparse_digest(disk: Path) -> str:
    """SHA-256 of a raw disk's size and data regions (what its tarball is made of), reading only the data: a 20 GB
    disk that is mostly holes is hashed in the time its data takes."""
    digest = hashlib.sha256()
    with open(disk, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        digest.update(b"size %d\n" % size)
        for offset, length in data_regions(source, size):
            digest.update(b"region %d %d\n" % (offset, length))
            source.seek(offset)
            left = length
            while left:
                chunk = source.read(min(left, CHUNK))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


def data_regions(source: BinaryIO, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the parts of ``source`` that hold data (SEEK_DATA/SEEK_HOLE); all of it where the file
    system cannot tell."""
    fd, offset = source.fileno(), 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here on
                return
            if offset == 0:  # the file system does not say where the holes are
                yield 0, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end - start
        offset = end


class _Refused(Exception):
    """What is wrong with a tarball (the message says it and what GCE needs)."""


def check(tarball: Path, where: str) -> int:
    """The size of ``disk.raw`` in ``tarball``, checked to be what GCE imports: gzip, a GNU/oldgnu tar, exactly one
    member ``disk.raw`` (a file, sparse or not), its size a whole number of GiB; else a ConfigError starting with
    ``where`` that names the file, what is wrong and how to make one. Reads the file once, streaming."""
    try:
        with gzip.open(tarball, "rb") as stream:
            size = _archive(stream)
    except _Refused as e:
        raise ConfigError(f"{where}: {tarball}: {e}; GCE imports a gzipped tar holding only disk.raw ({HOW})") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ConfigError(f"{where}: {tarball}: not a gzip file ({e}); {HOW}") from None
    except EOFError:
        raise ConfigError(f"{where}: {tarball}: truncated (the gzip stream ends early); {HOW}") from None
    except OSError as e:
        raise ConfigError(f"{where}: {tarball}: cannot read: {e.strerror or e}") from None
    if size == 0 or size % GIB:
        whole = max(1, -(-size // GIB))
        raise ConfigError(
            f"{where}: {tarball}: disk.raw is {size} bytes, not a whole number of GiB as GCE requires; pad it to "
            f"{whole} GiB ({whole * GIB} bytes: truncate -s {whole}G disk.raw) and archive it again ({HOW})"
        )
    return size


def _archive(stream: gzip.GzipFile) -> int:
    """disk.raw's size, after walking the whole archive with tarfile (so gzip's own check of its end runs too). The
    first header's type flag and magic are looked at directly: tarfile reads PAX, ustar and GNU alike and does not
    say which it read."""
    header = stream.read(BLOCK)
    if len(header) != BLOCK:
        raise _Refused("the tar archive ends inside its first header")
    stream.seek(0)  # gzip starts over: only the first block is read twice
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:
            disk = _first(header, tar.next())
            if (other := tar.next()) is not None:
                raise _Refused(f"it holds another member after disk.raw ({other.name!r})")
    except tarfile.ReadError as e:
        if str(e) == "unexpected end of data":
            raise _Refused("the tar archive ends inside disk.raw") from None
        raise _Refused(f"not a tar archive ({e})") from None
    while stream.read(CHUNK):
        pass
    return disk.size


def _first(header: bytes, disk: tarfile.TarInfo | None) -> tarfile.TarInfo:
    """The first member, refused unless it is the file disk.raw in the GNU format (``header`` is its first block)."""
    if disk is None:
        raise _Refused("an empty tar archive")
    kind, magic = header[156:157], header[257:265]
    if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE):
        raise _Refused("a PAX archive (its extended header is a member of its own, which GCE refuses)")
    if magic == USTAR_MAGIC:
        raise _Refused("a POSIX ustar archive, not the GNU (oldgnu) format GCE documents")
    if magic != GNU_MAGIC:
        raise _Refused(f"not a GNU tar archive (magic {magic!r})")
    if disk.name != MEMBER:
        raise _Refused(f"the member is named {disk.name!r}, not 'disk.raw'")
    if disk.type not in FILES:
        raise _Refused(f"disk.raw is not a file (tar type {disk.type.decode('ascii', 'replace')!r})")
    return disk
