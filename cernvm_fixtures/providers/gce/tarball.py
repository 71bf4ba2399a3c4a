"""The file GCE makes an image from: a gzipped tar whose one member is ``disk.raw``, in GNU (oldgnu) format, the raw
disk a whole number of GB (GCE's GB is 2**30: gcloud's ``BYTES_IN_ONE_GB``). :func:`build` makes one from any disk
qemu-img reads (sparse: holes, and the padding to a whole GB, are not stored), :func:`check` refuses a given
``.tar.gz`` that is not one, before it is uploaded; both stream (a disk is gigabytes).

Google's recipe is ``tar --format=oldgnu -Sczf image.tar.gz disk.raw``; an archive GCE cannot read ends the
image's insert operation in ``INVALID_IMAGE_TAR: The tar archive is not a valid image.`` (a PAX archive, Python
tarfile's default, among them: its extended header is a member of its own).
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import io
import os
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
RECORD = 20 * BLOCK
"""GNU tar's default record: the archive is padded to a whole number of them."""
RAW = (".hdd", ".raw", ".img", ".hvm")
"""Suffixes of raw disks, archived as they are (CernVM publishes .hdd and .hvm raw)."""
DISKS = (*RAW, ".qcow2", ".vmdk", ".vdi", ".vhd")
"""Every disk the provider turns into a tarball (the others through qemu-img, see :mod:`cernvm_fixtures.convert`)."""
GNU_MAGIC = b"ustar  \0"
USTAR_MAGIC = b"ustar\x0000"
SPARSE = b"S"
REGULAR = (b"0", b"\0")
HOW = "make one with: tar --format=oldgnu -Sczf NAME.tar.gz disk.raw (disk.raw padded with truncate -s <N>G)"


def is_disk(path: Path) -> bool:
    """Whether ``path`` is a disk the provider archives itself (not a ready ``.tar.gz``)."""
    return path.name.lower().endswith(DISKS)


