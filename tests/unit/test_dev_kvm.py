"""``./dev setup``'s /dev/kvm step, run on a stand-in file: CernVM's rule (group kvm, 0660 or more open), idempotent."""

from __future__ import annotations

import grp
import os
import re
import subprocess
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[2] / "dev"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root, as ./dev setup does")


def setup_kvm(device: Path, rule: Path) -> subprocess.CompletedProcess:
    """The script's own functions, with the device and rule paths pointed at test files and the timing stubbed."""
    text = DEV.read_text()
    functions = text[text.index("KVM_DEVICE=") : text.index("start_small_domain() {")]
    script = (
        f"set -euo pipefail\n{functions}\nKVM_DEVICE={device}\nKVM_RULE={rule}\n"
        'say() { echo "== $*"; }\ncheck_domain_start() { echo timed; }\nsetup_kvm\n'
    )
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("group", "mode", "changed"),
    [("root", 0o600, True), ("kvm", 0o600, True), ("kvm", 0o660, False), ("root", 0o666, False)],
)
def test_setup_applies_the_documented_access_once(tmp_path, group, mode, changed):
    device, rule = tmp_path / "kvm", tmp_path / "rules.d" / "65-kvm.rules"
    device.touch()
    os.chown(device, 0, grp.getgrnam(group).gr_gid)
    device.chmod(mode)
    first = setup_kvm(device, rule)
    assert first.returncode == 0, first.stderr
    st = device.stat()
    if changed:
        assert (grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == ("kvm", 0o660)
    else:
        assert (grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == (group, mode), "a usable device is left alone"
    assert rule.read_text().strip() == 'KERNEL=="kvm", GROUP="kvm", MODE="0660"'
    assert re.search(r"was root:\w+ \d+\).*\ntimed", first.stdout), first.stdout
    again = setup_kvm(device, rule)
    assert again.returncode == 0 and again.stdout == "", "a second run changes and times nothing"


def test_no_device_no_change(tmp_path):
    result = setup_kvm(tmp_path / "missing", tmp_path / "65-kvm.rules")
    assert result.returncode == 0 and result.stdout == ""
    assert not (tmp_path / "65-kvm.rules").exists()
