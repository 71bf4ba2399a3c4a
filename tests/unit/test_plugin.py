"""The plugin in a pytest run of its own (pytester), on the local provider: warnings are errors in every run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from ..helpers import CHILD, LOCAL_TARGETS

A_TEST = """
def test_uname(cernvm):
    assert cernvm.run("uname -s").stdout.strip() == "Linux"

def test_hostname(cernvm_host):
    assert cernvm_host.run("echo $CVMFX_MACHINE").stdout.startswith("cvmfx-")
"""


@pytest.fixture
def project(pytester: pytest.Pytester, local_provider):
    """A project declaring two local targets; runs see warnings as errors."""
    pytester.makefile(".toml", cernvm=LOCAL_TARGETS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-W", "error", "-p", "no:cacheprovider", "-rA", *CHILD, *args)


def ledger(state) -> list[dict]:
    return [json.loads(p.read_text()) for p in state.glob("runs/*/ledger/*.json")]


def test_every_test_runs_on_every_target_with_the_target_as_id(project, local_provider):
    project.makepyfile(test_it=A_TEST)
    result = run(project, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_uname[[]alpha[]] PASSED*", "*test_hostname[[]beta[]] PASSED*"])
    assert ledger(local_provider) == []
    assert not list(local_provider.glob("runs/*")), "run directory left behind"


def test_k_selects_a_target(project):
    project.makepyfile(test_it=A_TEST)
    result = run(project, "-k", "beta", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    assert "[alpha]" not in result.stdout.str().split("short test summary")[0].split("collected")[1].split("PASSED")[-1]


def test_summary_grid_names_targets_and_scenarios(project):
    project.makepyfile(
        test_it=A_TEST
        + """
import pytest

@pytest.mark.cernvm_targets("alpha")
def test_only_alpha(cernvm):
    assert False, "deliberate"
"""
    )
    result = run(project)
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    grid = result.stdout.str().split("cernvm: target x scenario", 1)[1].splitlines()[1:5]
    assert re.split(r"\s+", grid[0].strip()) == ["alpha", "beta"]
    rows = {line.split()[0]: line.split()[1:] for line in grid[1:]}
    assert rows == {
        "test_it.py::test_hostname": ["PASSED", "PASSED"],
        "test_it.py::test_only_alpha": ["FAILED", "SKIPPED"],
        "test_it.py::test_uname": ["PASSED", "PASSED"],
    }


def test_cernvm_targets_marker_skips_other_targets_with_a_reason(project):
    project.makepyfile(
        test_it="""
import pytest

@pytest.mark.cernvm_targets("beta")
def test_beta(cernvm):
    pass
"""
    )
    result = run(project)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*applies to targets beta, not alpha*"])


FAILING = """
def test_fails(cernvm):
    assert cernvm.run("true").succeeded
    assert False, "deliberate"
