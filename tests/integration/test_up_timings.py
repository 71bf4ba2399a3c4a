"""``up`` reports its wall time from the process's start, split into the bring-up steps (real dockerd)."""

from __future__ import annotations

import re
import time

from tests.helpers import cli, docker_objects_under


def test_up_splits_its_wall_time_into_the_steps(tmp_path):
    state = tmp_path / "state"
    started = time.monotonic()
    result = cli(state, "up", "docker", timeout=300, cwd=tmp_path)
    wall = time.monotonic() - started
    name = None
    try:
        assert result.returncode == 0, result.stderr
        match = re.search(r"^(\S+) is ready after ([\d.]+) s \((.*) s\);", result.stdout, re.M)
        assert match, result.stdout
        name, total = match[1], float(match[2])
        steps = dict(part.rsplit(" ", 1) for part in match[3].split(", "))
        assert list(steps) == ["prepare", "engine create", "running", "reachable", "login", "ready"]
        assert abs(sum(map(float, steps.values())) - total) < 0.1 * len(steps)
        assert 0 < total <= wall
    finally:
        if name:
            assert cli(state, "down", name).returncode == 0
    assert docker_objects_under(state) == []
