"""The scratch disk: the first empty disk, formatted and mounted by the bootloader, with its version file."""

import re
import shlex

from cernvm_fixtures import expect


def test_scratch_disk_mounted(cernvm, cernvm_host):
    mountpoint = expect(cernvm, "scratch.mountpoint")
    mount = cernvm_host.mount_point(mountpoint)
    assert mount.exists, f"no scratch disk mounted at {mountpoint} (profile {cernvm.profile.name!r})"
    fstype = cernvm.expected("scratch.fstype")
    assert fstype is None or mount.filesystem == fstype, (
        f"{mountpoint} is a {mount.filesystem} mount of {mount.device}, expected the {fstype} scratch disk"
    )
    label = cernvm.expected("scratch.label")
    if label:
        blkid = cernvm.run(f"blkid {shlex.quote(mount.device)}")
        assert f'LABEL="{label}"' in blkid.stdout, (
            f"scratch disk {mount.device} on {mountpoint} is not labelled {label}: "
            f"{blkid.stdout.strip() or blkid.stderr.strip()}"
        )
    files = cernvm.expected("scratch.files") or []
    missing = [path for path in files if not cernvm.run(f"test -s {shlex.quote(path)}").succeeded]
    assert not missing, f"the bootloader left no (or an empty) {', '.join(missing)} on the scratch disk {mountpoint}"


def test_bootloader_version_file(cernvm):
    expect(cernvm, "scratch.mountpoint")  # the bootloader keeps its version on the scratch disk: none, no file
    path = expect(cernvm, "scratch.version_file")
    pattern = expect(cernvm, "scratch.version")
    result = cernvm.run(f"cat {shlex.quote(path)}")
    assert result.succeeded, f"bootloader version file {path} is missing: {result.stderr.strip()}"
    version = result.stdout.strip()
    assert re.match(pattern, version), f"bootloader version {version!r} in {path} does not match {pattern!r}"
