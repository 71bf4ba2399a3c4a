"""The attack rows of the fault and attack matrix (issue 26): each row an attack on the harness, each column a
provider; a cell is the outcome of the regression test that plays that attack on that provider (marked
``@pytest.mark.attack_row(row, provider)``), or ``n/a`` where the attack cannot apply, with the reason printed.
A cell whose test did not run in this tier shows ``-``.
"""

from __future__ import annotations

import pytest

PROVIDERS = ("docker", "kvm", "virtualbox", "ec2", "openstack", "gce", "azure")

ROWS: dict[str, dict[str, str]] = {
    "forged tags on a foreign resource": {
        "docker": "labels are fixed when a container is created, by whoever holds the Docker socket (root-equivalent)",
        "kvm": "a domain's metadata is written only with the libvirt access that can destroy the domain anyway",
        "virtualbox": "extradata of this user's VMs: whoever can write it can unregister the VM anyway",
    },
    "a foreign resource with our name pattern": {},
    "a hostile guest through a shared folder": {
        "docker": "a bind mount: the container sees the share as mounted, no server of the harness runs",
        "virtualbox": "vboxsf is served by the hypervisor, not by the harness",
        "ec2": "no shared folders on a cloud",
        "openstack": "no shared folders on a cloud",
        "gce": "no shared folders on a cloud",
        "azure": "no shared folders on a cloud",
    },
    "a malicious image (backing file, extent)": {
        "docker": "images are imported as root file system tarballs; qemu-img never reads them",
        "kvm": "boots ISO images only: no disk image of the user's is opened by qemu-img or QEMU",
        "virtualbox": "boots ISO images only: no disk image of the user's is opened by qemu-img or VirtualBox",
        "openstack": "a disk image is uploaded as it is (qemu-img never opens it here); Nova and Glance refuse a "
        "qcow2 with a backing or data file themselves (OSSA-2024-001)",
    },
    "a planted upload": {
        "docker": "nothing is uploaded",
        "kvm": "nothing is uploaded; the image is a local file",
        "virtualbox": "nothing is uploaded; the image is a local file",
        "ec2": "every launch uploads and imports its own snapshot; nothing found by name is reused",
    },
}
"""Per row, the providers it cannot apply to and why (n/a); every other cell needs a test marked for it."""

PROPERTY = "attack_row"

_cells: dict[str, dict[str, str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "attack_row(row, *providers): this test plays an attack row of the matrix")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    for mark in item.iter_markers("attack_row"):
        row, *providers = mark.args
        assert row in ROWS, f"{item.nodeid}: unknown attack row {row!r}"
        report.user_properties.extend((PROPERTY, f"{row}\0{provider}") for provider in providers)
    return report


CONTRACT_ROWS = {"fields_without_our_mark_are_not_swept": "a foreign resource with our name pattern"}
"""Provider contract cases (the package's, unmarked) that play an attack row on every provider."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not (report.when == "call" or not report.passed):
        return
    played = [str(value).split("\0") for name, value in report.user_properties if name == PROPERTY]
    parts = report.nodeid.split("::")
    if len(parts) == 3 and "test_contract" in parts[0] and parts[2].removeprefix("test_") in CONTRACT_ROWS:
        provider = parts[1].removeprefix("Test").removesuffix("Contract").lower()
        played.append([CONTRACT_ROWS[parts[2].removeprefix("test_")], provider])
    for row, provider in played:
        mark = "n/a" if report.skipped else "ok" if report.passed else "FAIL"
        cells = _cells.setdefault(row, {})
        if cells.get(provider) != "FAIL":
            cells[provider] = mark


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _cells:
        return
    terminalreporter.section("attack rows (regression tests of each attack on each provider)")
    width = max(len(row) for row in ROWS)
    terminalreporter.write_line(" " * width + "  " + "  ".join(f"{p:<10}" for p in PROVIDERS))
    reasons = []
    for row, na in ROWS.items():
        cells = _cells.get(row, {})
        line = [cells.get(p) or ("n/a" if p in na else "-") for p in PROVIDERS]
        terminalreporter.write_line(f"{row:<{width}}  " + "  ".join(f"{c:<10}" for c in line))
        reasons += [f"  {row} / {p}: n/a: {why}" for p, why in na.items() if p not in cells]
    for line in reasons:
        terminalreporter.write_line(line)
