"""Contextualization: the user data arrived, was recorded with its source, and took effect."""

import re
import shlex

import pytest

from cernvm_fixtures import expect


def test_hostname(cernvm):
    hostname = cernvm.run("hostname").check().stdout.strip()
    assert hostname == cernvm.context.hostname, (
        f"hostname is {hostname!r}, but the context asked for {cernvm.context.hostname!r}"
    )


def test_user_data_source(cernvm):
    path = expect(cernvm, "context.source_file")
    expected = expect(cernvm, "context.source")  # a regular expression: "ConfigDrive|OpenStack"
    result = cernvm.run(f"cat {shlex.quote(path)}")
    assert result.succeeded, f"no record of where the user data came from: {path} is missing"
    assert re.fullmatch(expected, result.stdout.strip()), (
        f"user data source is {result.stdout.strip()!r}, expected {expected!r}"
    )


def test_user_data_recorded(cernvm):
    path = expect(cernvm, "context.user_data_file")
    result = cernvm.run(f"cat {shlex.quote(path)}")
    assert result.succeeded, f"the user data was not recorded at {path}: {result.stderr.strip()}"
    assert result.stdout_bytes == cernvm.context.render(), (
        f"{path} differs from the user data the instance was given ({len(result.stdout_bytes)} vs "
        f"{len(cernvm.context.render())} bytes)"
    )


# cvmfs_branch names the OS repository (CernVM Launch's CI sets exactly this; an unknown one stops µCernVM's
# boot), resize_rootfs=no keeps the default scratch size: both harmless, and "no" shows the bootloader's 0/1.
UCERNVM = {"cvmfs_branch": "cernvm-prod.cern.ch", "resize_rootfs": "no"}


@pytest.mark.cernvm_context(ucernvm=UCERNVM)
def test_ucernvm_block_delivered(cernvm):
    path = expect(cernvm, "context.user_data_file")
    recorded = cernvm.run(f"cat {shlex.quote(path)}").stdout
    assert "[ucernvm-begin]" in recorded and "cvmfs_branch=cernvm-prod.cern.ch" in recorded, (
        f"the [ucernvm-begin] block asked for by the test is not in the recorded user data at {path}"
    )
    ucontext = cernvm.expected("context.ucontext_file")
    if ucontext:
        # [micro] parse_user_data: _UCONTEXT_<KEY IN CAPITALS>=<value>, yes/on/true as 1 and no/off/false as 0
        parsed = cernvm.run(f"cat {shlex.quote(ucontext)}")
        lines = parsed.stdout.splitlines()
        wanted = ["_UCONTEXT_CVMFS_BRANCH=cernvm-prod.cern.ch", "_UCONTEXT_RESIZE_ROOTFS=0"]
        missing = [line for line in wanted if line not in lines]
        assert parsed.succeeded and not missing, (
            f"the bootloader did not record the [ucernvm-begin] block in {ucontext} as µCernVM does "
            f"(missing {', '.join(missing)}): {parsed.stderr.strip() or parsed.stdout.strip() or 'empty'}"
        )
