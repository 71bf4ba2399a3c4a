"""NoCloud seed: an ISO 9660 image labelled ``cidata`` with ``user-data`` and ``meta-data``."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import yaml

from . import Context

PAD = 150 * 2048
"""Trailing zero sectors, as mkisofs/xorriso's default ``-pad`` adds: some label probes (busybox's
volume_id) read beyond a tiny image's end and skip the device if that fails."""


def write_seed(context: Context, path: Path) -> Path:
    """Write the seed ISO that cloud-init (and the test appliance) read as a NoCloud source."""
    files = {
        "user-data": context.render(),
        "meta-data": yaml.safe_dump(context.meta_data(), sort_keys=False).encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in files.items():
        iso_name = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    iso.write(str(path))
    iso.close()
    with open(path, "ab") as f:
        f.write(bytes(PAD))
    return path
