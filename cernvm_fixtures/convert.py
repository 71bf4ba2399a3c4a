"""Disk images in the format a target takes, made with ``qemu-img`` and cached beside the downloads.

A provider names the suffix it boots and the suffixes it accepts through a conversion
(:meth:`cernvm_fixtures.config.Target.image_file`); a file in one of those is converted once: the result lands
in the image cache under the source's SHA-256, is written to a temporary name and renamed only when
``qemu-img`` succeeded (an interrupted conversion is never used), and a file lock makes parallel runs convert
it once. Azure's fixed VHD gets what Azure requires: a virtual size that is a whole number of MiB.

A downloaded image is the publisher's file, and its checksum is the publisher's too: before converting, the
source is inspected (``qemu-img info``) and refused if it is not in the format its suffix says, or if it names
another file (a qcow2 backing or data file, a VMDK extent elsewhere), which ``qemu-img convert`` would otherwise
copy into the disk that is uploaded and booted (e.g. the host's ``~/.aws/credentials``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .download import DIGEST, images_dir, touch_used
from .errors import ConfigError

QEMU_FORMATS = {
    ".hdd": "raw",
    ".raw": "raw",
    ".img": "raw",
    ".hvm": "raw",
    ".qcow2": "qcow2",
    ".vmdk": "vmdk",
    ".vdi": "vdi",
    ".vhd": "vpc",
}
"""File suffixes qemu-img reads and writes, and its name for each format (CernVM publishes .hdd and .hvm raw)."""
MIB = 1 << 20
PROBED = {"vpc": ("vpc", "raw")}
"""Formats a file of that format may probe as: a fixed VHD has only a footer, which qemu-img does not probe."""
INFO_TIMEOUT = 60.0
"""Seconds ``qemu-img info`` may take (it opens a VMDK's extents: a hostile one could name a FIFO)."""


def convert(source: Path, suffix: str, where: str) -> Path:
    """``source`` as a cached file with ``suffix`` (qemu-img's format for it), converting it the first time."""
    if source.suffix.lower() not in QEMU_FORMATS or suffix not in QEMU_FORMATS:
        raise ConfigError(f"{where}: cannot convert {source.name} to {suffix} (qemu-img formats: {_suffixes()})")
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise ConfigError(
            f"{where}: converting {source.name} to {suffix} needs qemu-img (Debian: apt-get install qemu-utils)"
        )
    folder = images_dir() / "converted" / digest(source)
    final = folder / (source.name.rsplit(".", 1)[0] + suffix)
    if final.is_file():
        touch_used(final)
        return final
    check_source(qemu_img, source, where)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_file():
            part, raw = final.with_name(final.name + ".part"), final.with_name(final.name + ".raw.part")
            try:
                _qemu_convert(qemu_img, source, part, raw, suffix, where)
                os.replace(part, final)
            finally:
                part.unlink(missing_ok=True)
                raw.unlink(missing_ok=True)
    touch_used(final)
    return final


def check_source(qemu_img: str, source: Path, where: str) -> None:
    """Refuse ``source`` unless it is in the format its suffix names and refers to no other file.

    qemu-img follows a qcow2 backing file or data file and a VMDK descriptor's extents wherever they point, so an
    image naming ``/home/me/.aws/credentials`` would carry that file into the converted disk."""
    expected = QEMU_FORMATS[source.suffix.lower()]
    path = source.resolve()
    probed = _info(qemu_img, path, None, where)
    found = probed.get("format")
    if found not in PROBED.get(expected, (expected,)):
        raise ConfigError(
            f"{where}: {source}: refused: qemu-img finds a {found} image, but the name says {expected} "
            f"({source.suffix}); rename it to its format's suffix if it is what you mean to boot"
        )
    info = probed if found == expected else _info(qemu_img, path, expected, where)
    named = []
    for key in ("full-backing-filename", "backing-filename"):
        if info.get(key):
            named.append(f"a backing file {info[key]}")
            break
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        named.append(f"an external data file {specific['data-file']}")
    for extent in specific.get("extents") or ():
        name = str(extent.get("filename") or "")
        if not name or (path.parent / name).resolve() != path:
            named.append(f"a VMDK extent {name or '(unnamed)'}")
    if named:
        raise ConfigError(
            f"{where}: {source}: refused: the {expected} image names {', '.join(dict.fromkeys(named))}; "
            "qemu-img would copy that file into the disk. Use a self-contained image "
            "(qemu-img convert -O <format> without a backing file, or a monolithic VMDK)"
        )


def _info(qemu_img: str, path: Path, fmt: str | None, where: str) -> dict[str, Any]:
    """``qemu-img info`` as JSON, shared-lock free (-U: another run may be booting the file), format probed
    unless ``fmt`` is given; backing files are never opened by ``info``."""
    argv = [qemu_img, "info", "-U", "--output=json", *(("-f", fmt) if fmt else ()), str(path)]
    try:
        info = json.loads(_run(argv, where, timeout=INFO_TIMEOUT))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: qemu-img info {path}: unreadable output: {e}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{where}: qemu-img info {path}: expected a JSON object, got {type(info).__name__}")
    return info


def _qemu_convert(qemu_img: str, source: Path, out: Path, raw: Path, suffix: str, where: str) -> None:
    """``source`` into ``out`` in ``suffix``'s format; a VHD goes through ``raw`` (rounded up to a whole MiB)."""
    source_format = QEMU_FORMATS[source.suffix.lower()]
    if suffix != ".vhd":
        _run([qemu_img, "convert", "-f", source_format, "-O", QEMU_FORMATS[suffix], str(source), str(out)], where)
        return
    _run([qemu_img, "convert", "-f", source_format, "-O", "raw", str(source), str(raw)], where)
    size = int(json.loads(_run([qemu_img, "info", "--output=json", "-f", "raw", str(raw)], where))["virtual-size"])
    if size % MIB:
        _run([qemu_img, "resize", "-f", "raw", str(raw), str(-(-size // MIB) * MIB)], where)
    _run([qemu_img, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size", str(raw), str(out)], where)


def _run(argv: list[str], where: str, timeout: float | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: qemu-img {argv[1]} {argv[-1]} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ConfigError(f"{where}: qemu-img {argv[1]} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def digest(path: Path) -> str:
    """The SHA-256 of ``path``: the folder name when it is a download in the cache, else hashed."""
    if DIGEST.match(path.parent.name) and path.parent.parent == images_dir():
        return path.parent.name
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _suffixes() -> str:
    return ", ".join(QEMU_FORMATS)
