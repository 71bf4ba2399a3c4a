"""The nightly pipelines in examples/ are valid YAML and run only commands this project documents and has."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cernvm_fixtures import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "nightly").glob("*.yml"))
PLUGIN = (ROOT / "cernvm_fixtures" / "plugin.py").read_text()


def commands(node) -> list[str]:
    """Every shell line of a workflow (GitHub ``run:``) or pipeline (GitLab ``script:``)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                found += value.splitlines()
            elif key == "script" and isinstance(value, list):
                found += value
            else:
                found += commands(value)
    elif isinstance(node, list):
        for item in node:
            found += commands(item)
    return found


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_pipeline_runs_documented_commands(path):
    lines = commands(yaml.safe_load(path.read_text()))
    ours = [shlex.split(line) for line in lines if line.startswith(("cernvm-fixtures", "pytest"))]
    assert {words[0] for words in ours} <= {"cernvm-fixtures", "pytest"}
    assert any(words[:2] == ["cernvm-fixtures", "validate"] for words in ours), (
        "the pipelines validate with one command"
    )
    readme = (ROOT / "README.md").read_text()
    for words in ours:
        if words[0] == "cernvm-fixtures":
            cli.parser().parse_args([w.replace("*", "any") for w in words[1:]])
            assert f"cernvm-fixtures {words[1]}" in readme, (
                f"{path.name}: 'cernvm-fixtures {words[1]}' is not in the README"
            )
        else:
            for option in (w.split("=")[0] for w in words[1:] if w.startswith("--cernvm")):
                assert f'"{option}"' in PLUGIN, f"{path.name}: pytest option {option} does not exist"
    assert any(re.search(r"cernvm-fixtures sweep$", line) for line in lines), "a pipeline must end with a sweep"
