"""cvmfs: every configured repository is mounted read-only, probes OK and can be read.

As on a real CernVM, ``/cvmfs`` is an autofs mount: a repository is mounted when
something first touches it, so every check touches it first. The profile's
``cvmfs.fstype`` is a pattern (``*``: any type); where it does not apply (parrot
presents /cvmfs without a kernel mount) the mount checks are skipped, and so is
``cvmfs_config probe`` (it finds no cvmfs2 mount there), while the content
checks still run.
"""

import fnmatch
import shlex

import pytest

from cernvm_fixtures import expect


def repositories(cernvm):
    return expect(cernvm, "cvmfs.repositories")


def touch(cernvm, repos):
    """Access each repository once: autofs mounts it on first access (cvmfs_config setup on CernVM)."""
    cernvm.run(" ".join(["ls", "-d", *(shlex.quote(f"/cvmfs/{r}/.") for r in repos)]), timeout=300)


def test_repositories_mounted_read_only(cernvm, cernvm_host):
    fstype = expect(cernvm, "cvmfs.fstype")
    problems = []
    touch(cernvm, repositories(cernvm))
    for repo in repositories(cernvm):
        mount = cernvm_host.mount_point(f"/cvmfs/{repo}")
        if not mount.exists:
            problems.append(f"/cvmfs/{repo} is not mounted")
        elif not fnmatch.fnmatchcase(mount.filesystem, fstype):
            problems.append(f"/cvmfs/{repo} is mounted as {mount.filesystem}, expected {fstype}")
        elif "ro" not in mount.options:
            problems.append(f"/cvmfs/{repo} is mounted read-write ({','.join(mount.options)}), expected ro")
    assert not problems, "; ".join(problems) + f" (profile {cernvm.profile.name!r})"


def test_os_repository_is_the_root_source(cernvm, cernvm_host):
    os_mount = expect(cernvm, "cvmfs.os_mount")
    fstype = expect(cernvm, "cvmfs.fstype")
    mount = cernvm_host.mount_point(os_mount)
    assert mount.exists, f"the OS repository is not mounted at {os_mount}"
    assert fnmatch.fnmatchcase(mount.filesystem, fstype), (
        f"{os_mount} is {mount.filesystem}, expected the OS repository ({fstype})"
    )
    root_fstype = cernvm.expected("root.fstype")
    if root_fstype:
        root = cernvm_host.mount_point("/")
        assert root.filesystem == root_fstype, f"/ is a {root.filesystem} mount, expected {root_fstype} (the union)"
    for branch in ("lower", "upper"):
        path = cernvm.expected(f"root.{branch}")
        if path:
            assert cernvm.run(f"test -d {shlex.quote(path)}").succeeded, (
                f"the root's {branch} branch {path} is not a directory (profile {cernvm.profile.name!r})"
            )


def test_probe(cernvm):
    if not expect(cernvm, "cvmfs.probe"):
        pytest.skip(f"profile {cernvm.profile.name!r} does not expect cvmfs_config probe to work")
    repos = repositories(cernvm)
    # named explicitly: without arguments probe checks only $CVMFS_REPOSITORIES, empty on CernVM 4 unless the
    # context sets it ([cernvm] repositories=)
    result = cernvm.run(" ".join(["cvmfs_config", "probe", *map(shlex.quote, repos)]), timeout=300)
    lines = result.stdout.strip().splitlines()
    failed = [line for line in lines if not line.rstrip().endswith("OK")]
    assert result.succeeded and not failed, (
        f"cvmfs_config probe exited {result.exit_status}: {'; '.join(failed or lines) or result.stderr.strip()}"
    )
    for repo in repos:
        assert any(f"/cvmfs/{repo}" in line for line in lines), f"cvmfs_config probe did not probe {repo}: {lines}"


def test_content_readable(cernvm):
    for repo in repositories(cernvm):
        path = shlex.quote(f"/cvmfs/{repo}")
        listing = cernvm.run(f"ls -A {path}", timeout=300)
        assert listing.succeeded and listing.stdout.strip(), (
            f"/cvmfs/{repo} cannot be listed or is empty: {listing.stderr.strip() or 'no entries'}"
        )
