"""Scratch disk sizes (CernVM's release checklist: "with small and large partition"): µCernVM partitions the first
empty disk and formats partition 1; with ``resize_rootfs=0`` in the context and a disk larger than the default size,
partition 1 has the default size and partition 2 the rest, else partition 1 spans the disk.

``scratch.partitions`` gives the rule's numbers (``default_size`` and the ``slack`` a partition may lose to alignment,
MiB), ``scratch.disk_sizes`` the disks booted (GiB: a small one, the documented 20 GB, and a large sparse one). The
file system's size is read from its superblock. Each size boots a fresh instance with a disk of that size, where the
provider's targets can choose it (``disk_size``).
"""

import shlex

import pytest

from cernvm_fixtures import expect, expect_ahead
from cernvm_fixtures.checklist import fresh_instance_with_disk

MIB = 1024**2
GIB = 1024**3
RESIZE_ROOTFS = "0"

LAYOUT = r"""
dev=$(readlink -f {device}); n=${{dev##*/}}
part=$(cat /sys/class/block/$n/partition 2>/dev/null || echo 0)
if [ "$part" = 0 ]; then disk=$n; else disk=$(basename "$(readlink -f /sys/class/block/$n/..)"); fi
echo "device $dev"; echo "partition $part"; echo "disk $disk $(cat /sys/block/$disk/size)"
for p in /sys/block/$disk/$disk*; do [ -e "$p/partition" ] && echo "p$(cat "$p/partition") $(cat "$p/size")"; done
echo "superblock $(dd if="$dev" bs=1024 skip=1 count=1 2>/dev/null | od -An -tx1 -v | tr -d ' \n')"
"""


def ext_size(superblock_hex):
    """The size in bytes of the ext2/3/4 file system whose superblock (1024 bytes, hex) is given; None if not one."""
    sb = bytes.fromhex(superblock_hex)
    if len(sb) < 1024 or int.from_bytes(sb[56:58], "little") != 0xEF53:
        return None
    blocks = int.from_bytes(sb[4:8], "little")
    if int.from_bytes(sb[0x60:0x64], "little") & 0x80:  # INCOMPAT_64BIT: the high half of the block count
        blocks |= int.from_bytes(sb[0x150:0x154], "little") << 32
    return blocks * (1024 << int.from_bytes(sb[24:28], "little"))


def layout(instance, device):
    """What the guest shows: the scratch device, its partition number, its disk's and partitions' sizes (bytes) and
    the file system's size."""
    found = instance.run(LAYOUT.format(device=shlex.quote(device))).check().stdout
    lines = dict(line.split(" ", 1) for line in found.splitlines() if " " in line)
    disk_name, disk_sectors = lines["disk"].split()
    return {
        "device": lines["device"],
        "partition": int(lines["partition"]),
        "disk": f"/dev/{disk_name}",
        "disk_bytes": int(disk_sectors) * 512,
        "partitions": {int(k[1:]): int(v) * 512 for k, v in lines.items() if k[:1] == "p" and k[1:].isdigit()},
        "fs_bytes": ext_size(lines.get("superblock", "")),
    }


@pytest.mark.cernvm_context(ucernvm={"resize_rootfs": RESIZE_ROOTFS})
def test_small_scratch_disk(request, cernvm_target):
    check_scratch_size(request, cernvm_target, "small")


@pytest.mark.cernvm_context(ucernvm={"resize_rootfs": RESIZE_ROOTFS})
def test_large_scratch_disk(request, cernvm_target):
    check_scratch_size(request, cernvm_target, "large")


def check_scratch_size(request, cernvm_target, size):
    """Boot a fresh instance with the profile's ``size`` disk and check its scratch file system's size and layout."""
    gib = expect_ahead(cernvm_target, "scratch.disk_sizes")[size]
    instance = fresh_instance_with_disk(request, cernvm_target, "scratch.partitions", gib)
    rule = expect(instance, "scratch.partitions")
    default, slack = rule.default_size * MIB, rule.slack * MIB
    mountpoint = expect(instance, "scratch.mountpoint")
    mount = instance.host.mount_point(mountpoint)
    assert mount.exists, f"no scratch disk mounted at {mountpoint} (a {gib} GiB disk)"
    found = layout(instance, mount.device)
    where = f"the {size} scratch disk ({gib} GiB, resize_rootfs={RESIZE_ROOTFS}; profile {instance.profile.name!r})"
    assert found["disk_bytes"] == gib * GIB, (
        f"{where}: the guest sees {found['disk']} as {found['disk_bytes'] / GIB:g} GiB, not the {gib} GiB asked for"
    )
    assert found["partition"] == 1, (
        f"{where}: the scratch file system is on {found['device']}, "
        + ("the whole disk without a partition table" if found["partition"] == 0 else f"partition {found['partition']}")
        + f"; µCernVM puts it on partition 1 of {found['disk']}"
    )
    split = RESIZE_ROOTFS == "0" and gib * GIB > default
    wanted = default if split else gib * GIB
    fs = found["fs_bytes"]
    assert fs is not None, f"{where}: {found['device']} holds no ext2/3/4 file system"
    assert wanted - slack <= fs <= wanted, (
        f"{where}: the scratch file system is {fs / MIB:.0f} MiB, expected "
        + (
            f"the default {default // MIB} MiB (the disk is larger)"
            if split
            else f"the whole disk, {wanted // MIB} MiB"
        )
        + f" (less at most {slack // MIB} MiB); partitions: "
        + ", ".join(f"{n}: {b / MIB:.0f} MiB" for n, b in sorted(found["partitions"].items()))
    )
    if split:
        rest = found["partitions"].get(2, 0)
        assert rest >= gib * GIB - default - 2 * slack, (
            f"{where}: partition 2 should take the rest of the disk ({(gib * GIB - default) / MIB:.0f} MiB), "
            f"it is {rest / MIB:.0f} MiB"
        )
