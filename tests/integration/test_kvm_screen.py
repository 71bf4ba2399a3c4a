"""A boot that stops on real KVM (libvirt, TCG here) with µCernVM's message on the screen and nothing on the serial
port: the failure report carries the screenshot, it shows the message, and ``cernvm-fixtures screen`` takes it
again from the kept domain."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

from ..helpers import cli, domains_under, ledger_entries, run_pytest, subprocess_env, write_work

REASON = "Unable to mount cvmfs root filesystem!"
CONFIG = """
[targets.kvm]
provider = "kvm"
image = "appliance"
deadlines = { running = 60, reachable = 25, login = 30, ready = 30 }
"""
TEST = """
import pytest

# a CernVM-FS server that refuses at once (the guest's own loopback): the bootloader stops within seconds with
# µCernVM's message on tty0, as the no-stratum1 variant does after its server's timeouts
@pytest.mark.cernvm_context(ucernvm={"cvmfs_server": "127.0.0.1:9"})
def test_uses(cernvm):
    pass
"""
VGA_TEXT = (80, 25, 9, 16)
"""Columns, rows and a character cell's pixels of the VGA text mode the appliance's console stays in (no DRM
driver): the screenshot is 720x400."""


def vga_memory(domain: str) -> list[bytes]:
    """The characters of the VGA text memory (physical 0xB8000, 32 KiB: character and attribute per cell), row by
    row. The screen shows 25 consecutive rows of it, from where the kernel's console last scrolled to."""
    import libvirt

    columns = VGA_TEXT[0]
    conn = libvirt.open("qemu:///system")
    try:
        memory = conn.lookupByName(domain).memoryPeek(0xB8000, 0x8000, libvirt.VIR_MEMORY_PHYSICAL)
    finally:
        conn.close()
    characters = memory[::2]
    return [characters[r * columns : (r + 1) * columns] for r in range(len(characters) // columns)]


def lit_cells(path: Path) -> set[tuple[int, int]]:
    """The character cells of a VGA text screenshot that show something: 720x400, not blank."""
    from PIL import Image

    columns, rows, width, height = VGA_TEXT
    with Image.open(path) as image:
        assert (image.format, image.size) == ("PNG", (columns * width, rows * height)), (image.format, image.size)
        pixels = image.convert("RGB")
    colours = pixels.getcolors(1 << 16) or []
    assert len(colours) > 1, "blank: the whole screen is one colour"
    background = max(colours)[1]
    return {
        (r, c)
        for r in range(rows)
        for c in range(columns)
        if any(
            pixels.getpixel((c * width + x, r * height + y)) != background for x in range(width) for y in range(height)
        )
    }


def assert_shows(path: Path, memory: list[bytes], reason: str) -> None:
    """The screenshot is lit exactly in the cells of 25 rows of the text memory (but the cursor), and those rows
    hold ``reason``."""
    columns, rows, _, _ = VGA_TEXT
    lit = lit_cells(path)
    for top in range(len(memory) - rows + 1):
        window = memory[top : top + rows]
        written = {(r, c) for r in range(rows) for c in range(columns) if window[r][c] not in b"\x00 \xff"}
        if not written - lit and len(lit - written) <= 1 and any(reason.encode() in row for row in window):
            return
    raise AssertionError(f"no 25 rows of the text memory holding {reason!r} match the screenshot {path}")


def test_a_boot_that_stops_reports_the_screen_showing_why(tmp_path):
    state = tmp_path / "state"
    work = write_work(tmp_path, config=CONFIG, tests={"test_it.py": TEST})
    junit = work / "junit.xml"
    result = run_pytest(
        work, subprocess_env(state), "test_it.py", f"--junitxml={junit}", "--cernvm-keep=on-failure", timeout=900
    )
    output = result.output
    names = sorted({e["name"] for e in ledger_entries(state)})
    try:
        (case,) = ElementTree.parse(junit).iter("testcase")
        error = case.find("error")
        assert error is not None, output[-6000:]
        assert "--- console log (tail) ---" not in error.text, "the ISO's serial port stays silent"
        shots = [p.get("value") for p in case.iter("property") if p.get("name") == "cernvm_screenshot"]
        assert len(shots) == 1, output[-6000:]
        shot = Path(shots[0])
        assert shot.is_relative_to(work / "cernvm-screens") and shot.name == "not-ready-reachable.png"
        network = r"(E +network: [^\n]*\n)?"
        message = rf"not ready: step 'reachable' failed after [^\n]*\n{network}E +screenshot: {re.escape(str(shot))}\n"
        assert re.search(message, error.text), error.text
        assert f"screenshot: {shot}" in output.split(": screen -", 1)[1], output[-6000:]
        # the text capture: no SSH to read the console from inside, so the VGA text memory read from outside
        texts = [p.get("value") for p in case.iter("property") if p.get("name") == "cernvm_screen_text"]
        assert texts and REASON in texts[0], output[-6000:]

        (name,) = names  # kept: the boot stopped, the screen stays as it was
        memory = vga_memory(name)
        assert_shows(shot, memory, REASON)
        again = cli(state, "screen", name, "--output", str(tmp_path / "again.png"), timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout == f"{tmp_path / 'again.png'} (720x400)\n"
        assert_shows(tmp_path / "again.png", memory, REASON)
    finally:
        for name in names:
            cli(state, "down", name, timeout=300)
    assert domains_under(state) == [] and ledger_entries(state) == []
