"""The docker provider without a daemon: option validation, container spec, tarball checks, labels, stream parsing."""

from __future__ import annotations

import io
import struct
import tarfile
import textwrap
from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError
from cernvm_fixtures.ledger import Resource
from cernvm_fixtures.providers import docker as provider
from cernvm_fixtures.providers.docker import (
    KEEPALIVE,
    DockerOptions,
    container_spec,
    import_changes,
    inspect_tarball,
    os_repository,
    parrot_repo_env,
    resource_labels,
)
from cernvm_fixtures.transport.docker import Demultiplexer, wrap


def error(tmp_path: Path, table: str) -> str:
    (tmp_path / "cernvm.toml").write_text(textwrap.dedent(table))
    with pytest.raises(ConfigError) as e:
        config.load(None, tmp_path)
    return str(e.value).replace(str(tmp_path / "cernvm.toml"), "FILE")


def options(tmp_path: Path, table: str):
    (tmp_path / "cernvm.toml").write_text(textwrap.dedent(table))
    return config.load(None, tmp_path).targets["c"].options


# --- defaults and options --------------------------------------------------------------------------------------


def test_default_targets_run_the_appliance_in_both_modes(tmp_path):
    loaded = config.load(None, tmp_path)
    parrot, bind = loaded.targets["docker"], loaded.targets["docker-bindmount"]
    assert (parrot.provider, parrot.image, parrot.profile) == ("docker", "appliance", "appliance")
    assert parrot.options.mode == "parrot" and parrot.options.network == "none" and parrot.options.repositories == {}
    assert dict(parrot.shared_folders) == {"data": ""}
    assert bind.options.mode == "bindmount" and bind.options.repositories == {"cernvm-prod.cern.ch": ""}
    assert [name for name in loaded.enabled if "docker" in name] == ["docker", "docker-bindmount"], (
        "-k docker picks both"
    )
    assert "kvm" in loaded.enabled and not any("kvm" in name for name in ("docker", "docker-bindmount"))


def test_mode_choices(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        mode = "fuse"
    """,
    )
    assert "FILE: targets.c.mode: expected 'parrot' or 'bindmount' (got 'fuse')" in message


def test_unknown_key_lists_the_valid_ones(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        seccomp = "unconfined"
    """,
    )
    assert "targets.c.seccomp: unknown key; valid keys are" in message
    for key in ("mode", "network", "env", "repositories", "url", "image", "shared_folders"):
        assert key in message


def test_env_keys_are_the_documented_ones(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        env = { CERNVM_DEBUG = "1", LD_PRELOAD = "x" }
    """,
    )
    assert (
        "targets.c.env.LD_PRELOAD: expected 'CERNVM_ROOT', 'CERNVM_DEBUG', 'PARROT_OPTIONS' or 'PARROT_CVMFS_REPO'"
        in message
    )


@pytest.mark.parametrize(
    "env,phrase",
    [
        ('{ CERNVM_DEBUG = "yes" }', "CERNVM_DEBUG = '1' (debug lines from /init) or '0'"),
        ("{ CERNVM_DEBUG = 1 }", "targets.c.env.CERNVM_DEBUG: expected a valid string"),
        ('{ CERNVM_ROOT = "cvmfs/x" }', "CERNVM_ROOT as an absolute path"),
        ('{ PARROT_CVMFS_REPO = "sft.cern.ch" }', "entries '<repository>:url=<url>,pubkey=<key file>'"),
    ],
)
def test_env_values_are_checked(tmp_path, env, phrase):
    message = error(
        tmp_path,
        f"""
        [targets.c]
        provider = "docker"
        env = {env}
    """,
    )
    assert phrase in message, message


def test_missing_key_file_is_rejected_at_load(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        env = { PARROT_CVMFS_REPO = "sft.cern.ch:url=http://s1/cvmfs/sft.cern.ch,pubkey=/nonexistent/cern.ch.pub" }
    """,
    )
    assert (
        "targets.c.env: expected a readable public key file for repository 'sft.cern.ch', "
        "not '/nonexistent/cern.ch.pub'" in message
    )


