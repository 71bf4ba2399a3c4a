"""A boot that never gets ready on real KVM (libvirt, TCG here): the failure report carries the guest's screen, and
``cernvm-fixtures screen`` takes it again from the kept domain."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from ..helpers import cli, domains_under, ledger_entries, pytest_command, subprocess_env, write_work

pytestmark = pytest.mark.integration

CONFIG = """
[targets.kvm]
provider = "kvm"
image = "appliance:no-ssh"
deadlines = { running = 60, reachable = 20, login = 30, ready = 30 }
"""
"""The appliance variant whose SSH server never starts: readiness stops at 'reachable' with the kernel's messages on
the screen (x4 under TCG)."""
VGA_TEXT = (720, 400)
"""80x25 characters of 9x16 pixels: the VGA text mode the appliance's console stays in (it loads no DRM driver)."""


def assert_screen(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", VGA_TEXT), (image.format, image.size)
        assert len(image.convert("RGB").getcolors(1 << 16) or ()) > 1, "blank: the whole screen is one colour"


def test_a_readiness_failure_reports_the_screen_and_the_kept_domain_shows_it_again(tmp_path):
    state = tmp_path / "state"
    work = write_work(tmp_path, config=CONFIG, tests={"test_it.py": "def test_uses(cernvm):\n    pass\n"})
    junit = work / "junit.xml"
    result = subprocess.run(
        pytest_command("test_it.py", f"--junitxml={junit}", "--cernvm-keep=on-failure"),
        cwd=work,
        env=subprocess_env(state),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    names = sorted({e["name"] for e in ledger_entries(state)})
    try:
        (case,) = ElementTree.parse(junit).iter("testcase")
        error = case.find("error")
        assert error is not None, output[-6000:]
        shots = [p.get("value") for p in case.iter("property") if p.get("name") == "cernvm_screenshot"]
        assert len(shots) == 1, output[-6000:]
        shot = Path(shots[0])
        assert shot.is_relative_to(work / "cernvm-screens") and shot.name == "not-ready-reachable.png"
        assert_screen(shot)
        assert re.search(
            rf"not ready: step 'reachable' failed after [^\n]*\nE +screenshot: {re.escape(str(shot))}\n", error.text
        )
        assert "screen -" in output and f"screenshot: {shot}" in output

        (name,) = names
        again = cli(state, "screen", name, "--output", str(tmp_path / "again.png"), timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout == f"{tmp_path / 'again.png'} (720x400)\n"
        assert_screen(tmp_path / "again.png")
    finally:
        for name in names:
            cli(state, "down", name, timeout=300)
    assert domains_under(state) == [] and ledger_entries(state) == []
