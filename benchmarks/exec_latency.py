"""Median command latency through the cernvm handle vs testinfra's backends, measured in one run.

Boots the test appliance once per target (KVM; Docker when its provider is
installed), then times ``true``, ``uname -r`` and ``cat /proc/mounts``:

- KVM: the instance handle, testinfra ``paramiko://`` and ``ssh://`` (same guest, same key);
- Docker: the instance handle and testinfra ``docker://`` (same container).

Each command is also timed by the instance itself: a 200-iteration loop of
``sh -c CMD`` (what an SSH server does per command, so the floor for ``sh -c``
semantics), sent through the handle and timed with the guest's own clock. The
handle's overhead is its median minus that in-guest cost. Part of it no handle
can avoid: the floor, one exchange through the same session that starts no
process (the command's text in, both end markers out: the transport's round trip
plus the shell's framing), is timed too and printed with the overhead above it.

Prints a table, then ``speedup: N.N`` (the handle against testinfra's best
backend for ``true``, the smallest over targets) and, last, ``overhead_ms: N``
(the largest per-command overhead of the handle above the in-guest cost).

    .venv/bin/python benchmarks/exec_latency.py [--repeat 40] [--targets kvm,docker] [--config cernvm.toml]
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import testinfra

from cernvm_fixtures import config, providers
from cernvm_fixtures.instance import Instance, launch
from cernvm_fixtures.run import Run
from cernvm_fixtures.transport import shell

COMMANDS = ["true", "uname -r", "cat /proc/mounts"]


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


GUEST_LOOP = 200


def in_guest_ms(instance: Instance, command: str) -> float:
    """Milliseconds per ``sh -c COMMAND`` as the instance's own clock measures a 200-iteration loop of them."""
    script = (
        "read a _ < /proc/uptime; i=0; "
        f"while [ $i -lt {GUEST_LOOP} ]; do sh -c {shlex.quote(command)} </dev/null >/dev/null; i=$((i+1)); done; "
        "read b _ < /proc/uptime; echo $a $b"
    )
    start, end = (float(x) for x in instance.run(script, timeout=600).check().stdout.split())
    return (end - start) * 1000 / GUEST_LOOP


def floor_ms(instance: Instance, repeat: int) -> float:
    """Milliseconds of one session exchange that starts no process: the end markers alone, on the same pipe."""
    pool = instance.transport._sessions  # type: ignore[attr-defined]  # no public call skips ``sh -c``, by design
    session = pool._take()
    try:

        def exchange() -> None:
            nonce = secrets.token_hex(16)
            session._exchange("(markers only)", shell.end_markers(nonce, "0"), nonce, 30)

        return median_ms(exchange, repeat)
    finally:
        pool._idle.append(session)


def kvm_peers(instance: Instance, workdir: Path) -> dict[str, testinfra.host.Host]:
    """testinfra hosts for the same guest: paramiko:// and ssh:// (its default ControlPersist)."""
    host, port = instance.machine.address()
    key = instance.machine.provider.run.key_file
    _ = instance.login_command  # writes the pinned known_hosts file
    known = instance.machine.directory / "known_hosts"
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text(
        f"Host {host}\n  Port {port}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
    )
    return {
        "testinfra paramiko://": testinfra.get_host(f"paramiko://root@{host}:{port}", ssh_config=str(ssh_config)),
        "testinfra ssh://": testinfra.get_host(f"ssh://root@{host}:{port}", ssh_config=str(ssh_config)),
    }


def docker_peers(instance: Instance, workdir: Path) -> dict[str, testinfra.host.Host]:
    """testinfra's docker:// (``docker exec NAME /bin/sh -c CMD``; note: it bypasses CernVM's /init)."""
    return {"testinfra docker://": testinfra.get_host(f"docker://{instance.name}")}


PEERS = {"kvm": kvm_peers, "docker": docker_peers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--targets", default=",".join(t for t in PEERS if t in providers.names()))
    parser.add_argument("--config", type=Path, help="a cernvm.toml (e.g. longer deadlines on a busy host)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Unknown .* host key")  # testinfra's paramiko ignores known_hosts
    defaults = config.load(args.config, None)
    rows: list[tuple[str, str, str, float]] = []
    speedups: list[tuple[float, str]] = []
    overheads: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run = Run(state=workdir / "state")
        for name in args.targets.split(","):
            instance = launch(defaults.targets[name], run)
            try:
                peers = PEERS[defaults.targets[name].provider](instance, workdir)
                floor = floor_ms(instance, args.repeat)
                rows.append((name, "(none)", "floor: markers only", floor))
                for command in COMMANDS:
                    ours = median_ms(lambda i=instance, c=command: i.run(c).check(), args.repeat)
                    guest = in_guest_ms(instance, command)
                    rows.append((name, command, "cernvm handle", ours))
                    rows.append((name, command, f"in guest (sh -c, {GUEST_LOOP}x)", guest))
                    rows.append((name, command, "handle overhead", ours - guest))
                    rows.append((name, command, "overhead above the floor", ours - guest - floor))
                    overheads.append((ours - guest, f"{name} {command!r}"))
                    theirs = {}
                    for peer, host in peers.items():
                        theirs[peer] = median_ms(lambda h=host, c=command: h.run(c), args.repeat)
                        rows.append((name, command, peer, theirs[peer]))
                    best = min(theirs, key=theirs.get)
                    if command == "true":
                        speedups.append((theirs[best] / ours, f"{name} {command!r} vs {best}"))
            finally:
                instance.destroy()
        run.finish()
    print(f"{'target':<8} {'command':<18} {'through':<26} {'median ms':>10}")
    for target, command, through, ms in rows:
        print(f"{target:<8} {command:<18} {through:<26} {ms:>10.2f}")
    for ratio, what in sorted(speedups):
        print(f"speedup {ratio:6.1f}x  {what}")
    for overhead, what in sorted(overheads):
        print(f"overhead {overhead:6.2f} ms  {what}")
    print(f"speedup: {min(speedups)[0]:.1f}")
    print(f"overhead_ms: {max(overheads)[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
