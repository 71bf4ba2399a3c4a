"""The ``docker`` target keys (mode, network, /init's environment, bind-mounted repositories), validated at load:
nothing here talks to the daemon."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ..base import ProviderOptions

KEYS_DIR = "/UCVM/keys"
DEFAULT_CERNVM_ROOT = "/cvmfs/cernvm-prod.cern.ch/cvm4"
ENV_KEYS = ("CERNVM_ROOT", "CERNVM_DEBUG", "PARROT_OPTIONS", "PARROT_CVMFS_REPO")
EnvKey = Literal["CERNVM_ROOT", "CERNVM_DEBUG", "PARROT_OPTIONS", "PARROT_CVMFS_REPO"]
REPOSITORY = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def os_repository(cernvm_root: str) -> str | None:
    """The repository CERNVM_ROOT lies in (``/cvmfs/<repo>/...``), if any."""
    parts = cernvm_root.split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "" and parts[1] == "cvmfs" and parts[2] else None


def parrot_repo_env(value: str) -> tuple[str, dict[str, Path]]:
    """PARROT_CVMFS_REPO with host key paths rewritten to /UCVM/keys/<name>, and name -> host key file.

    Entries are ``<repo>:<option>=<value>,...`` separated by blanks (or
    ``<default-repositories>``); ``pubkey=`` holds one or more key files separated
    by ``:``. A key under /UCVM/keys is the image's own and stays; any other is a
    host path that must exist and is copied into the container. Raises ValueError.
    """
    keys: dict[str, Path] = {}
    entries = []
    for entry in value.split():
        if entry == "<default-repositories>":
            entries.append(entry)
            continue
        repo, sep, options = entry.partition(":")
        if not sep or not repo or not options:
            raise ValueError(f"entries '<repository>:url=<url>,pubkey=<key file>' separated by blanks, not {entry!r}")
        rewritten = []
        for option in options.split(","):
            name, _, keyfiles = option.partition("=")
            if name != "pubkey":
                rewritten.append(option)
                continue
            paths = []
            for keyfile in keyfiles.split(":"):
                if keyfile.startswith(KEYS_DIR + "/"):
                    paths.append(keyfile)
                    continue
                host = Path(keyfile).expanduser()
                if not host.is_file() or not os.access(host, os.R_OK):
                    raise ValueError(
                        f"a readable public key file for repository {repo!r}, not {keyfile!r} "
                        f"(pubkey= takes host paths, copied into the container's {KEYS_DIR})"
                    )
                other = keys.get(host.name)
                if other is not None and other.resolve() != host.resolve():
                    raise ValueError(
                        f"key files with distinct names, but {other} and {host} are both {host.name!r} in {KEYS_DIR}"
                    )
                keys[host.name] = host
                paths.append(f"{KEYS_DIR}/{host.name}")
            rewritten.append("pubkey=" + ":".join(paths))
        entries.append(f"{repo}:{','.join(rewritten)}")
    return " ".join(entries), keys


class DockerOptions(ProviderOptions):
    """Target keys of the ``docker`` provider."""

    url: str | None = None
    """Docker daemon, e.g. ``unix:///var/run/docker.sock``; default: DOCKER_HOST, else the local socket."""
    mode: Literal["parrot", "bindmount"] = "parrot"
    """``parrot``: /init mounts the repositories with parrot (container runs with seccomp unconfined);
    ``bindmount``: the host's /cvmfs/<repo> directories are bind-mounted read-only, no parrot."""
    network: str = "none"
    """Docker network of the container (``none``: no network at all)."""
    env: dict[EnvKey, str] = {}
    """CERNVM_ROOT, CERNVM_DEBUG, PARROT_OPTIONS, PARROT_CVMFS_REPO (pubkey= as host paths)."""
    repositories: dict[str, str] = Field(default_factory=dict, validate_default=True)
    """bindmount: repository -> host directory mounted read-only on /cvmfs/<repository>
    (default: cernvm-prod.cern.ch from /cvmfs/cernvm-prod.cern.ch); "" = the appliance's own copy."""

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        if not NETWORK.match(value):
            raise ValueError("a Docker network name such as 'none' (the default), 'bridge' or a network of yours")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        mode = info.data.get("mode")
        parrot_only = sorted(k for k in env if k.startswith("PARROT_"))
        if mode == "bindmount" and parrot_only:
            raise ValueError(
                f"no {', '.join(parrot_only)} in mode 'bindmount' (there is no parrot); use mode = 'parrot'"
            )
        root = env.get("CERNVM_ROOT")
        if root is not None and (not root.startswith("/") or "\n" in root):
            raise ValueError(f"CERNVM_ROOT as an absolute path such as {DEFAULT_CERNVM_ROOT!r}")
        if env.get("CERNVM_DEBUG", "1") not in ("0", "1"):
            raise ValueError("CERNVM_DEBUG = '1' (debug lines from /init) or '0'")
        if "PARROT_CVMFS_REPO" in env:
            parrot_repo_env(env["PARROT_CVMFS_REPO"])
        return env

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, repositories: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        mode = info.data.get("mode")
        if mode != "bindmount":
            if repositories:
                raise ValueError("no repositories in mode 'parrot' (parrot fetches them); use mode = 'bindmount'")
            return repositories
        repositories = dict(repositories)
        root = (info.data.get("env") or {}).get("CERNVM_ROOT", DEFAULT_CERNVM_ROOT)
        os_repo = os_repository(root)
        if not repositories and os_repo:
            repositories[os_repo] = f"/cvmfs/{os_repo}"
        for repo, path in repositories.items():
            if not REPOSITORY.match(repo):
                raise ValueError(f"repository names such as 'cernvm-prod.cern.ch', not {repo!r}")
            if path and not Path(path).expanduser().is_dir():
                raise ValueError(
                    f"an existing host directory for repository {repo!r}, not {path!r}: mount cvmfs on the host "
                    f'(CVMFS_CLAIM_OWNERSHIP=no) and give its /cvmfs/{repo}, use "" with the appliance, '
                    "or use mode = 'parrot'"
                )
        if os_repo and os_repo not in repositories:
            raise ValueError(
                f"the OS repository {os_repo!r} (from CERNVM_ROOT={root!r}) among them: /init takes the OS from it"
            )
        return repositories
