"""/dev/shm (CernVM's release checklist): POSIX shared memory is a writable file system of its own (a tmpfs)."""

import posixpath
import secrets
import shlex

from cernvm_fixtures import expect


def containing_mount(cernvm_host, path):
    """The mount point a path lies on (the longest mount point that is a prefix of it)."""
    found = [m.path for m in cernvm_host.mount_point.get_mountpoints() if path.startswith(m.path.rstrip("/") + "/")]
    return max(found, key=len, default="/")


def test_dev_shm_is_a_writable_tmpfs(cernvm, cernvm_host):
    path = expect(cernvm, "shm.path")
    fstype = expect(cernvm, "shm.fstype")
    mount = cernvm_host.mount_point(path)
    if not mount.exists:
        on = containing_mount(cernvm_host, path)
        where = (
            f"it is a directory on the {cernvm_host.mount_point(on).filesystem} mount {on}"
            if cernvm.run(f"test -d {shlex.quote(path)}").succeeded
            else "it does not exist"
        )
        raise AssertionError(
            f"{path} is not mounted (expected a writable {fstype}); {where} (profile {cernvm.profile.name!r})"
        )
    assert mount.filesystem == fstype, f"{path} is a {mount.filesystem} mount of {mount.device}, expected {fstype}"
    token = secrets.token_hex(8)
    probe = shlex.quote(posixpath.join(path, f"cvmfx-shm-{token}"))
    result = cernvm.run(f"printf %s {token} > {probe} && cat {probe}; status=$?; rm -f {probe}; exit $status")
    assert result.succeeded and result.stdout == token, (
        f"{path} ({fstype}) is not writable: {result.stderr.strip() or repr(result.stdout)}"
    )