"""


@pytest.mark.parametrize(
    "keep,kept", [("never", False), ("on-failure", True), ("always", True)], ids=["never", "on-failure", "always"]
)
def test_keep_policy_on_a_failing_test(project, local_provider, keep, kept):
    project.makepyfile(test_it=FAILING)
    result = run(project, f"--cernvm-keep={keep}", "--cernvm-target=alpha")
    result.assert_outcomes(failed=1)
    entries = ledger(local_provider)
    output = result.stdout.str()
    try:
        if kept:
            assert [e["kept"] for e in entries] == [True], entries
            assert "cernvm: kept instances" in output and "cernvm-fixtures down" in output
            assert "log in:" in output
        else:
            assert entries == []
            assert "--cernvm-keep on-failure keeps it" in output
            assert "kept instances" not in output
    finally:
        _destroy_kept(local_provider)


def test_keep_on_failure_destroys_what_passed(project, local_provider):
    project.makepyfile(test_it=A_TEST)
    run(project, "--cernvm-keep=on-failure").assert_outcomes(passed=4)
    assert ledger(local_provider) == []


def test_keep_always_keeps_what_passed(project, local_provider):
    project.makepyfile(test_it=A_TEST)
    result = run(project, "--cernvm-keep=always", "--cernvm-target=beta")
    result.assert_outcomes(passed=2)
    try:
        assert [(e["target"], e["kept"]) for e in ledger(local_provider)] == [("beta", True)]
    finally:
        _destroy_kept(local_provider)


def _destroy_kept(state) -> None:
    from cernvm_fixtures.ledger import Resource
    from cernvm_fixtures.testing.local import LocalProvider

    for path in state.glob("runs/*/ledger/*.json"):
        LocalProvider.destroy_resource(Resource.from_json(path.read_text()))
    shutil.rmtree(state / "runs", ignore_errors=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cernvm-target=gamma"], "--cernvm-target: unknown target(s) gamma; * declares alpha, beta"),
        (["--cernvm-profile=nosuch"], "*profile 'nosuch': no such shipped profile or file*"),
        (["--cernvm-image=delta=x.iso"], "--cernvm-image delta=x.iso: 'delta' is not a selected target (alpha, beta)"),
    ],
    ids=["target", "profile", "image-target"],
)
def test_bad_options_are_a_usage_error(project, args, message):
    project.makepyfile(test_it=A_TEST)
    result = run(project, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--cernvm-image", "docker=appliance:no-cvmfs"],
            "",
            "--cernvm-image docker=appliance:no-cvmfs: 'appliance:no-cvmfs': the appliance's Docker tarball has no "
            "broken variants*",
        ),
        (
            ["--cernvm-image", "appliance:no-cvmfs"],
            "",
            "--cernvm-image appliance:no-cvmfs (target docker): 'appliance:no-cvmfs': *no broken variants*",
        ),
        ([], "cernvm_image = appliance:no-cvmfs", "tox.ini: cernvm_image = appliance:no-cvmfs (target docker): *"),
        (
            ["-n", "2", "--cernvm-image", "appliance:no-cvmfs"],
            "",
            "--cernvm-image appliance:no-cvmfs (target docker): *",
        ),
        (
            ["--cernvm-image", "kvm=/srv/nowhere/u.iso", "--cernvm-profile", "kvm=cernvm4"],
            "",
            "--cernvm-image kvm=/srv/nowhere/u.iso: '/srv/nowhere/u.iso' does not exist*",
        ),
        (["--cernvm-profile", "kvm=nosuch"], "", "--cernvm-profile kvm=nosuch: profile 'nosuch': no such shipped *"),
        (["--cernvm-release", "kvm=2021-05"], "", "--cernvm-release kvm=2021-05: *expected release:[[]BRANCH/[]]*"),
        (["--cernvm-image-base", "cernvm.cern.ch/releases"], "", "--cernvm-image-base *: expected an http*"),
        ([], "cernvm_keep = sometimes", "tox.ini: cernvm_keep = 'sometimes': expected one of never, on-failure, *"),
        ([], "cernvm_targets = gamma", "tox.ini: cernvm_targets: unknown target(s) gamma; built-in defaults *"),
    ],
    ids=[
        "image-of-a-target",
        "image-of-all",
        "ini-image",
        "xdist",
        "missing-iso",
        "profile",
        "release",
        "base",
        "keep",
        "ini",
    ],
)
def test_command_line_overrides_are_checked_at_load_naming_the_option(pytester, local_provider, args, ini, message):
    """A bad override stops the run at load with one error naming the option and value as given (not the config
    the target came from), before anything is created: not one setup error per test of the target."""
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_it=A_TEST)
    result = run(pytester, "--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert len([line for line in result.stderr.lines if line.startswith("ERROR:")]) == 1
    assert "built-in defaults: targets.docker" not in result.stderr.str()
    assert not (local_provider / "runs").exists() or not list((local_provider / "runs").iterdir()), "nothing made"


def test_a_value_for_every_target_stops_only_a_run_that_uses_one_that_cannot_take_it(pytester, local_provider):
    """``-k kvm --cernvm-image appliance:no-cvmfs`` runs the KVM tests (the docker targets' are deselected)."""
    pytester.makepyfile(test_it=A_TEST)
    result = run(pytester, "--collect-only", "-q", "-k", "kvm", "--cernvm-image", "appliance:no-cvmfs")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    result.stdout.fnmatch_lines(["test_it.py::test_uname[[]kvm[]]", "test_it.py::test_hostname[[]kvm[]]"])


def test_a_config_file_image_a_provider_cannot_boot_is_refused_at_load(pytester, local_provider):
    pytester.makefile(".toml", cernvm='[targets.box]\nprovider = "docker"\nimage = "appliance:no-cvmfs"\n')
    pytester.makepyfile(test_it=A_TEST)
    result = run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *cernvm.toml: targets.box.image: 'appliance:no-cvmfs': *no broken variants*"])


def test_bad_keep_value_is_rejected_by_the_option_parser(project):
    result = run(project, "--cernvm-keep=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cernvm-keep: invalid choice: 'sometimes'*"])


