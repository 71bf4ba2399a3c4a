"""``cernvm-fixtures``: validate an image, check the host, bring an instance up and keep it, list, log in, see its
screen, take down, sweep, build the appliance."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from . import config as configuration
from .dirs import state_dir
from .errors import CernvmError, ScreenUnavailable
from .instance import launch
from .ledger import Ledger, Resource, all_ledgers
from .providers import get as get_provider
from .run import Keep, Run
from .screen import png_size
from .transport.base import Login

STEPS = ("prepare", "engine create", "running", "reachable", "login", "ready")
"""The steps of ``up``, in order; ``prepare`` is everything before the engine's create call, from process start."""


def _config(args: argparse.Namespace) -> configuration.Config:
    return configuration.load(Path(args.config) if args.config else None, Path.cwd())


def _since_start() -> float:
    """Wall seconds since this process started (imports included), from /proc."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")


def _entries() -> list[tuple[Ledger, Resource]]:
    return [(ledger, r) for ledger in all_ledgers(state_dir()) for r in ledger.entries()]


def cmd_appliance_build(args: argparse.Namespace) -> int:
    from . import appliance

    variants = list(appliance.VARIANTS) if args.all else (args.variant or ["ok"])
    for variant in variants:
        started = time.monotonic()
        built = appliance.build(variant, force=args.force, log=print if args.verbose else None)
        print(f"{variant}: {built.directory} ({time.monotonic() - started:.1f} s)")
        print(f"  iso:            {built.iso}")
        print(f"  kernel, initrd: {built.kernel}, {built.initrd}")
        print(f"  docker tarball: {built.docker_tarball}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report

    loaded = _config(args)
    unknown = [n for n in args.targets if n not in loaded.targets]
    if unknown:
        declared = ", ".join(loaded.targets)
        raise configuration.ConfigError(f"unknown target(s) {', '.join(unknown)}; {loaded.origin} declares {declared}")
    lines, broken = report(loaded.targets[n] for n in (args.targets or list(loaded.targets)))
    print("\n".join(lines))
    return 1 if broken else 0


def cmd_up(args: argparse.Namespace) -> int:
    loaded = _config(args)
    name = args.target or loaded.enabled[0]
    if name not in loaded.targets:
        raise configuration.ConfigError(
            f"unknown target {name!r}; {loaded.origin} declares {', '.join(loaded.targets)}"
        )
    from .download import redact

    target = loaded.targets[name].with_overrides(
        args.image,
        args.profile,
        image_from=f"--image {redact(args.image)}" if args.image else None,
        profile_from=f"--profile {args.profile}" if args.profile else None,
    )
    run = Run(keep=Keep.ALWAYS)
    instance = launch(target, run)
    instance.machine.keep()
    total = _since_start()
    steps = dict(instance.timings)
    steps["prepare"] = total - sum(t for step, t in steps.items() if step != "prepare")
    split = ", ".join(f"{step} {steps[step]:.1f}" for step in STEPS if step in steps)
    print(f"{instance.name} is ready after {total:.1f} s ({split} s); it stays up until you take it down.")
    print(f"  log in:  {instance.login_command}")
    print(f"  screen:  cernvm-fixtures screen {instance.name}")
    print(f"  remove:  cernvm-fixtures down {instance.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = _entries()
    if not rows:
        print("nothing recorded")
        return 0
    now = time.time()
    for _, r in rows:
        state = "leftover" if r.leftover(now) else ("kept" if r.kept else "in use")
        print(f"{r.name:<32} {r.provider:<8} {r.kind:<10} run {r.run}  {state}")
    return 0


def _named(name: str) -> list[tuple[Ledger, Resource]]:
    found = [(ledger, r) for ledger, r in _entries() if r.name == name]
    if not found:
        known = sorted({r.name for _, r in _entries()})
        raise CernvmError(f"no instance named {name!r}; recorded: {', '.join(known) or 'none'}")
    return found


def cmd_login(args: argparse.Namespace) -> int:
    for _, r in _named(args.name):
        if "login_argv" in r.data:
            Login.from_data(r.data).exec()
        if "login" in r.data:
            raise CernvmError(
                f"{args.name}: recorded by an older version as text only; run it yourself: {r.data['login']}"
            )
    raise CernvmError(f"{args.name}: no login command recorded (only kept instances have one)")


def cmd_screen(args: argparse.Namespace) -> int:
    """A screenshot of a recorded instance's screen now (from its ledger entries, newest first: the machine's own
    entry is made after the directories and uploads it needs)."""
    output = Path(args.output) if args.output else Path.cwd() / f"{args.name}.png"
    reasons = []
    for _, r in sorted(_named(args.name), key=lambda pair: pair[1].created, reverse=True):
        try:
            path = get_provider(r.provider).screenshot_resource(r, output)
        except ScreenUnavailable as e:
            reasons.append(e.reason)
            continue
        width, height = png_size(path)
        print(f"{path} ({width}x{height})")
        return 0
    raise ScreenUnavailable(f"{args.name}: no screenshot: {reasons[0] if reasons else 'nothing recorded'}")


def cmd_down(args: argparse.Namespace) -> int:
    for ledger, r in reversed(_named(args.name)):
        get_provider(r.provider).destroy_resource(r)
        ledger.forget(r)
        print(f"destroyed {r.provider} {r.kind} {r.name}")
        Run(r.run).finish()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import find_leftovers, platform_id

    found = find_leftovers(_config(args), include_kept=args.include_kept)
    if not found:
        print("no leftovers")
        return 0
    failed = 0
    for ledger, r in found:
        if args.dry_run:
            print(f"would destroy {r.provider} {r.kind} {r.name} (run {r.run}): {platform_id(r)}")
            continue
        try:
            get_provider(r.provider).destroy_resource(r)
        except Exception as e:  # noqa: BLE001 - one resource's error (ours or an SDK's) must not stop the sweep
            failed += 1
            print(f"could not destroy {r.provider} {r.kind} {r.name} ({platform_id(r)}): {e}", file=sys.stderr)
            continue
        if ledger is not None:
            ledger.forget(r)
            Run(r.run).finish()
        print(f"destroyed {r.provider} {r.kind} {r.name} (run {r.run})")
    return 1 if failed else 0


def cmd_report_merge(args: argparse.Namespace) -> int:
    from . import report

    paths = [Path(p) for p in args.junit]
    cells = report.read(paths)
    if args.out_junit:
        report.merge_junit(paths, Path(args.out_junit))
    if args.markdown:
        Path(args.markdown).write_text(report.markdown(cells))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and args.step_summary:
        with open(summary, "a") as f:
            f.write(report.markdown(cells))
    comparison = ""
    if args.previous:
        comparison = report.compare(report.read([Path(p) for p in args.previous]), cells).html()
    if args.html:
        Path(args.html).write_text(report.to_html(cells, comparison, base=Path(args.html).parent))
    print(report.summary_line(cells))
    for cell in report.failures(cells):
        print(f"  {cell.column}  {cell.scenario}: {cell.reason}")
    return 1 if report.failures(cells) and args.fail_on_failures else 0


def cmd_report_compare(args: argparse.Namespace) -> int:
    from . import report

    print(report.compare(report.read([Path(args.old)]), report.read([Path(args.new)])).text(), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Boot an image on the chosen targets, run the scenario suite there, write the JUnit, Markdown and HTML
    reports, compare with a previous run's; exit 0 only if nothing failed."""
    import subprocess

    from . import download, report

    out = Path(args.report).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    option = "--cernvm-release" if args.image.startswith("release:") else "--cernvm-image"
    image = args.image.removeprefix("release:")
    command = [sys.executable, "-m", "pytest", "--pyargs", "cernvm_fixtures.scenarios", "-p", "no:cacheprovider"]
    command += ["-rfEs", f"--junitxml={junit}", f"{option}={image}", f"--cernvm-keep={args.keep}"]
    command += [f"--cernvm-target={target}" for target in args.target or ()]
    command += [f"--cernvm-profile={args.profile}"] if args.profile else []
    command += [f"--cernvm-config={Path(args.config).expanduser().resolve()}"] if args.config else []
    command += ["-k", args.k] if args.k else []
    command += [f"--cernvm-workers={args.workers}"] if args.workers is not None else []
    print(f"cernvm-fixtures: validating {download.redact(args.image)}: {' '.join(command[1:])}", flush=True)
    finished = subprocess.run(command, check=False)
    if not junit.is_file():
        print(f"cernvm-fixtures: error: the scenario run wrote no report (pytest exited {finished.returncode})")
        return finished.returncode or 2
    cells = report.read([junit])
    comparison = None
    if args.previous:
        previous = Path(args.previous).expanduser()
        comparison = report.compare(report.read([previous / "junit.xml" if previous.is_dir() else previous]), cells)
    (out / "report.md").write_text(report.markdown(cells))
    (out / "report.html").write_text(report.to_html(cells, comparison.html() if comparison else "", base=out))
    print(report.summary_line(cells))
    for cell in report.failures(cells):
        print(f"  {cell.column}  {cell.scenario}: {cell.reason}")
    if comparison is not None:
        print(comparison.text(), end="")
    print(f"reports: {junit}, {out / 'report.md'}, {out / 'report.html'}")
    return finished.returncode


