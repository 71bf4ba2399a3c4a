"""Image tarballs the way users make them for GCE: with GNU tar (``tar --format=oldgnu -Sczf``, Google's recipe; not
the provider's own writer), and the ways they go wrong. A sparse disk of a GiB or more archives into a few hundred
bytes."""

from __future__ import annotations

import gzip
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
        sparse = [] if fmt == "ustar" else ["-S"]
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