def test_bad_config_key_is_a_usage_error_naming_file_and_key(pytester, local_provider):
    pytester.makefile(".toml", cernvm=LOCAL_TARGETS + "boot_secs = 1\n")
    pytester.makepyfile(test_it=A_TEST)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cernvm.toml: targets.beta.boot_secs: unknown key; valid keys are boot_seconds, *"])


def test_bad_context_marker_names_the_test_and_valid_keys(project):
    project.makepyfile(
        test_it="""
import pytest

@pytest.mark.cernvm_context(user_data="x")
def test_it(cernvm):
    pass
"""
    )
    result = run(project, "--cernvm-target=alpha")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*test_it.py::test_it[[]alpha[]]: cernvm_context marker:*valid keys:*"])


def test_no_unknown_marker_warning_without_xdist(project):
    project.makepyfile(test_it=A_TEST)
    result = run(project, "-p", "no:xdist", "--cernvm-target=alpha")
    result.assert_outcomes(passed=2)
    assert "PytestUnknownMarkWarning" not in result.stdout.str()


@pytest.mark.slow
def test_xdist_groups_each_target_on_one_worker(project, local_provider):
    project.makeconftest("""
import os
import pytest

@pytest.fixture(autouse=True)
def where(cernvm):
    print("WHERE", os.environ["PYTEST_XDIST_WORKER"], cernvm.target.name, cernvm.name)
""")
    project.makepyfile(test_it=A_TEST + "\ndef test_third(cernvm):\n    pass\n")
    result = project.runpytest_subprocess(
        "-W", "error", "-p", "no:cacheprovider", "-rA", *CHILD, "-n", "2", "--dist", "loadgroup"
    )
    result.assert_outcomes(passed=6)
    seen = re.findall(r"^WHERE (gw\d) (alpha|beta) (\S+)$", result.stdout.str(), re.M)
    assert len(seen) == 6, result.stdout.str()
    for target in ("alpha", "beta"):
        workers = {w for w, t, _ in seen if t == target}
        instances = {i for _, t, i in seen if t == target}
        assert len(workers) == 1 and len(instances) == 1, f"{target} ran on {workers} with {instances}"
    assert ledger(local_provider) == []
    assert not list(local_provider.glob("runs/*")), "run directory left behind"


@pytest.mark.slow
def test_several_targets_get_workers_by_default_and_the_users_choice_wins(project, local_provider, monkeypatch):
    """Issue 28: a run of several targets overlaps their tests: one xdist worker per target (at most one per core),
    each target's tests on one; one target, --cernvm-workers=0 or the user's own -n get no extra workers."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no workers by default")
    project.makeconftest("""
import os
import pytest

@pytest.fixture(autouse=True)
def where(cernvm):
    print("WHERE", os.environ.get("PYTEST_XDIST_WORKER", "main"), cernvm.target.name)
