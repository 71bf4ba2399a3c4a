"""Reports from JUnit files pytest itself wrote: grid, Markdown, HTML, merge, night-to-night comparison."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_fixtures import cli, report
from cernvm_fixtures.errors import CernvmError

NIGHT = """
import pytest

@pytest.fixture(params={targets!r})
def target(request, record_property):
    record_property("cernvm_target", request.param)
    record_property("cernvm_ready_s", {{"kvm": "12.5", "docker": "1.5"}}.get(request.param, "3"))
    return request.param

def test_kernel(target):
    assert target not in {broken_kernel!r}, f"uname -r on {{target}} is 4.14.0, expected *.cernvm.x86_64"

def test_cvmfs(target):
    if target == "docker":
        pytest.skip("no kernel mount in a container")

def test_plain():
    pass
"""


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Four JUnit files (one pytest run each, made once for the module)."""
    tmp = tmp_path_factory.mktemp("nights")
    return {
        "kvm": night(tmp, "kvm", ["kvm"], broken_kernel=["kvm"]),
        "docker": night(tmp, "docker", ["docker"], broken_kernel=[]),
        "old": night(tmp, "old", ["kvm", "docker"], broken_kernel=["kvm"]),
        "new": night(tmp, "new", ["kvm", "docker", "ec2"], broken_kernel=["docker", "ec2"]),
    }