def test_parrot_settings_belong_to_parrot_mode(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        mode = "bindmount"
        env = { PARROT_OPTIONS = "-d cvmfs" }
        repositories = { "cernvm-prod.cern.ch" = "" }
    """,
    )
    assert "no PARROT_OPTIONS in mode 'bindmount'" in message
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        repositories = { "cernvm-prod.cern.ch" = "" }
    """,
    )
    assert "targets.c.repositories: expected no repositories in mode 'parrot'" in message


def test_bindmount_needs_existing_host_directories(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        mode = "bindmount"
        repositories = { "cernvm-prod.cern.ch" = "/nonexistent/cvmfs/cernvm-prod.cern.ch" }
    """,
    )
    assert "targets.c.repositories: expected an existing host directory for repository 'cernvm-prod.cern.ch'" in message
    assert "CVMFS_CLAIM_OWNERSHIP=no" in message


def test_bindmount_defaults_to_the_hosts_os_repository(tmp_path, monkeypatch):
    real = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) == "/cvmfs/cernvm-prod.cern.ch" or real(self))
    assert DockerOptions(mode="bindmount").repositories == {"cernvm-prod.cern.ch": "/cvmfs/cernvm-prod.cern.ch"}
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) != "/cvmfs/cernvm-prod.cern.ch" and real(self))
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        mode = "bindmount"
    """,
    )
    assert "not '/cvmfs/cernvm-prod.cern.ch': mount cvmfs on the host" in message


def test_bindmount_needs_the_os_repository(tmp_path):
    (tmp_path / "sft").mkdir()
    message = error(
        tmp_path,
        f"""
        [targets.c]
        provider = "docker"
        mode = "bindmount"
        repositories = {{ "sft.cern.ch" = "{tmp_path / "sft"}" }}
    """,
    )
    assert (
        "the OS repository 'cernvm-prod.cern.ch' (from CERNVM_ROOT='/cvmfs/cernvm-prod.cern.ch/cvm4') among them"
        in message
    )


def test_bindmount_with_host_directories(tmp_path):
    (tmp_path / "prod").mkdir()
    (tmp_path / "sft").mkdir()
    opts = options(
        tmp_path,
        f"""
        [targets.c]
        provider = "docker"
        mode = "bindmount"
        network = "bridge"
        env = {{ CERNVM_DEBUG = "1", CERNVM_ROOT = "/cvmfs/cernvm-prod.cern.ch/cvm4" }}
        repositories = {{ "cernvm-prod.cern.ch" = "{tmp_path / "prod"}", "sft.cern.ch" = "{tmp_path / "sft"}" }}
    """,
    )
    assert opts.network == "bridge" and set(opts.repositories) == {"cernvm-prod.cern.ch", "sft.cern.ch"}


def test_bad_network_name(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        network = "a b"
    """,
    )
    assert "targets.c.network: expected a Docker network name" in message


def test_docker_provider_cannot_take_a_profile_less_image(tmp_path):
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        image = "/srv/cvm-docker.tar"
    """,
    )
    assert "needs a profile" in message


def test_appliance_variants_are_refused_at_load(tmp_path):
    """A broken variant is a property of a booted VM: the tarball has none; found at load, for every test."""
    message = error(
        tmp_path,
        """
        [targets.c]
        provider = "docker"
        image = "appliance:no-cvmfs"
    """,
    )
    assert (
        "FILE: targets.c.image: 'appliance:no-cvmfs': the appliance's Docker tarball has no broken variants" in message
    )


# --- PARROT_CVMFS_REPO keys -------------------------------------------------------------------------------------


def test_host_keys_are_rewritten_to_ucvm_keys(tmp_path):
    key = tmp_path / "cern.ch.pub"
    key.write_text("KEY")
    other = tmp_path / "other.pub"
    other.write_text("OTHER")
    value = (
        f"sft.cern.ch:url=http://s1/cvmfs/sft.cern.ch,pubkey={key} "
        f"<default-repositories> alice.cern.ch:pubkey={key}:{other}:/UCVM/keys/builtin.pub,url=http://s1/a"
    )
    rewritten, keys = parrot_repo_env(value)
    assert rewritten == (
        "sft.cern.ch:url=http://s1/cvmfs/sft.cern.ch,pubkey=/UCVM/keys/cern.ch.pub <default-repositories> "
        "alice.cern.ch:pubkey=/UCVM/keys/cern.ch.pub:/UCVM/keys/other.pub:/UCVM/keys/builtin.pub,url=http://s1/a"
    )
    assert keys == {"cern.ch.pub": key, "other.pub": other}


