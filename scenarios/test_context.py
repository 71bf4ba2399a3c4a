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


@pytest.mark.cernvm_context(ucernvm={"cvmfs_branch": "cernvm-fixtures-check"})
def test_ucernvm_block_delivered(cernvm):
    path = expect(cernvm, "context.user_data_file")
    recorded = cernvm.run(f"cat {shlex.quote(path)}").stdout
    assert "[ucernvm-begin]" in recorded and "cvmfs_branch=cernvm-fixtures-check" in recorded, (
        f"the [ucernvm-begin] block asked for by the test is not in the recorded user data at {path}"
    )
    ucontext = cernvm.expected("context.ucontext_file")
    if ucontext:
        parsed = cernvm.run(f"cat {shlex.quote(ucontext)}")
        assert "cvmfs_branch=cernvm-fixtures-check" in parsed.stdout.splitlines(), (
            f"the bootloader did not parse the [ucernvm-begin] block into {ucontext}: "
            f"{parsed.stderr.strip() or parsed.stdout.strip() or 'empty'}"
        )