def night(tmp_path: Path, name: str, targets: list[str], broken_kernel: list[str]) -> Path:
    """A JUnit file written by pytest itself, its target tests carrying the plugin's property."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "test_night.py").write_text(NIGHT.format(targets=targets, broken_kernel=broken_kernel))
    out = folder / "junit.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:cernvm",
            "-p",
            "no:hypothesispytest",
            f"--junitxml={out}",
            "test_night.py",
        ],
        cwd=folder,
        capture_output=True,
    )
    return out


def test_grid_from_two_jobs(nights):
    kvm, docker = nights["kvm"], nights["docker"]
    cells = report.read([kvm, docker])
    columns, scenarios, at = report.grid(cells)
    assert columns == ["kvm", "docker"]
    assert scenarios[0] == "test_night::test_kernel", "failing scenarios come first"
    assert at["test_night::test_kernel", "kvm"].outcome == "failed"
    assert "expected *.cernvm.x86_64" in at["test_night::test_kernel", "kvm"].reason
    assert at["test_night::test_cvmfs", "docker"].outcome == "skipped"
    assert not any(c.scenario.endswith("test_plain") for c in cells), "tests without a target are not cells"


def test_markdown_lists_failures_first(nights):
    cells = report.read([nights["old"]])
    text = report.markdown(cells)
    assert text.startswith("# cernvm-fixtures: 1 failed, 2 passed, 1 skipped")
    assert text.index("## Failures") < text.index("## Target x scenario")
    assert "- **kvm** `test_night::test_kernel`: " in text and "expected \\*.cernvm.x86\\_64" in text
    assert "| `test_night::test_kernel` | FAIL | PASS |" in text


def test_markdown_shows_names_and_reasons_as_text_not_markup():
    """What a JUnit file holds (a test's failure message, a target or test name) reaches $GITHUB_STEP_SUMMARY as
    literal text: no HTML, no link or image, no extra table cell, no code span ended early."""
    hostile = "<img src=x onerror=alert(1)> | [log in](https://evil.example) ![t](https://t.example/p.png) *x*"
    cells = [
        report.Cell("test_a::test_`x`|y", "kvm|<b>ec2</b>", "failed", message=hostile),
        report.Cell("test_a::test_b", "docker", "passed"),
    ]
    text = report.markdown(cells)
    unescaped = re.compile(r"(?<!\\)[<\[|*]")
    failure = next(line for line in text.splitlines() if line.startswith("- "))
    assert not unescaped.search(failure.split("**", 2)[2].split("`")[-1]), failure
    assert "\\<img src=x onerror=alert(1)\\>" in failure and "\\[log in\\](https://evil.example)" in failure
    assert "``test_a::test_`x`|y``" in failure, "a fence longer than any backtick run in the name"
    header, _, *rows = text.split("## Target x scenario\n\n")[1].split("\n\n")[0].splitlines()
    assert [len(re.split(r"(?<!\\)\|", line)) for line in (header, *rows)] == [5, 5, 5], "one cell per column"
    assert "kvm\\|\\<b\\>ec2\\</b\\>" in header and "``test_a::test_`x`\\|y``" in rows[0]


def test_html_is_self_contained(nights):
    cells = report.read([nights["new"]])
    page = report.to_html(cells)
    assert not re.search(r"<(script|link|img)\b|\bsrc=", page), "no external resources"
    assert "<details><summary>FAIL</summary>" in page and "expected *.cernvm.x86_64" in page
    assert 'id="timings"' in page and "12.5 s" in page


def test_merge_keeps_every_case_and_its_properties(nights, tmp_path):
    a, b = nights["kvm"], nights["docker"]
    out = tmp_path / "merged.xml"
    report.merge_junit([a, b], out)
    assert sorted((c.column, c.scenario) for c in report.read([out])) == sorted(
        (c.column, c.scenario) for c in report.read([a, b])
    )


def test_compare_two_nights(nights):
    old, new = report.read([nights["old"]]), report.read([nights["new"]])
    diff = report.compare(old, new)
    assert {(c.column, c.scenario) for c in diff.new_failures} == {
        ("docker", "test_night::test_kernel"),
        ("ec2", "test_night::test_kernel"),
    }
    assert [(c.column, c.scenario) for c in diff.fixed] == [("kvm", "test_night::test_kernel")]
    assert diff.still_failing == []
    assert {c.column for c in diff.appeared} == {"ec2"}
    assert "new failures: 2" in diff.text() and "fixed: 1" in diff.text()


def test_cli_merge_and_compare(nights, tmp_path, capsys, monkeypatch):
    a, b = nights["kvm"], nights["docker"]
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = cli.main(
        [
            "report",
            "merge",
            str(a),
            str(b),
            "--markdown",
            str(tmp_path / "r.md"),
            "--html",
            str(tmp_path / "r.html"),
            "--out-junit",
            str(tmp_path / "all.xml"),
            "--previous",
            str(b),
            "--step-summary",
            "--fail-on-failures",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "1 failed" in out and "kvm  test_night::test_kernel" in out
    assert summary.read_text() == (tmp_path / "r.md").read_text()
    assert "Since the previous run" in (tmp_path / "r.html").read_text()
    assert cli.main(["report", "compare", str(b), str(tmp_path / "all.xml")]) == 0
    assert "new failures: 1" in capsys.readouterr().out


def test_unreadable_junit_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuite><testcase")
    with pytest.raises(CernvmError, match=r"bad.xml: not a readable JUnit XML file"):
        report.read([bad])
    assert cli.main(["report", "merge", str(bad)]) == 2
    assert "bad.xml: not a readable JUnit XML file" in capsys.readouterr().err


CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.integration
def test_html_report_in_a_real_browser(nights, tmp_path):
    """Chromium renders the page: the grid is there and a failing cell opens its details."""
    page = tmp_path / "report.html"
    page.write_text(report.to_html(report.read([nights["new"]])).replace("<details>", "<details open>", 1))
    done = subprocess.run(
        [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = done.stdout
    assert '<table id="grid">' in dom, done.stderr[-2000:]
    assert dom.count('<td class="failed">') == 2 and "expected *.cernvm.x86_64" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            *CHROMIUM,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=900,500",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 5000


SCREENED = """
def test_boot(record_property):
    record_property("cernvm_target", "kvm")
    record_property("cernvm_screenshot", "screens/r1/cvmfx-r1-kvm-1/test_boot-kvm.png")
    record_property("cernvm_screen_text", "Unable to mount cvmfs root filesystem!")
    assert False, "not ready"
"""


def png(width: int = 72, height: int = 40) -> bytes:
    """A small two-colour PNG, as a screenshot of a text console would be."""
    import io

    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putpixel((3, 3), (170, 170, 170))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def screened(tmp_path) -> Path:
    """A JUnit file whose failing case names a screenshot (relative to the file, as written beside it) and its text."""
    (tmp_path / "test_screened.py").write_text(SCREENED)
    out = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:cernvm"]
        + ["-p", "no:hypothesispytest", f"--junitxml={out}", "test_screened.py"],
        cwd=tmp_path,
        capture_output=True,
    )
    shot = tmp_path / "screens" / "r1" / "cvmfx-r1-kvm-1" / "test_boot-kvm.png"
    shot.parent.mkdir(parents=True)
    shot.write_bytes(png())
    return out


def test_html_shows_the_screenshot_inline_and_the_screen_text(screened, tmp_path):
    import base64

    (cell,) = report.read([screened])
    shot = tmp_path / "screens" / "r1" / "cvmfx-r1-kvm-1" / "test_boot-kvm.png"
    assert cell.screenshots == (shot,) and cell.screen_texts == ("Unable to mount cvmfs root filesystem!",)
    page = report.to_html([cell])
    embedded = re.findall(r'<img class="screen" src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [shot.read_bytes()], "small: inside the page itself"
    assert '<pre class="screen-text">Unable to mount cvmfs root filesystem!</pre>' in page
    assert f"(screenshot: `{shot}`)" in report.markdown([cell])
    linked = report.to_html([cell], base=tmp_path / "html", embed_limit=0)
    assert '<img class="screen" src="../screens/r1/cvmfx-r1-kvm-1/test_boot-kvm.png"' in linked, "large: linked"
    shot.unlink()
    assert f"screenshot {shot}: not found" in report.to_html([cell])


def test_the_terminal_grid_orders_scenarios_by_name_and_shows_each_cells_last_outcome():
    from types import SimpleNamespace

    def reported(nodeid, target, image=None):
        properties = [("cernvm_target", target)] + ([("cernvm_image_label", image)] if image else [])
        return SimpleNamespace(nodeid=nodeid, user_properties=properties)

    stats = {
        "passed": [reported("t.py::test_b[kvm]", "kvm"), reported("t.py::test_a[docker]", "docker")],
        "error": [reported("t.py::test_b[kvm]", "kvm")],  # passed, then an error in teardown
        "skipped": [reported("t.py::test_a[kvm-x]", "kvm", image="x"), SimpleNamespace(nodeid="t.py::plain")],
    }
    lines = report.text_grid(report.cells_of(stats))
    assert [line.split() for line in lines] == [
        ["kvm", "docker", "kvm", "/", "x"],
        ["t.py::test_a", "-", "PASSED", "SKIPPED"],
        ["t.py::test_b", "ERROR", "-", "-"],
    ]
    assert report.text_grid([]) == []


def test_the_kept_lines_say_how_to_log_in_and_remove():
    lines = report.kept_lines([{"name": "cvmfx-1-kvm-2", "target": "kvm", "login": "ssh -p 2222 root@127.0.0.1"}])
    assert lines == [
        "cvmfx-1-kvm-2 (kvm):",
        "  log in:  ssh -p 2222 root@127.0.0.1",
        "  remove:  cernvm-fixtures down cvmfx-1-kvm-2",
    ]


def test_columns_name_image_profile_and_verification_and_skips_say_why():
    """Issue 28: a release engineer reads what each column ran (image, profile, real engine / emulator / stand-in),
    why a cell was skipped, and a failure's whole first paragraph, advice included."""
    advice = "scratch disk /dev/vdb is 19 GiB, expected 20 GiB\nfix: give the target disk_size = 20 (GiB)\n\nlater"
    facts = {
        "cernvm_image": "ucernvm-prod.2021.05-1.iso",
        "cernvm_profile": "cernvm4",
        "cernvm_verification": "stand-in",
    }
    cells = [
        report.Cell("test_scratch::test_size", "ec2", "failed", message=advice, properties=facts),
        report.Cell(
            "test_cable::test_cable", "ec2", "skipped", message="ec2 cannot pull a cable: a cloud", properties={}
        ),
        report.Cell("test_kernel::test_release", "kvm", "passed", properties={"cernvm_verification": "real engine"}),
    ]
    text = report.markdown(cells)
    assert "| ec2 | ucernvm-prod.2021.05-1.iso | cernvm4 | stand-in |" in text
    assert "| kvm | ? | ? | real engine |" in text
    assert "expected 20 GiB fix: give the target disk\\_size = 20 (GiB)" in text, "the advice is not cut off"
    assert "later" not in text, "the first paragraph only"
    assert "`test_cable::test_cable`: ec2 cannot pull a cable: a cloud" in text
    page = report.to_html(cells)
    assert "verified on: stand-in" in page and "ec2 cannot pull a cable: a cloud" in page
    assert "fix: give the target disk_size = 20 (GiB)" in page