""")
    project.makepyfile(test_it=A_TEST)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this test may run on a worker: its child is not one
    child = [a for a in CHILD if a != "--cernvm-workers=0"]

    def workers(*args: str) -> dict[str, set[str]]:
        result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *child, *args)
        result.assert_outcomes(passed=2 if "--cernvm-target=alpha" in args else 4)
        seen: dict[str, set[str]] = {}
        for worker, target in re.findall(r"^WHERE (\S+) (alpha|beta)$", result.stdout.str(), re.M):
            seen.setdefault(target, set()).add(worker)
        return seen

    auto = workers()
    assert auto.keys() == {"alpha", "beta"} and all(len(w) == 1 and "main" not in w for w in auto.values()), auto
    assert auto["alpha"] != auto["beta"], "two targets on two cores: on two workers"
    assert workers("--cernvm-workers=0") == {"alpha": {"main"}, "beta": {"main"}}
    assert workers("--cernvm-target=alpha") == {"alpha": {"main"}}, "one target: no workers"
    assert workers("-n", "0") == {"alpha": {"main"}, "beta": {"main"}}, "the user's -n wins"
    assert ledger(local_provider) == []


def test_a_bad_workers_value_is_refused_with_its_name(project):
    project.makepyfile(test_it=A_TEST)
    result = run(project, "--cernvm-workers=many")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--cernvm-workers 'many': expected auto or a number of workers (0: none)*"])


def test_the_xdist_scheduler_groups_a_target_test_by_its_target_longest_name_first():
    pytest.importorskip("xdist")
    from cernvm_fixtures.scheduling import TargetScheduling

    scheduling = TargetScheduling.__new__(TargetScheduling)  # only the grouping: no controller to schedule for
    scheduling.targets = sorted(["docker", "docker-bindmount", "kvm"], key=len, reverse=True)
    assert scheduling._split_scope("t.py::test_a[docker-bindmount]") == "cernvm-docker-bindmount"
    assert scheduling._split_scope("t.py::test_a[docker]") == "cernvm-docker"
    assert scheduling._split_scope("t.py::test_a[1-kvm]") == "cernvm-kvm", "another parameter beside the target"
    assert scheduling._split_scope("t.py::test_a[vbox]") == "t.py::test_a[vbox]"
    assert scheduling._split_scope("t.py::test_a[kvm]@mine") == "mine", "an xdist_group of its own wins"
    assert scheduling._split_scope("t.py::test_plain") == "t.py::test_plain"


def test_junit_cells_carry_the_instance_and_feed_the_report(project):
    from cernvm_fixtures import report

    project.makepyfile(
        test_it=A_TEST + "\ndef test_broken(cernvm):\n    assert cernvm.run('false').succeeded, 'false failed'\n"
    )
    junit = project.path / "junit.xml"
    run(project, f"--junitxml={junit}").assert_outcomes(passed=4, failed=2)
    cells = report.read([junit])
    assert {(c.column, c.scenario.split("::")[-1], c.outcome) for c in cells} >= {
        ("alpha", "test_uname", "passed"),
        ("beta", "test_broken", "failed"),
    }
    props = next(c.properties for c in cells if c.column == "alpha")
    assert props["cernvm_provider"] == "local" and float(props["cernvm_ready_s"]) >= 0
    assert {"cernvm_image", "cernvm_profile", "cernvm_ready_ready_s"} <= set(props)
    assert "false failed" in report.markdown(cells)


MATRIX = """
[targets.alpha]
provider = "local"

[targets.alpha.images]
one = {{ image = "appliance", profile = "{profile}" }}
two = {{ image = "appliance:no-ssh", profile = "{profile}" }}