def build(disk: Path, where: str) -> Path:
    """The cached tarball of ``disk`` (raw, or converted to raw by qemu-img once), made the first time: written to a
    temporary name and renamed when complete, under the conversion cache's lock, identical for identical content
    (no times or owners in it), so the image named by its hash is reused by every later run."""
    if disk.name.lower().endswith(RAW):
        raw, key = disk, "gce-" + sparse_digest(disk)
    else:
        raw, key = convert.convert(disk, ".raw", where), convert.digest(disk)
    folder = images_dir() / "converted" / key
    final = folder / (disk.name.rsplit(".", 1)[0] + ".tar.gz")
    if final.is_file():
        touch_used(final)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            part = final.with_name(final.name + ".part")
            try:
                with open(raw, "rb") as source, open(part, "wb") as out:
                    write(source, out)
                os.replace(part, final)
            except OSError as e:
                raise ConfigError(f"{where}: making the GCE tarball of {disk.name}: {e.strerror or e}") from None
            finally:
                part.unlink(missing_ok=True)
    touch_used(final)
    return final


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
                chunk = source.read(min(left, 8 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    return digest.hexdigest()


def write(source: BinaryIO, out: BinaryIO) -> None:
    """``source`` (a raw disk) as a gzipped oldgnu tar holding ``disk.raw``, padded with a hole to a whole GiB."""
    size = os.fstat(source.fileno()).st_size
    realsize = max(1, -(-size // GIB)) * GIB
    regions = list(data_regions(source, size))
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as archive:
        written = 0
        for block in headers(realsize, regions):
            archive.write(block)
            written += len(block)
        for offset, length in regions:
            source.seek(offset)
            left = length
            while left:
                chunk = source.read(min(left, 8 << 20))
                if not chunk:
                    raise OSError(errno.EIO, f"{source.name} shrank while it was archived")
                archive.write(chunk)
                left -= len(chunk)
            written += length
        end = written + (-written % BLOCK) + 2 * BLOCK
        archive.write(bytes(end + (-end % RECORD) - written))


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


def number(value: int, width: int) -> bytes:
    """A tar header number field: octal digits and a NUL, or GNU's base-256 where they do not fit (from 8 GiB)."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return b"\x80" + value.to_bytes(width - 1, "big")


def headers(realsize: int, regions: list[tuple[int, int]]) -> Iterator[bytes]:
    """The member's header and its sparse map's extension blocks, as GNU tar's oldgnu format writes them (type
    ``S``; the map ends with a zero-length region at the end of the disk, which is a hole)."""
    stored = sum(length for _, length in regions)
    sparse = regions != [(0, realsize)]
    entries = [*regions, (realsize, 0)] if sparse and (not regions or sum(regions[-1]) < realsize) else regions
    header = bytearray(BLOCK)
    for offset, value in ((0, MEMBER.encode()), (265, b"root"), (297, b"root"), (257, GNU_MAGIC)):
        header[offset : offset + len(value)] = value
    for offset, value in ((100, number(0o644, 8)), (108, number(0, 8)), (116, number(0, 8))):
        header[offset : offset + 8] = value
    header[124:136] = number(stored, 12)
    header[136:148] = number(0, 12)
    header[156:157] = SPARSE if sparse else REGULAR[0]
    if sparse:
        first, rest = entries[:4], entries[4:]
        for i, (offset, length) in enumerate(first):
            header[386 + 24 * i : 410 + 24 * i] = number(offset, 12) + number(length, 12)
        header[482] = 1 if rest else 0
        header[483:495] = number(realsize, 12)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    yield bytes(header)
    if sparse:
        while rest:
            block = bytearray(BLOCK)
            chunk, rest = rest[:21], rest[21:]
            for i, (offset, length) in enumerate(chunk):
                block[24 * i : 24 * i + 24] = number(offset, 12) + number(length, 12)
            block[504] = 1 if rest else 0
            yield bytes(block)


def parse_number(field: bytes) -> int:
    """A tar header number field (octal, or GNU base-256 when its first byte has the high bit set)."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


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


def _block(stream: io.BufferedIOBase, what: str) -> bytes:
    block = stream.read(BLOCK)
    if len(block) != BLOCK:
        raise _Refused(f"the tar archive ends inside {what}")
    return block


def _archive(stream: io.BufferedIOBase) -> int:
    """disk.raw's size, after walking the whole archive (so gzip's own check of its end runs too)."""
    header = _block(stream, "its first header")
    if not any(header):
        raise _Refused("an empty tar archive")
    kept = parse_number(header[148:156])
    if kept != sum(header[:148]) + 8 * 0x20 + sum(header[156:]):
        raise _Refused("not a tar archive (the first header's checksum does not match)")
    kind, magic = header[156:157], header[257:265]
    if kind in (b"x", b"g"):
        raise _Refused("a PAX archive (its extended header is a member of its own, which GCE refuses)")
    if magic == USTAR_MAGIC:
        raise _Refused("a POSIX ustar archive, not the GNU (oldgnu) format GCE documents")
    if magic != GNU_MAGIC:
        raise _Refused(f"not a GNU tar archive (magic {bytes(magic)!r})")
    if kind in (b"L", b"K"):
        raise _Refused("the first member has a long name, not 'disk.raw'")
    name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if name != MEMBER:
        raise _Refused(f"the member is named {name!r}, not 'disk.raw'")
    if kind not in (*REGULAR, SPARSE):
        raise _Refused(f"disk.raw is not a file (tar type {kind.decode('ascii', 'replace')!r})")
    stored = parse_number(header[124:136])
    size = stored
    if kind == SPARSE:
        size = parse_number(header[483:495])
        extended = header[482]
        while extended:
            extended = _block(stream, "disk.raw's sparse map")[504]
    left = stored + (-stored % BLOCK)
    while left:
        chunk = stream.read(min(left, 8 << 20))
        if not chunk:
            raise _Refused("the tar archive ends inside disk.raw")
        left -= len(chunk)
    following = stream.read(BLOCK)
    if len(following) == BLOCK and any(following):
        other = following[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        raise _Refused(f"it holds another member after disk.raw ({other!r})")
    while stream.read(8 << 20):
        pass
    return size