def cmd_image_fetch(args: argparse.Namespace) -> int:
    from . import download

    for image in args.url:
        reference = download.parse(image)
        path = download.fetch(reference, offline=args.offline, progress=download.progress_printer(reference.name))
        print(path)
    return 0


def cmd_image_list(args: argparse.Namespace) -> int:
    from . import download

    items = download.entries()
    for path, size, used in items:
        print(f"{size / 1e6:10.1f} MB  {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}  {path}")
    print(f"{len(items)} image(s), {sum(s for _, s, _ in items) / 1e6:.1f} MB in {download.images_dir()}")
    return 0


def cmd_image_prune(args: argparse.Namespace) -> int:
    from . import download

    removed = download.prune(
        older_than=args.older_than * 86400 if args.older_than is not None else None,
        max_bytes=int(args.max_size * 1e9) if args.max_size is not None else None,
    )
    for path in removed:
        print(f"removed {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cernvm-fixtures", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    appliance = sub.add_parser("appliance", help="the project's test appliance").add_subparsers(
        dest="action", required=True
    )
    build = appliance.add_parser("build", help="build (or find in the cache) the test appliance")
    build.add_argument("--variant", action="append", help="variant to build (repeatable; default ok)")
    build.add_argument("--all", action="store_true", help="build every variant")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_appliance_build)

    doctor = sub.add_parser("doctor", help="check each prerequisite of the targets on this host, with the fix")
    doctor.add_argument("targets", nargs="*", metavar="TARGET", help="targets to check (default: all declared)")
    doctor.add_argument("--config", help="config file (default: cernvm.toml or pyproject.toml here)")
    doctor.set_defaults(func=cmd_doctor)

    up = sub.add_parser("up", help="bring an instance up and keep it")
    up.add_argument("target", nargs="?", help="target name (default: the first enabled one)")
    up.add_argument("--config", help="config file (default: cernvm.toml or pyproject.toml here)")
    up.add_argument("--image", help="image instead of the configured one")
    up.add_argument("--profile", help="profile instead of the configured one")
    up.set_defaults(func=cmd_up)

    sub.add_parser("list", help="list recorded instances and resources").set_defaults(func=cmd_list)

    login = sub.add_parser("login", help="open a shell on a kept instance")
    login.add_argument("name")
    login.set_defaults(func=cmd_login)

    screen = sub.add_parser("screen", help="save a PNG of a kept instance's screen")
    screen.add_argument("name")
    screen.add_argument("--output", "-o", metavar="FILE", help="where to write the PNG (default: ./NAME.png)")
    screen.set_defaults(func=cmd_screen)

    down = sub.add_parser("down", help="destroy an instance")
    down.add_argument("name")
    down.set_defaults(func=cmd_down)

    sweep = sub.add_parser("sweep", help="destroy what crashed or cancelled runs left behind")
    sweep.add_argument("--config", help="config file whose targets are scanned for unrecorded leftovers")
    sweep.add_argument("--dry-run", action="store_true", help="only list what would be destroyed")
    sweep.add_argument("--include-kept", action="store_true", help="also destroy instances kept on purpose")
    sweep.set_defaults(func=cmd_sweep)

    reports = sub.add_parser("report", help="join and compare JUnit reports").add_subparsers(
        dest="action", required=True
    )
    merge = reports.add_parser("merge", help="one target x scenario grid from the JUnit files of one or more jobs")
    merge.add_argument("junit", nargs="+", help="JUnit XML files (pytest --junitxml)")
    merge.add_argument("--out-junit", metavar="PATH", help="write the merged JUnit file here")
    merge.add_argument("--markdown", metavar="PATH", help="write the Markdown summary here")
    merge.add_argument("--html", metavar="PATH", help="write the self-contained HTML report here")
    merge.add_argument("--previous", action="append", metavar="JUNIT", help="the previous run's JUnit, to compare")
    merge.add_argument("--step-summary", action="store_true", help="append the Markdown to $GITHUB_STEP_SUMMARY")
    merge.add_argument("--fail-on-failures", action="store_true", help="exit 1 if any cell failed")
    merge.set_defaults(func=cmd_report_merge)
    compare = reports.add_parser("compare", help="what changed between two runs: new failures, fixed, still failing")
    compare.add_argument("old")
    compare.add_argument("new")
    compare.set_defaults(func=cmd_report_compare)

    validate = sub.add_parser(
        "validate",
        help="boot an image on the chosen targets and run the CernVM scenario suite on it: JUnit, Markdown and HTML "
        "reports; exit 1 if any scenario failed",
    )
    validate.add_argument(
        "image",
        help="appliance[:variant], a local file, a URL[#sha256=HEX], or release:[BRANCH/]YYYY.MM-R (each target then "
        "fetches the published file in its own format)",
    )
    validate.add_argument(
        "--target",
        action="append",
        metavar="NAME",
        help="a target to validate on (repeatable; default: every enabled target of the config)",
    )
    validate.add_argument("--config", metavar="PATH", help="config file declaring the targets")
    validate.add_argument("--profile", help="the profile to expect (default: the image's)")
    validate.add_argument("--report", default="cernvm-report", metavar="DIR", help="where the reports go")
    validate.add_argument("--previous", metavar="DIR|JUNIT", help="a previous validate's report, to print what changed")
    validate.add_argument("--keep", choices=[k.value for k in Keep], default="never", help="leave instances running")
    validate.add_argument("-k", metavar="EXPRESSION", help="only the scenarios pytest -k selects")
    validate.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="pytest-xdist workers (default: one per target, at most one per core; 0: none)",
    )
    validate.set_defaults(func=cmd_validate)

    image = sub.add_parser("image", help="images downloaded once, verified and cached").add_subparsers(
        dest="action", required=True
    )
    fetch = image.add_parser(
        "fetch",
        help="download and verify images (URL[#sha256=HEX]; else URL.sha256, read again each time: a respin is "
        "downloaded)",
    )
    fetch.add_argument("url", nargs="+")
    fetch.add_argument("--offline", action="store_true", help="only use the cache")
    fetch.set_defaults(func=cmd_image_fetch)
    image.add_parser("list", help="what is cached, how big, last used").set_defaults(func=cmd_image_list)
    prune = image.add_parser("prune", help="remove cached images by age or total size")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="remove images not used for DAYS")
    prune.add_argument("--max-size", type=float, metavar="GB", help="then the least recently used beyond GB")
    prune.set_defaults(func=cmd_image_prune)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except CernvmError as e:
        print(f"cernvm-fixtures: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cernvm-fixtures: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