[targets.beta]
provider = "local"
profile = "{profile}"
"""


@pytest.fixture
def matrix(pytester: pytest.Pytester, local_provider):
    """A project whose target alpha lists two images (the nightly matrix's image axis)."""
    from cernvm_fixtures.testing.local import PROFILE

    pytester.makefile(".toml", cernvm=MATRIX.format(profile=PROFILE))
    pytester.makepyfile(test_it=A_TEST)
    return pytester


def test_each_image_is_a_target_of_its_own_and_k_stays_natural(matrix):
    result = run(matrix, "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_uname[[]alpha-one[]] PASSED*", "*test_uname[[]alpha-two[]] PASSED*"])
    run(matrix, "-k", "alpha").assert_outcomes(passed=4, deselected=2)
    run(matrix, "-k", "two").assert_outcomes(passed=2, deselected=4)
    run(matrix, "-k", "alpha and one").assert_outcomes(passed=2, deselected=4)


def test_a_table_name_selects_all_its_images(matrix):
    result = run(matrix, "--cernvm-target", "alpha", "-v")
    result.assert_outcomes(passed=4)
    assert "[beta]" not in result.stdout.str()
    run(matrix, "--cernvm-target", "alpha-two").assert_outcomes(passed=2)


def test_matrix_cells_report_target_image_and_verification(matrix):
    from cernvm_fixtures import report

    junit = matrix.path / "junit.xml"
    result = run(matrix, f"--junitxml={junit}")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*alpha / one*alpha / two*beta*"])  # the summary grid's header
    cells = report.read([junit])
    assert {c.column for c in cells} == {"alpha / one", "alpha / two", "beta"}
    props = next(c.properties for c in cells if c.column == "alpha / two")
    assert (props["cernvm_target"], props["cernvm_image_label"], props["cernvm_image"]) == (
        "alpha",
        "two",
        "appliance:no-ssh",
    )
    assert props["cernvm_verification"] == "real engine"
    assert "| alpha / one | alpha / two | beta |" in report.markdown(cells)


SCREEN_TEXT = "Unable to mount cvmfs root filesystem!"
DRAWN = """
import pytest

@pytest.fixture(autouse=True)
def screen_device(monkeypatch):
    # the first virtual console's memory, as a file of the local machine (cwd: its directory)
    monkeypatch.setattr("cernvm_fixtures.instance.SCREEN_DEVICE", "vcsa1")
"""


def vcsa(text: str, rows: int = 25, columns: int = 80) -> bytes:
    """/dev/vcsa content: rows, columns, cursor; then (character, attribute) per cell."""
    lines = text.splitlines() + [""] * rows
    cells = b"".join(line.ljust(columns)[:columns].encode("cp437") for line in lines[:rows])
    return bytes([rows, columns, 0, 0]) + b"".join(bytes([c, 0x07]) for c in cells)


def screenshot_png() -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGB", (720, 400))
    image.putpixel((10, 10), (170, 170, 170))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def properties(junit, name: str) -> list[str]:
    from xml.etree import ElementTree

    return [p.get("value") for p in ElementTree.parse(junit).iter("property") if p.get("name") == name]


def test_a_failing_test_carries_its_instances_screen(project, local_provider, tmp_path):
    """The PNG goes beside the JUnit file (the run's own directory goes at the end), the report section names it and
    shows the text of tty1, and the JUnit case points at it."""
    (tmp_path / "screen.png").write_bytes(screenshot_png())
    (tmp_path / "vcsa1").write_bytes(vcsa(f"[    3.1] Loading...\n{SCREEN_TEXT}\n(initramfs) "))
    project.makeconftest(DRAWN)
    project.makepyfile(
        test_it=f"""
from pathlib import Path

def test_fails(cernvm):
    cernvm.put(Path({str(tmp_path / "screen.png")!r}), "screen.png")
    cernvm.put(Path({str(tmp_path / "vcsa1")!r}), "vcsa1")
    assert False, "deliberate"

def test_passes(cernvm):
    pass
"""
    )
    junit = project.path / "out" / "junit.xml"
    result = run(project, "--cernvm-target=alpha", f"--junitxml={junit}")
    result.assert_outcomes(failed=1, passed=1)
    (shot,) = map(Path, properties(junit, "cernvm_screenshot"))
    assert shot.parent.parent.parent == project.path / "out" / "cernvm-screens", shot
    assert shot.name == "test_it-test_fails-alpha.png" and shot.read_bytes() == (tmp_path / "screen.png").read_bytes()
    assert properties(junit, "cernvm_screen_text") == [f"[    3.1] Loading...\n{SCREEN_TEXT}\n(initramfs)"]
    output = result.stdout.str()
    section = output.split(": screen -", 1)[1].split("- cernvm ", 1)[0]
    assert f"screenshot: {shot}" in section and SCREEN_TEXT in section, output
    assert output.index(": console (tail) -") < output.index(": screen -") < output.index(": log in -")
    assert ledger(local_provider) == [] and not list(local_provider.glob("runs/*")), "the run still goes"


