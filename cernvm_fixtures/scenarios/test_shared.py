"""Shared folders: a file written on one side is read on the other, through the profile's mechanism."""

import secrets
import shlex

import pytest

from cernvm_fixtures import expect

FSTYPES = {"9p": "9p", "vboxsf": "vboxsf", "sshfs": "fuse.sshfs", "virtiofs": "virtiofs"}


def folders(cernvm):
    mechanism = expect(cernvm, "shared.mechanism")
    if not cernvm.shared_folders:
        pytest.skip(f"target {cernvm.target.name!r} has no shared_folders configured")
    return mechanism, {name: expect(cernvm, "shared.path").format(name=name) for name in cernvm.shared_folders}


def test_shared_folders_mounted(cernvm, cernvm_host):
    mechanism, guest_paths = folders(cernvm)
    for name, guest in guest_paths.items():
        mount = cernvm_host.mount_point(guest)
        assert mount.exists, f"shared folder {name!r} is not mounted at {guest} (expected a {mechanism} mount)"
        fstype = FSTYPES.get(mechanism)
        assert fstype is None or mount.filesystem == fstype, (
            f"shared folder {name!r} at {guest} is a {mount.filesystem} mount, expected {fstype}"
        )


def test_host_to_guest(cernvm):
    _, guest_paths = folders(cernvm)
    for name, guest in guest_paths.items():
        token = secrets.token_hex(8)
        (cernvm.shared_folders[name] / f"from-host-{token}").write_text(token)
        result = cernvm.run(f"cat {shlex.quote(f'{guest}/from-host-{token}')}")
        assert result.succeeded and result.stdout == token, (
            f"a file written on the host into shared folder {name!r} is not readable at {guest}: "
            f"{result.stderr.strip() or result.stdout!r}"
        )


def test_guest_to_host(cernvm):
    _, guest_paths = folders(cernvm)
    for name, guest in guest_paths.items():
        token = secrets.token_hex(8)
        result = cernvm.run(f"printf %s {token} > {shlex.quote(f'{guest}/from-guest-{token}')} && sync")
        host_file = cernvm.shared_folders[name] / f"from-guest-{token}"
        assert result.succeeded and host_file.is_file() and host_file.read_text() == token, (
            f"a file written in the guest at {guest} does not appear in {cernvm.shared_folders[name]} on the host"
            f"{': ' + result.stderr.strip() if result.stderr.strip() else ''}"
        )