def test_two_keys_with_one_name_are_rejected(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "k.pub").write_text(d)
    with pytest.raises(ValueError, match="both 'k.pub'"):
        parrot_repo_env(f"x.cern.ch:pubkey={tmp_path / 'a/k.pub'} y.cern.ch:pubkey={tmp_path / 'b/k.pub'}")


def test_os_repository():
    assert os_repository("/cvmfs/cernvm-prod.cern.ch/cvm4") == "cernvm-prod.cern.ch"
    assert os_repository("/cvmfs/cernvm-sl7.cern.ch") == "cernvm-sl7.cern.ch"
    assert os_repository("/opt/os") is None and os_repository("/cvmfs/") is None


# --- the container spec ----------------------------------------------------------------------------------------


def spec(mode="parrot", **overrides):
    args = dict(
        name="cvmfx-r-docker-1",
        image="cvmfx-r:0123456789abcdef",
        mode=mode,
        network="none",
        environment={"CERNVM_DEBUG": "1"},
        repositories={},
        shared={"data": Path("/run/m/shared/data")},
        labels={"cernvm-fixtures.run": "r"},
        hostname="cvmfx-r-docker-1",
    )
    args.update(overrides)
    return container_spec(**args)


def test_parrot_mode_relaxes_seccomp_and_mounts_no_repository():
    s = spec("parrot")
    assert s["security_opt"] == ["seccomp=unconfined"]
    assert s["command"] == KEEPALIVE and s["command"][0] == "/init"
    assert s["network_mode"] == "none" and s["tty"] is False and s["detach"] is True
    assert s["environment"] == {"CERNVM_DEBUG": "1"} and s["labels"] == {"cernvm-fixtures.run": "r"}
    assert s["mounts"] == [
        {"Type": "bind", "Source": "/run/m/shared/data", "Target": "/mnt/shared/data", "ReadOnly": False}
    ]
    assert not any(m["Target"].startswith("/cvmfs") for m in s["mounts"])
    assert "privileged" not in s and "cap_add" not in s


def test_bindmount_mode_mounts_repositories_read_only_and_keeps_seccomp():
    s = spec("bindmount", repositories={"cernvm-prod.cern.ch": Path("/cvmfs/cernvm-prod.cern.ch")}, network="bridge")
    assert "security_opt" not in s, "no seccomp relaxation without parrot"
    assert {
        "Type": "bind",
        "Source": "/cvmfs/cernvm-prod.cern.ch",
        "Target": "/cvmfs/cernvm-prod.cern.ch",
        "ReadOnly": True,
    } in s["mounts"]
    assert s["network_mode"] == "bridge"


def test_keepalive_runs_init_then_sleeps():
    assert KEEPALIVE[:3] == ["/init", "sh", "-c"]
    assert provider.UP_LINE in KEEPALIVE[3] and "exec sleep" in KEEPALIVE[3]


def test_labels_carry_the_ledger_entry(tmp_path):
    resource = Resource(provider="docker", kind="container", name="cvmfx-r-docker-1", run="r")
    labels = resource_labels(resource, tmp_path / "st ate")
    assert labels["cvmfx-run"] == "r" and provider.labelled_state(labels) == str(tmp_path / "st ate")
    back = provider.resource_from_labels(labels)
    assert (back.kind, back.name, back.run, back.owner) == (resource.kind, resource.name, resource.run, resource.owner)
    (change,) = import_changes(labels)
    assert change == "LABEL " + " ".join(f"{k}={v}" for k, v in labels.items())
    assert provider.resource_from_labels({**labels, "cvmfx-provider": "kvm"}) is None, "another provider's entry"


def test_image_names_are_per_run_and_content():
    assert provider.image_ref("1a2b3c4d", "f" * 64) == "cvmfx-1a2b3c4d:ffffffffffffffff"


# --- tarball checks (before anything is created) ---------------------------------------------------------------


