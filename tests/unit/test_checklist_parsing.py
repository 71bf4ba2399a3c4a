"""What the release-checklist scenarios parse on the host side: the run's key in a context user's list, and the scratch
file system's size from its superblock (checked against a real mke2fs)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from cernvm_fixtures.context import RUN_KEYS, Context, UserData
from cernvm_fixtures.scenarios.test_scratch_size import ext_size


def test_run_keys_stand_for_the_runs_keys_in_a_users_list():
    users = ["default", {"name": "a", "ssh_authorized_keys": ["ssh-rsa OTHER", RUN_KEYS]}, {"name": "b"}]
    context = Context("vm", ("ssh-ed25519 RUN1", "ssh-ed25519 RUN2"), UserData(cloud_config={"users": users}))
    rendered = yaml.safe_load(context.parts()[0][1])
    assert rendered["users"] == [
        "default",
        {"name": "a", "ssh_authorized_keys": ["ssh-rsa OTHER", "ssh-ed25519 RUN1", "ssh-ed25519 RUN2"]},
        {"name": "b"},
    ]
    assert rendered["ssh_authorized_keys"] == ["ssh-ed25519 RUN1", "ssh-ed25519 RUN2"], "root keeps the run's keys"
    assert users[1]["ssh_authorized_keys"] == ["ssh-rsa OTHER", RUN_KEYS], "the marker's own data is left alone"


@pytest.mark.skipif(not shutil.which("mke2fs"), reason="mke2fs (e2fsprogs) is not installed")
@pytest.mark.parametrize("options", [[], ["-O", "64bit"], ["-b", "1024"]])
def test_ext_size_reads_the_block_count(tmp_path, options):
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(48 * 1024**2)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", *options, str(image), "40M"], check=True)
    superblock = image.read_bytes()[1024:2048]
    assert ext_size(superblock.hex()) == 40 * 1024**2
    assert ext_size(bytes(1024).hex()) is None, "no ext magic: not an ext file system"
    assert ext_size("") is None
