"""``cernvm-fixtures sweep`` without an engine: what --dry-run shows, and one resource's error not stopping the rest."""

from __future__ import annotations

import pytest

from cernvm_fixtures import cli, sweep
from cernvm_fixtures.ledger import Resource


class Flaky:
    """A provider whose SDK raises something that is not ours for one resource."""

    destroyed: list[str] = []

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        if resource.name == "bad":
            raise KeyError("an SDK's own exception")
        cls.destroyed.append(resource.name)


@pytest.fixture
def leftovers(monkeypatch):
    found = [
        (None, Resource(provider="azure", kind="resource-group", name="bad", run="r1", data={"group": "bad-rg"})),
        (None, Resource(provider="ec2", kind="vpc", name="good", run="r2", data={"ids": ["vpc-1", "vpc-2"]})),
    ]
    monkeypatch.setattr(sweep, "find_leftovers", lambda config, include_kept: found)
    monkeypatch.setattr(cli, "_config", lambda args: None)
    monkeypatch.setattr(cli, "get_provider", lambda name: Flaky)
    Flaky.destroyed = []
    return found


def test_dry_run_names_what_the_platform_calls_each_resource(leftovers, capsys):
    assert cli.main(["sweep", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would destroy azure resource-group bad (run r1): bad-rg" in out
    assert "would destroy ec2 vpc good (run r2): vpc-1, vpc-2" in out
    assert Flaky.destroyed == []


def test_one_resources_error_does_not_stop_the_sweep(leftovers, capsys):
    assert cli.main(["sweep"]) == 1
    captured = capsys.readouterr()
    assert Flaky.destroyed == ["good"]
    assert "could not destroy azure resource-group bad (bad-rg)" in captured.err
    assert "destroyed ec2 vpc good" in captured.out
