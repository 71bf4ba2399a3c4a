"""The guest's screen: images in whatever format a platform returns, written as PNG; the text of a virtual console.

A leaf module (it imports nothing of the package but its errors), used by every provider's ``Machine.screenshot``,
by :class:`~cernvm_fixtures.instance.Instance` and by the plugin.

Released CernVM images print nothing on the serial port: the kernel line of the ISO and .hdd images has no
``console=ttyS0``, so boot messages and µCernVM's own errors reach only tty0, the VGA screen. A screenshot (and,
where the guest can still be logged into, the text of its first virtual console) is then the only record of why a
boot stopped.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ScreenUnavailable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(
            "converting the guest's screen to PNG needs Pillow: pip install 'cernvm-fixtures[kvm]' (or [ec2], [azure])"
        ) from None
    return Image


def write_png(data: bytes, path: Path, what: str = "the screen") -> Path:
    """Write an image (PNG as is; PPM, JPEG, BMP, ... converted with Pillow) to ``path`` as PNG, atomically."""
    if not data:
        raise ScreenUnavailable(f"{what}: the platform returned an empty image")
    if not data.startswith(PNG_SIGNATURE):
        image_module = _pillow()
        try:
            with image_module.open(io.BytesIO(data)) as image:
                out = io.BytesIO()
                image.convert("RGB").save(out, format="PNG")
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's UnidentifiedImageError is an OSError
            raise ScreenUnavailable(f"{what}: not an image Pillow can read ({len(data)} bytes: {e})") from None
        data = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (no image library needed)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def vcsa_text(raw: bytes) -> str:
    """The text of a virtual console from its ``/dev/vcsaN`` content.

    The device holds a 4-byte header (rows, columns, cursor column, cursor row), then one (character, attribute)
    byte pair per cell, row by row (console_codes(4), vcs(4)). Characters are the console font's code points, which
    for the default VGA font are code page 437; trailing blanks of each row and blank rows at the end are dropped.
    """
    if len(raw) < 4:
        raise ValueError(f"a vcsa device starts with a 4-byte header, got {len(raw)} bytes")
    rows, columns = raw[0], raw[1]
    cells = raw[4:]
    if rows * columns * 2 > len(cells):
        raise ValueError(f"vcsa header says {rows}x{columns} cells but {len(cells) // 2} follow")
    characters = cells[0 : rows * columns * 2 : 2]
    lines = [
        characters[r * columns : (r + 1) * columns].decode("cp437").replace("\x00", " ").rstrip() for r in range(rows)
    ]
    return "\n".join(lines).rstrip("\n")


def file_label(text: str) -> str:
    """A file name part from a test id or a step (``scenarios/test_os.py::test_x[kvm]`` -> ``test_os-test_x-kvm``)."""
    module, _, test = text.partition("::")
    name = f"{Path(module).stem}-{test}" if test else text
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:120] or "screen"


@dataclass(frozen=True)
class Capture:
    """What was seen of an instance's screen at one moment: the PNG (or why there is none) and the text of tty1."""

    path: Path | None
    problem: str = ""
    """Why there is no screenshot (ScreenUnavailable's reason, or what went wrong taking it)."""
    text: str | None = None
    """The first virtual console's text, read from inside the guest; None where it could not be read."""

    def describe(self) -> str:
        """For a report section or an error message: where the PNG is (or why none), then the text."""
        lines = [f"screenshot: {self.path}" if self.path is not None else f"no screenshot: {self.problem}"]
        if self.text is not None:
            lines += ["--- screen text ---", self.text, "--- end of screen text ---"]
        return "\n".join(lines)
