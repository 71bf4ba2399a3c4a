"""Time from "boot it" to "a command ran": the harness's KVM launch vs raw ``virsh create`` + an SSH wait loop.

Both boot the same appliance ISO with the same domain XML; the raw path is what
a shell script does (``virsh create``, then retry ``ssh ... true`` until it
works), the harness adds its layered readiness (running, SSH banner, login
with host key verification, the profile's ready command). Runs alternate, and
the medians are printed with their ratio.

    .venv/bin/python benchmarks/time_to_ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from cernvm_fixtures import config
from cernvm_fixtures.context import Context
from cernvm_fixtures.context.nocloud import write_seed
from cernvm_fixtures.doctor import device_access
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers.kvm import KvmProvider, choose_domain_type, connect, domain_xml, free_port
from cernvm_fixtures.run import Run


def harness(target: config.Target, run: Run, steps: dict[str, list[float]] | None = None) -> float:
    started = time.monotonic()
    instance = launch(target, run)
    elapsed = time.monotonic() - started
    for step, seconds in instance.timings.items():
        if steps is not None:
            steps.setdefault(step, []).append(seconds)
    instance.destroy()
    return elapsed


def raw_small(uri: str) -> float:
    """``virsh create`` of a 64 MiB domain with no disks: libvirt's own start cost, whatever the guest does."""
    name = f"cvmfx-raw-small-{time.monotonic_ns()}"
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        started = time.monotonic()
        subprocess.run(["virsh", "-c", uri, "create", f.name], check=True, capture_output=True)
        elapsed = time.monotonic() - started
    subprocess.run(["virsh", "-c", uri, "destroy", name], capture_output=True)
    return elapsed


def raw_virsh(target: config.Target, run: Run, workdir: Path, domain_type: str) -> float:
    """``virsh create`` of the same layout, then ``ssh true`` in a loop, as a shell script would."""
    provider = KvmProvider(target, run)
    iso, _ = provider._boot_source()
    name = f"cvmfx-raw-{time.monotonic_ns()}"
    machine = workdir / name
    machine.mkdir()
    disk = machine / "scratch.img"
    with open(disk, "wb") as f:
        f.truncate(20 * 1024**3)
    write_seed(Context(name, (run.public_key,)), machine / "seed.iso")
    port = free_port()
    xml = machine / "domain.xml"
    xml.write_text(
        domain_xml(
            name=name,
            domain_type=domain_type,
            options=target.options,
            uri=provider.uri,
            iso=iso,
            kernel=None,
            disk=disk,
            seed=machine / "seed.iso",
            console=machine / "console.log",
            shared={},
            ssh_port=port,
            metadata="{}",
        )
    )
    ssh = [
        "ssh",
        "-i",
        str(run.key_file),
        "-p",
        str(port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={machine / 'known_hosts'}",
        "-o",
        "ConnectTimeout=2",
        "-o",
        "BatchMode=yes",
        "root@127.0.0.1",
        "true",
    ]
    started = time.monotonic()
    subprocess.run(["virsh", "-c", provider.uri, "create", str(xml)], check=True, capture_output=True)
    try:
        while subprocess.run(ssh, capture_output=True).returncode != 0:
            if time.monotonic() - started > 300:
                raise RuntimeError("raw boot never answered over SSH")
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        subprocess.run(["virsh", "-c", provider.uri, "destroy", name], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slowdown", type=float, help="stretch the readiness deadlines (a host shared with others)")
    args = parser.parse_args()
    target = config.load(None, None).targets["kvm"]
    if args.slowdown:
        target = replace(target, options=target.options.model_copy(update={"slowdown": args.slowdown}))
    ours, raw, small = [], [], []
    steps: dict[str, list[float]] = {}
    device = Path("/dev/kvm")
    print(f"/dev/kvm: {device_access(device, 'kvm')[0] if device.exists() else 'missing'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run = Run(state=workdir / "state")
        uri = KvmProvider(target, run).uri
        domain_type = choose_domain_type(connect(uri), uri)
        harness(target, run)  # warm-up: appliance cache, probe, page cache
        for _ in range(args.runs):
            ours.append(harness(target, run, steps))
            raw.append(raw_virsh(target, run, workdir, domain_type))
            small.append(raw_small(uri))
        run.finish()
    print(f"domain type {domain_type}, {args.runs} runs each")
    print("harness steps (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items()))
    for label, values in (
        ("raw virsh create, 64 MiB, no disk", small),
        ("harness launch() to ready", ours),
        ("raw virsh create + ssh true loop", raw),
    ):
        every = ", ".join(f"{t:.2f}" for t in values)
        print(f"{label + ':':<35} median {statistics.median(values):6.2f} s  (all: {every})")
    print(f"ratio harness/raw: {statistics.median(ours) / statistics.median(raw):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
