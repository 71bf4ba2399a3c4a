"""The live tier's gate, without a cloud: it skips each cloud naming why (no config, no target, the doctor's
problems), so ``./dev test --live`` on a machine without accounts skips cleanly and says what is missing."""

from __future__ import annotations

import pytest

from tests.live import test_live


def skipped(cloud: str) -> str:
    with pytest.raises(pytest.skip.Exception) as info:
        test_live.live_target(cloud)
    return str(info.value)


def test_without_a_config_every_cloud_is_skipped_naming_the_variable(monkeypatch):
    monkeypatch.delenv(test_live.CONFIG_ENV, raising=False)
    assert all(test_live.CONFIG_ENV in skipped(cloud) for cloud in test_live.CLOUDS)


def test_a_cloud_without_a_target_or_credentials_is_skipped_naming_the_problem(tmp_path, monkeypatch):
    live = tmp_path / "live.toml"
    live.write_text(
        '[targets.ec2]\nprovider = "ec2"\nimage = "ami-0123456789abcdef0"\nregion = "eu-west-1"\n'
        'ssh_cidr = "203.0.113.7/32"\nprofile = "cernvm4"\n'
    )
    monkeypatch.setenv(test_live.CONFIG_ENV, str(live))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert "declares no target named 'gce'" in skipped("gce")
    assert "problem  credentials: boto3's chain found none" in skipped("ec2")
