"""Reproducible archives: newc cpio (initramfs), tar (Docker root fs), gzip.

Every member gets a fixed timestamp, owner root:root and a sequential inode
number; members are sorted by path, so the same tree always gives the same
bytes, whoever builds it and whenever.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    """One archive member; exactly one of the kinds applies."""

    path: str  # relative, "/"-separated, no leading "/"
    mode: int  # full st_mode (type bits and permissions)
    source: Path | None = None  # regular file: where the content is
    data: bytes | None = None  # regular file: inline content
    target: str | None = None  # symlink target
    rdev: tuple[int, int] = (0, 0)  # character/block device numbers

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is not None:
            return self.source.read_bytes()
        return b""


def tree_entries(root: Path, prefix: str = "") -> Iterator[Entry]:
    """Entries for everything below ``root`` (not ``root`` itself), sorted.

    Ownership and timestamps on disk are ignored; permissions are kept.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        names = sorted(dirnames + filenames)
        for name in names:
            full = Path(dirpath) / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if prefix:
                rel = f"{prefix}/{rel}"
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                yield Entry(rel, stat.S_IFLNK | 0o777, target=os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                yield Entry(rel, st.st_mode)
            elif stat.S_ISREG(st.st_mode):
                yield Entry(rel, st.st_mode, source=full)
            else:
                raise ValueError(f"unsupported file type in build tree: {full}")


def _sorted_unique(entries: Iterable[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for entry in entries:
        by_path[entry.path] = entry  # later entries override earlier ones
    # sort by path components, so that a directory precedes its contents
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def write_cpio(out: BinaryIO, entries: Iterable[Entry], mtime: int) -> None:
    """Write a newc ("070701") cpio archive as the kernel's initramfs reads it."""

    def header(ino: int, mode: int, nlink: int, size: int, name: bytes, rdev: tuple[int, int] = (0, 0)) -> bytes:
        fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
        return head + b"\0" * (-len(head) % 4)

    ino = 0
    for entry in _sorted_unique(entries):
        ino += 1
        name = entry.path.encode()
        if stat.S_ISLNK(entry.mode):
            body = (entry.target or "").encode()
        elif stat.S_ISREG(entry.mode):
            body = entry.content()
        else:
            body = b""
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out.write(header(ino, entry.mode, nlink, len(body), name, entry.rdev))
        out.write(body)
        out.write(b"\0" * (-len(body) % 4))
    trailer = header(0, 0, 1, 0, b"TRAILER!!!")
    out.write(trailer)


def read_cpio(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, content) of every member of concatenated newc archives
    (uncompressed), in order; for inspecting an initrd."""
    members = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 6] != b"070701":
            pos += 1  # zero padding between archives
            continue
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[body_start : body_start + size]
        pos = body_start + size + (-size % 4)
        if name != "TRAILER!!!":
            members.append((name, mode, body))
    return members


def write_tar(out: BinaryIO, entries: Iterable[Entry], mtime: int) -> None:
    """Write a tar archive (GNU format) with root-owned, fixed-time members."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in _sorted_unique(entries):
            info = tarfile.TarInfo(entry.path)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = stat.S_IMODE(entry.mode)
            if stat.S_ISLNK(entry.mode):
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target or ""
                tar.addfile(info)
            elif stat.S_ISDIR(entry.mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(entry.mode):
                body = entry.content()
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            elif stat.S_ISCHR(entry.mode):
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = entry.rdev
                tar.addfile(info)
            else:
                raise ValueError(f"unsupported member type: {entry.path}")


def gzip_file(data_writer, path: Path, level: int = 9) -> None:
    """Call ``data_writer(stream)`` into a gzip file without name or time."""
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz:
            data_writer(gz)