NO_TEXT = """
import pytest

@pytest.fixture(autouse=True)
def no_screen_text(monkeypatch):
    monkeypatch.setattr("cernvm_fixtures.instance.SCREEN_DEVICE", "/nonexistent/vcsa1")
"""
BROKEN_CAMERA = (
    NO_TEXT
    + """
@pytest.fixture(autouse=True)
def broken(monkeypatch):
    def screenshot(self, path):
        raise RuntimeError("the camera broke")
    monkeypatch.setattr("cernvm_fixtures.testing.local.LocalMachine.screenshot", screenshot)
"""
)


@pytest.mark.parametrize(
    "conftest,said",
    [
        (BROKEN_CAMERA, "no screenshot: the screenshot failed: RuntimeError: the camera broke"),
        (NO_TEXT, "no screenshot: a local machine shows no screen until a process writes screen.png"),
    ],
    ids=["raises", "unavailable"],
)
def test_a_screenshot_that_fails_never_hides_the_tests_failure(project, conftest, said):
    project.makeconftest(conftest)
    project.makepyfile(test_it=FAILING)
    junit = project.path / "junit.xml"
    result = run(project, "--cernvm-target=alpha", f"--junitxml={junit}")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "AssertionError: deliberate" in output and said in output, output
    assert "INTERNALERROR" not in output and "screen text" not in output
    assert properties(junit, "cernvm_screenshot") == [] and properties(junit, "cernvm_screen_text") == []


NOT_READY = """
import pytest

from cernvm_fixtures.screen import write_png
from cernvm_fixtures.testing.local import LocalMachine

PNG = {png!r}


def pytest_configure(config):
    # the machine still boots when readiness gives up: its screen is what it shows then
    def screenshot(self, path):
        return write_png(PNG, path)

    LocalMachine.screenshot = screenshot


def pytest_unconfigure(config):
    del LocalMachine.screenshot
"""


def test_a_readiness_failure_says_where_the_screenshot_is(pytester, local_provider):
    pytester.makefile(
        ".toml",
        cernvm=LOCAL_TARGETS.split("[targets.beta]")[0] + "boot_seconds = 30\ndeadlines = { reachable = 0.5 }\n",
    )
    pytester.makeconftest(NOT_READY.format(png=screenshot_png()))
    pytester.makepyfile(test_it="def test_uses(cernvm):\n    pass\n")
    junit = pytester.path / "junit.xml"
    result = run(pytester, f"--junitxml={junit}")
    result.assert_outcomes(errors=1)
    (shot,) = map(Path, properties(junit, "cernvm_screenshot"))
    assert shot.name == "not-ready-reachable.png" and shot.read_bytes() == screenshot_png()
    output = result.stdout.str()
    message = rf"not ready: step 'reachable' failed after [^\n]*\nE +screenshot: {re.escape(str(shot))}\n"
    assert re.search(message, output), output
    assert f"cernvm {shot.parent.name}: screen -" in output and ledger(local_provider) == []
