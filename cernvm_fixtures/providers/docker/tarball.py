"""CernVM Docker tarballs: checked once per file version (a root fs with an executable /init), the repository copy
the appliance's tarball carries unpacked for bind mounts, and the repository keys handed into a container."""

from __future__ import annotations

import hashlib
import io
import lzma
import tarfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ProviderError
from .options import KEYS_DIR

PRELOAD = "UCVM/parrot-preload"
"""Where the appliance's image carries the repositories its parrot stand-in presents."""
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


@dataclass(frozen=True)
class Tarball:
    """A checked CernVM Docker tarball."""

    path: Path
    digest: str  # sha256 of the file


_tarballs: dict[tuple[str, int, int], Tarball] = {}


def member_path(name: str) -> str:
    """A tar member's path relative to the root fs ("./init" and "/init" are "init")."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def inspect_tarball(path: Path, where: str) -> Tarball:
    """The tarball's digest, after checking it is a root fs with an executable /init (cached per file version)."""
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"{where}: {str(path)!r} does not exist ({e.strerror})") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _tarballs:
        return _tarballs[key]
    if not path.is_file():
        raise ConfigError(f"{where}: {str(path)!r} is not a file")
    hint = (
        "a CernVM Docker tarball is a root fs with /init and /UCVM (cvm-docker.<V>-<R>.cernvm.x86_64.tar); "
        "give one, 'appliance', or the name of an image already imported with docker import"
    )
    init = None
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member_path(member.name) == "init":
                    init = member
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise ConfigError(f"{where}: {str(path)!r} is not a readable tar archive ({e}); {hint}") from None
    if init is None:
        raise ConfigError(f"{where}: {str(path)!r} has no /init, so it is not a CernVM Docker root fs; {hint}")
    if not (init.issym() or (init.isfile() and init.mode & 0o111)):
        raise ConfigError(f"{where}: /init in {str(path)!r} is not an executable file; {hint}")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    found = _tarballs[key] = Tarball(path.resolve(), digest)
    return found


def extract_repository(tarball: Path, repo: str, destination: Path) -> None:
    """Unpack the copy of ``repo`` the appliance's image carries (its parrot preload) into ``destination``."""
    prefix = f"{PRELOAD}/{repo}/"
    with tarfile.open(tarball, "r:*") as tar:
        members = []
        for member in tar.getmembers():
            name = member_path(member.name)
            if name.startswith(prefix) and len(name) > len(prefix):
                members.append(member.replace(name=name[len(prefix) :], deep=False))
        if not members:
            raise ProviderError(f"{tarball} carries no copy of repository {repo} (no {prefix})")
        destination.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        tar.extractall(destination, members=members, **extra)


def keys_archive(keys: Mapping[str, Path]) -> bytes:
    """A tar of the repository keys, to unpack at / (UCVM/keys/<name>)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in sorted(keys.items()):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{KEYS_DIR.lstrip('/')}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
