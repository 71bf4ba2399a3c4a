"""Wall time of the local nightly matrix, with and without boot-ahead, against its slowest cell run alone.

The matrix is the scenario suite (all but the shared-folder scenarios) on kvm (two images: the appliance, and its
sshfs variant that has no 9p like a real CernVM 4 kernel) and on docker in both documented modes (the appliance is
Docker's only image). Each run is
a fresh ``pytest scenarios`` process with a private state directory, in this order: every cell alone (the
slowest of them is the baseline), then the whole matrix without boot-ahead, then with it. The last line is the
ratio of the boot-ahead matrix's wall time to the slowest cell's, ``matrix: N`` (goal: at most 1.2).

    .venv/bin/python benchmarks/matrix_wall.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = """
[targets.kvm]
provider = "kvm"
shared_folders = { data = "" }

[targets.kvm.images]
appliance = "appliance"
sshfs = "appliance:sshfs"

[targets.docker]
provider = "docker"
mode = "parrot"
shared_folders = { data = "" }

[targets.docker-bindmount]
provider = "docker"
mode = "bindmount"
repositories = { "cernvm-prod.cern.ch" = "" }
shared_folders = { data = "" }
"""
CELLS = ["kvm-appliance", "kvm-sshfs", "docker", "docker-bindmount"]
NETWORK_RULE = ["-p", "tests.network_rule"]
"""Loopback only, as in the project's tests (tests/network_rule.py: this checkout goes on the suite's PYTHONPATH)."""
SELECT = ["-k", "not shared"]
"""Every scenario but the shared folders: the sshfs variant's come from reverse SSHFS, which a run mounts itself
(see tests/appliance/test_sshfs_kvm.py), not from the harness."""


def suite(workdir: Path, label: str, *args: str) -> float:
    """Wall seconds of one scenario-suite process; a failing suite stops the benchmark (it would time nothing)."""
    state = workdir / f"state-{label}"
    env = dict(os.environ, CERNVM_FIXTURES_STATE=str(state))
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NETWORK_RULE, "scenarios", *SELECT]
    command += args
    started = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(
            f"{label}: the suite failed (exit {result.returncode}):\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
        )
    print(f"{label:<28} {elapsed:7.1f} s", flush=True)
    return elapsed


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="matrix-wall-") as tmp:
        workdir = Path(tmp)
        (workdir / "cernvm.toml").write_text(MATRIX)
        shutil.copytree(ROOT / "scenarios", workdir / "scenarios")
        print(f"{os.cpu_count()} cores; cells: {', '.join(CELLS)}", flush=True)
        alone = {cell: suite(workdir, f"{cell} alone", f"--cernvm-target={cell}") for cell in CELLS}
        serial = suite(workdir, "matrix, no boot-ahead", "--cernvm-no-boot-ahead")
        ahead = suite(workdir, "matrix, boot-ahead")
        slowest = max(alone, key=alone.__getitem__)
        print(f"sum of the cells alone: {sum(alone.values()):.1f} s; slowest cell: {slowest} {alone[slowest]:.1f} s")
        print(f"no boot-ahead / slowest cell: {serial / alone[slowest]:.2f}")
        print(f"matrix: {ahead / alone[slowest]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
