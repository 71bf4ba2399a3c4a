"""The context ISO: one ISO 9660 image with the config-drive layout µCernVM reads and the NoCloud files.

µCernVM's bootloader (cernvm-micro) looks, before any network, for a config drive: any ISO 9660 or vfat
device holding ``openstack/latest/user_data``; it does not check the volume label. It never reads a NoCloud
seed. CernVM Launch (libcernvm) builds the same layout: ``openstack/latest/{user_data,meta_data.json}`` and
``ec2/latest/{user-data,meta-data.json}`` on an ISO labelled ``CONFIG-2``.

The volume label is ``config-2``: an ISO has one label (libblkid reports the Joliet label only where it merely
spells the ISO 9660 one differently), and cloud-init's NoCloud datasource looks for ``cidata`` while its
ConfigDrive datasource looks for ``config-2`` (``DataSourceConfigDrive``: devices of TYPE vfat/iso9660 with
LABEL config-2, reading ``openstack/latest/meta_data.json``, which must hold ``uuid``, and ``user_data``).
ConfigDrive is in cloud-init's default datasource list, so cloud-init in the OS finds the same user data; the
NoCloud ``user-data``/``meta-data`` files stay at the root for a NoCloud reader pointed at the mounted drive
(``ds=nocloud;s=file://...``, or a ``seedfrom``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pycdlib
import yaml

from . import Context

LABEL = "config-2"
"""Volume label: cloud-init's ConfigDrive datasource needs it; µCernVM does not check it."""

PAD = 150 * 2048
"""Trailing zero sectors, as mkisofs/xorriso's default ``-pad`` adds: some label probes (busybox's
volume_id) read beyond a tiny image's end and skip the device if that fails."""


def seed_files(context: Context) -> dict[str, bytes]:
    """Path on the ISO -> content: config-drive layout (OpenStack and EC2 flavours) plus the NoCloud files."""
    user_data = context.render()
    meta = context.meta_data()
    openstack = {"uuid": meta["instance-id"], "hostname": meta["local-hostname"], "name": context.hostname}
    ec2 = {"instance-id": meta["instance-id"], "local-hostname": meta["local-hostname"]}
    return {
        "openstack/latest/user_data": user_data,
        "openstack/latest/meta_data.json": json.dumps(openstack, sort_keys=True).encode(),
        "ec2/latest/user-data": user_data,
        "ec2/latest/meta-data.json": json.dumps(ec2, sort_keys=True).encode(),
        "user-data": user_data,
        "meta-data": yaml.safe_dump(meta, sort_keys=False).encode(),
    }


def _iso_name(name: str, directory: bool) -> str:
    """A level-3 ISO 9660 name for a Rock Ridge name (the readers here use Rock Ridge or Joliet)."""
    stem = "".join(c for c in name.upper() if c.isalnum() or c == "_")[:30] or "X"
    return stem if directory else stem + ".;1"


def write_seed(context: Context, path: Path) -> Path:
    """Write the context ISO that µCernVM (config drive), cloud-init and the test appliance read."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    made: set[str] = set()
    for rel, data in seed_files(context).items():
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                iso_path = "/" + "/".join(_iso_name(p, True) for p in parts[:depth])
                iso.add_directory(iso_path, rr_name=parts[depth - 1], joliet_path="/" + directory)
                made.add(directory)
        iso_path = "/" + "/".join([*(_iso_name(p, True) for p in parts[:-1]), _iso_name(parts[-1], False)])
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=parts[-1], joliet_path="/" + rel)
    iso.write(str(path))
    iso.close()
    with open(path, "ab") as f:
        f.write(bytes(PAD))
    return path