def make_tarball(path: Path, members: dict[str, tuple[int, bytes]], compression: str = "gz") -> Path:
    with tarfile.open(path, f"w:{compression}") as tar:
        for name, (mode, data) in members.items():
            info = tarfile.TarInfo(name)
            info.mode, info.size = mode, len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tarball_with_init_is_accepted(tmp_path):
    path = make_tarball(tmp_path / "ok.tar.gz", {"UCVM/version": (0o644, b"1\n"), "./init": (0o755, b"#!/bin/sh\n")})
    found = inspect_tarball(path, "FILE: targets.c.image")
    assert found.path == path.resolve() and len(found.digest) == 64
    assert inspect_tarball(path, "x") is found, "checked once per file version"


@pytest.mark.parametrize(
    "case,phrase",
    [
        ("missing", "'{path}' does not exist"),
        ("not a tar", "is not a readable tar archive"),
        ("no init", "has no /init, so it is not a CernVM Docker root fs"),
        ("init not executable", "/init in '{path}' is not an executable file"),
    ],
)
def test_bad_tarballs_are_named(tmp_path, case, phrase):
    path = tmp_path / f"{case.replace(' ', '-')}.tar.gz"
    if case == "not a tar":
        path.write_bytes(b"this is not an archive" * 100)
    elif case == "no init":
        make_tarball(path, {"bin/sh": (0o755, b"x")})
    elif case == "init not executable":
        make_tarball(path, {"init": (0o644, b"x")})
    with pytest.raises(ConfigError) as e:
        inspect_tarball(path, "FILE: targets.c.image")
    message = str(e.value)
    assert message.startswith("FILE: targets.c.image: ")
    assert phrase.format(path=path) in message, message
    if case != "missing":
        assert "/init and /UCVM" in message and "'appliance'" in message


# --- the exec stream ---------------------------------------------------------------------------------------------


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


def test_demultiplexer_strips_the_preamble_and_keeps_streams_apart():
    token = "00112233aabbccdd"
    stream = (
        frame(1, b"Welcome to CernVM in Docker\n[INF] Using operating system\ncvmfx:00112233")
        + frame(2, b"cernvm-docker: debug: x\ncvmfx:00112233aabbccdd:4")
        + frame(1, b"aabbccdd:\x00out\xff")
        + frame(2, b"2:err\n")
        + frame(1, b"more")
    )
    demux = Demultiplexer(token)
    for i in range(0, len(stream), 7):  # frames and markers split at arbitrary points
        demux.feed(stream[i : i + 7])
    out, err, preamble = demux.finish()
    assert (out, err) == (b"\x00out\xffmore", b"err\n")
    assert demux.pid == 42 and demux.started
    assert b"Welcome to CernVM" in preamble and b"debug: x" in preamble


def test_without_markers_everything_is_the_output():
    demux = Demultiplexer("00112233aabbccdd")
    demux.feed(frame(2, b"parrot_run: fatal: could not trace child\n"))
    out, err, preamble = demux.finish()
    assert (out, err, preamble) == (b"", b"parrot_run: fatal: could not trace child\n", b"")
    assert not demux.started and demux.pid is None


def test_wrapped_command_prints_markers_first():
    script = wrap("exit 7", "00112233aabbccdd")
    assert script.startswith(
        "printf '%s' 'cvmfx:00112233aabbccdd:'; printf '%s%s:' 'cvmfx:00112233aabbccdd:' \"$$\" >&2\n"
    )
    assert script.endswith("\nexit 7")


def test_parrot_without_a_network_is_refused_for_an_image_that_fetches_its_os(tmp_path):
    """Real CernVM in parrot mode fetches cernvm-prod.cern.ch over the network: network = "none" cannot work."""
    from cernvm_fixtures import config
    from cernvm_fixtures.errors import ConfigError

    tarball = tmp_path / "cvm-docker.2021.05-1.cernvm.x86_64.tar"
    tarball.write_bytes(b"")
    raw = {"d": {"provider": "docker", "image": str(tarball), "profile": "cernvm4"}}
    target = config.parse({"targets": raw}, "cernvm.toml").targets["d"]
    with pytest.raises(ConfigError, match=r"cernvm\.toml: targets\.d\.network: 'none' leaves the container no network"):
        target.load_profile()
    bridged = config.parse({"targets": {"d": {**raw["d"], "network": "bridge"}}}, "cernvm.toml").targets["d"]
    bridged.load_profile()
    # the appliance carries its repository
    config.parse({"targets": {"d": {"provider": "docker"}}}, "x").targets["d"].load_profile()
