"""The Azure provisioning handshake's parts without a cloud or a guest: the fake WireServer's reading of health
reports (cloud-init's shapes) and the provisioning disc a stand-in boots with (the KVM forwards that reach the
WireServer from a stand-in: tests/unit/test_kvm_xml.py)."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import pycdlib
import pytest

from cernvm_fixtures.context import Context
from cernvm_fixtures.context.provisioning_iso import TAG_FILE, ovf_env, write_provisioning_iso

from ..fakes.azure.wireserver import (
    HEADERS,
    GoalState,
    HealthReportRefused,
    WireServer,
    health_report,
    health_state,
    read_goal_state,
    report_ready,
)

GOAL = GoalState("5f1c8a3e-0000-4000-8000-00000000c0de", "0d9f._cvmfx-r-azure", 1)


def test_a_report_as_cloud_init_builds_it_is_taken():
    assert health_state(health_report(GOAL), GOAL) == "Ready"
    assert health_state(health_report(GOAL, "NotReady"), GOAL) == "NotReady"


def test_the_goal_state_gives_what_cloud_init_reads():
    assert read_goal_state(GOAL.xml()) == GOAL


def replaced(old: str, new: str) -> bytes:
    return health_report(GOAL).replace(old.encode(), new.encode())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<Health><Container>", "not well-formed XML"),
        (b"<Report><GoalStateIncarnation>1</GoalStateIncarnation></Report>", "root element is 'Report'"),
        (replaced("<GoalStateIncarnation>1</GoalStateIncarnation>", ""), "no GoalStateIncarnation .*'1'"),
        (replaced(">1</GoalStateIncarnation>", ">2</GoalStateIncarnation>"), "GoalStateIncarnation is '2'.*'1'"),
        (replaced(GOAL.container_id, "another"), "ContainerId is 'another'; the goal state's is '5f1c8a3e"),
        (replaced(GOAL.instance_id, "other._vm"), "InstanceId is 'other._vm'; the goal state's is '0d9f._cvmfx"),
        (replaced("<State>Ready</State>", "<State>Fine</State>"), "State is 'Fine'; expected one of .*Ready"),
        (replaced("<State>Ready</State>", ""), "State is None"),
    ],
)
def test_a_malformed_or_foreign_report_is_refused_naming_what_is_wrong(body, message):
    with pytest.raises(HealthReportRefused, match=message):
        health_state(body, GOAL)


def test_the_wireserver_refuses_with_400_and_is_ready_only_after_a_ready_report():
    wire = WireServer(goal=GOAL).start()
    url = f"http://127.0.0.1:{wire.port}"
    try:
        for body, headers in [(replaced(GOAL.container_id, "x"), HEADERS), (health_report(GOAL), {})]:
            post = urllib.request.Request(f"{url}/machine?comp=health", data=body, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=10)
            assert refused.value.code == 400
        assert not wire.ready.is_set() and wire.states == []
        assert "ContainerId is 'x'" in wire.refused[0] and "x-ms-version is None" in wire.refused[1]
        assert report_ready(url) == 200
        assert wire.ready.is_set() and wire.states == ["Ready"]
    finally:
        wire.stop()


def test_the_provisioning_disc_holds_what_ucernvm_and_cloud_init_read(tmp_path: Path):
    context = Context(hostname="cvmfx-r-azure")
    path = write_provisioning_iso(context, tmp_path / "provisioning.iso")
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        names = {c.file_identifier().decode() for c in iso.list_children(udf_path="/") if c and c.is_file()}
        assert names == {"ovf-env.xml", "CustomData.bin", TAG_FILE}
        custom = _read(iso, "/CustomData.bin")
    finally:
        iso.close()
    assert custom == context.render()
    linux = ElementTree.fromstring(ovf_env(context)).find("{*}ProvisioningSection/{*}LinuxProvisioningConfigurationSet")
    assert linux is not None and base64.b64decode(linux.findtext("{*}CustomData") or "") == context.render()
    assert linux.findtext("{*}HostName") == "cvmfx-r-azure"


def _read(iso: pycdlib.PyCdlib, udf_path: str) -> bytes:
    import io

    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, udf_path=udf_path)
    return out.getvalue()
