"""Image tarballs the way users make them for GCE: with GNU tar (``tar --format=oldgnu -Sczf``, Google's recipe; not
the provider's own writer), and the ways they go wrong. A sparse disk of a GiB or more archives into a few hundred
bytes."""

from __future__ import annotations

import gzip
import secrets
import shutil
import subprocess
from pathlib import Path

GIB = 1 << 30


def sparse_disk(path: Path, size: int, head: bytes = b"", at: int = 0) -> Path:
    """A sparse file of ``size`` bytes holding ``head`` at offset ``at`` and holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(size)
        if head:
            f.seek(at)
            f.write(head)
    return path


def gnu_tarball(
    path: Path,
    *,
    size: int = GIB,
    head: bytes = b"CernVM",
    name: str = "disk.raw",
    fmt: str = "oldgnu",
    extra: str | None = None,
) -> Path:
    """``path``: GNU tar's archive (format ``fmt``, sparse where the format allows it) of a disk named ``name`` of
    ``size`` bytes starting with ``head`` (and of a second member ``extra``, if given), gzipped."""
    folder = path.with_name(path.name + ".d")
    folder.mkdir()
    try:
        sparse_disk(folder / name, size, head)
        members = [name]
        if extra:
            (folder / extra).write_text("another file\n")
            members.append(extra)
        sparse = [] if fmt in ("ustar", "v7") else ["-S"]
        subprocess.run(
            ["tar", f"--format={fmt}", *sparse, "-czf", str(path), "-C", str(folder), *members],
            check=True,
        )
    finally:
        shutil.rmtree(folder)
    return path


def not_a_tarball(path: Path, content: bytes = b"\x1f\x8b" + bytes(4096)) -> Path:
    """What the tests uploaded before: two bytes of gzip magic and zeros (neither gzip nor tar)."""
    path.write_bytes(content)
    return path


def gzip_of(path: Path, content: bytes) -> Path:
    """``content`` gzipped (a gzip file that holds no tar archive)."""
    path.write_bytes(gzip.compress(content, mtime=0))
    return path


def broken_tarball(tmp_path: Path, case: str) -> Path:
    """A tarball GCE cannot import, made the way a user would get it wrong."""
    path = tmp_path / f"{case}.tar.gz"
    if case == "not-gzip":
        return not_a_tarball(path)
    if case == "gzip-of-nothing":
        return gzip_of(path, b"just some text\n")
    if case == "not-tar":
        return gzip_of(path, b"just some text\n" * 100)
    if case == "empty":
        return gzip_of(path, bytes(10240))
    if case == "cut-tar":
        whole = gnu_tarball(tmp_path / "whole.tar.gz", size=GIB, head=secrets.token_bytes(8192))
        return gzip_of(path, gzip.decompress(whole.read_bytes())[:4096])
    if case == "v7":
        return gnu_tarball(path, fmt="v7", size=GIB // 1024)
    if case == "directory":
        folder = tmp_path / "directory.d"
        (folder / "disk.raw").mkdir(parents=True)
        subprocess.run(["tar", "--format=oldgnu", "-czf", str(path), "-C", str(folder), "disk.raw"], check=True)
        return path
    if case == "truncated":
        whole = gnu_tarball(tmp_path / "whole.tar.gz", head=secrets.token_bytes(64 << 10))
        path.write_bytes(whole.read_bytes()[:-200])
        return path
    if case == "pax":
        return gnu_tarball(path, fmt="pax")
    if case == "ustar":
        return gnu_tarball(path, fmt="ustar", size=1 << 20)
    if case == "wrong-name":
        return gnu_tarball(path, name="disk.img")
    if case == "two-members":
        return gnu_tarball(path, extra="README")
    if case == "not-whole-gib":
        return gnu_tarball(path, size=GIB + GIB // 2)
    raise AssertionError(case)
