"""Fixed-size VHD files for tests: the format Azure takes, made from scratch."""

from __future__ import annotations

from pathlib import Path


def make_vhd(path: Path, mib: int = 2, *, fixed: bool = True, size: int | None = None, mark: bytes = b"") -> Path:
    """A fixed-size VHD: data with a few non-empty pages, then the 512-byte footer; ``mark`` makes its content
    (so its SHA-256) differ from other tests' VHDs."""
    data = bytearray(mib * 1024 * 1024)
    data[0:512] = (mark + b"\x55" * 512)[:512]
    data[1024 * 1024 : 1024 * 1024 + 1536] = b"\xaa" * 1536
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    footer[8:12] = (2).to_bytes(4, "big")
    footer[12:16] = (0x00010000).to_bytes(4, "big")
    footer[16:24] = b"\xff" * 8
    footer[40:48] = (size or len(data)).to_bytes(8, "big")
    footer[48:56] = (size or len(data)).to_bytes(8, "big")
    footer[60:64] = (2 if fixed else 3).to_bytes(4, "big")
    footer[64:68] = ((~sum(footer)) & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(data) + bytes(footer))
    return path
