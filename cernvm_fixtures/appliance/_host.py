"""What the appliance is built from: host tools, Debian packages, the kernel.

Everything here is cheap (a few subprocesses and hashes of small files), so
that computing the cache key on a cache hit stays fast. The only expensive
step, downloading the kernel package, happens in :func:`ensure_kernel_deb`
and only when a build needs it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from . import _errors

ApplianceError = _errors.ApplianceError

# tool -> Debian package that provides it
TOOLS: dict[str, str] = {
    "dpkg-query": "dpkg",
    "dpkg-deb": "dpkg",
    "apt-cache": "apt",
    "apt-get": "apt",
    "ldd": "libc-bin",
    "busybox": "busybox-static",
    "dropbear": "dropbear-bin",
    "dropbearkey": "dropbear-bin",
    "dropbearconvert": "dropbear-bin",  # the context's ssh_keys (OpenSSH format) to dropbear's format
    "mke2fs": "e2fsprogs",
    "automount": "autofs",  # /cvmfs/<repository> mounted on first access, as cvmfs_config setup makes it
    "sshfs": "sshfs",  # the sshfs variant: shared folders by reverse SSHFS
    "blkid": "util-linux",
    "xorriso": "xorriso",
    "mksquashfs": "squashfs-tools",
    "modprobe": "kmod",
    "depmod": "kmod",
}

# data file -> Debian package that provides it
DATA_FILES: dict[str, tuple[str, str]] = {
    "isolinux.bin": ("/usr/lib/ISOLINUX/isolinux.bin", "isolinux"),
    "isohdpfx.bin": ("/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux"),
    "ldlinux.c32": ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
    "mke2fs.conf": ("/etc/mke2fs.conf", "e2fsprogs"),
}
AUTOFS_MODULES = (
    "lookup_file.so",
    "lookup_program.so",
    "parse_sun.so",
    "mount_generic.so",
    "mount_nfs.so",
    "mount_bind.so",
    "mount_autofs.so",
)
"""automount's own modules the appliance needs: a master map file naming a program map whose entries are plain
(generic) mounts; the sun parser loads the NFS module, which loads the bind module, whatever the map holds."""
DATA_FILES.update({m: (f"/usr/lib/x86_64-linux-gnu/autofs/{m}", "autofs") for m in AUTOFS_MODULES})

# the packages whose versions go into the cache key (tools change output bytes)
KEY_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "autofs",
    "e2fsprogs",
    "util-linux",
    "xorriso",
    "sshfs",
    "libfuse3-3",
    "squashfs-tools",
    "kmod",
    "isolinux",
    "syslinux-common",
    "libc6",
)

#: every Debian package the builder needs on the host (besides dpkg and apt)
HOST_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "autofs",
    "sshfs",
    "xorriso",
    "isolinux",
    "syslinux-common",
    "squashfs-tools",
    "kmod",
    "e2fsprogs",
    "util-linux",
)

GUEST_PACKAGES: dict[str, tuple[str, ...]] = {
    # the time daemon (CernVM 4 runs ntpd); installing openntpd on the host would replace the host's own time
    # daemon, so its package is downloaded like the kernel's and only its files are taken
    "openntpd": ("usr/sbin/ntpd",),
}
"""Debian packages the guest takes files from (paths inside the package) without installing them on the host."""

# searched after $PATH: sbin directories are often missing from a user's PATH
EXTRA_TOOL_DIRS: tuple[str, ...] = ("/usr/sbin", "/sbin", "/usr/lib/dropbear")

META_PACKAGE = "linux-image-amd64"
KERNEL_DEB_GLOB = "linux-image-[0-9]*-amd64_*_amd64.deb"
APT_LISTS = Path("/var/lib/apt/lists")
APT_STATE_FILES = (
    Path("/etc/apt/sources.list"),
    Path("/etc/apt/sources.list.d"),
    Path("/etc/apt/preferences"),
    Path("/etc/apt/preferences.d"),
    Path("/var/lib/dpkg/status"),
)

Log = Callable[[str], None]


def install_command(packages) -> str:
    return "apt-get install " + " ".join(dict.fromkeys(packages))


def _search_path() -> str:
    dirs = os.environ.get("PATH", os.defpath).split(os.pathsep)
    dirs += [d for d in EXTRA_TOOL_DIRS if d not in dirs]
    return os.pathsep.join(d for d in dirs if d)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    env.pop("LANGUAGE", None)
    return subprocess.run(argv, capture_output=True, text=True, env=env, **kw)


def _is_dynamic_elf(path: Path) -> bool:
    """True if the ELF file has a PT_INTERP program header (needs ld.so)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return True
        little = head[5] == 1
        order: Literal["little", "big"] = "little" if little else "big"
        phoff = int.from_bytes(head[32:40], order)
        phentsize = int.from_bytes(head[54:56], order)
        phnum = int.from_bytes(head[56:58], order)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type = int.from_bytes(table[i * phentsize : i * phentsize + 4], order)
        if p_type == 3:  # PT_INTERP
            return True
    return False


@dataclass(frozen=True)
class HostTools:
    tools: dict[str, str]  # tool name -> absolute path
    files: dict[str, str]  # data file name -> absolute path

    def __getitem__(self, name: str) -> str:
        return self.tools[name] if name in self.tools else self.files[name]


def find_host_tools() -> HostTools:
    """Locate every host tool and data file, or raise one actionable error."""
    search = _search_path()
    tools: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for tool, package in TOOLS.items():
        found = shutil.which(tool, path=search)
        if found:
            tools[tool] = os.path.abspath(found)
        else:
            missing.append((tool, package))
    files: dict[str, str] = {}
    for name, (path, package) in DATA_FILES.items():
        if os.path.isfile(path):
            files[name] = path
        else:
            missing.append((path, package))
    if any(pkg in ("dpkg", "apt") for _, pkg in missing):
        raise ApplianceError(
            "the appliance is built from Debian packages and needs a Debian or "
            "Ubuntu host with dpkg and apt; missing: " + ", ".join(t for t, p in missing if p in ("dpkg", "apt"))
        )
    if missing:
        raise ApplianceError(
            "cannot build the test appliance, missing host tools: "
            + ", ".join(f"{t} (package {p})" for t, p in missing)
            + f". Install them with: {install_command(p for _, p in missing)}"
        )
    if _is_dynamic_elf(Path(tools["busybox"])):
        raise ApplianceError(
            f"{tools['busybox']} is a dynamically linked busybox (package busybox); "
            "the appliance needs the static one. Install it with: "
            "apt-get install busybox-static"
        )
    return HostTools(tools, files)


def ldd_libraries(binary: str, ldd: str) -> list[str]:
    """Absolute paths of the shared libraries (and ld.so) ``binary`` needs."""
    proc = _run([ldd, binary])
    if proc.returncode != 0:
        raise ApplianceError(f"ldd {binary} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            raise ApplianceError(f"{binary} needs a library that is not installed: {line}")
        m = re.match(r"\S+\s+=>\s+(/\S+)", line) or re.match(r"(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def package_versions(tools: HostTools, packages=KEY_PACKAGES) -> dict[str, str]:
    proc = _run([tools["dpkg-query"], "-W", "-f", "${Package}\t${Version}\n", *packages])
    versions = {}
    for line in proc.stdout.splitlines():
        name, _, version = line.partition("\t")
        versions[name.split(":")[0]] = version
    return versions


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the kernel package ------------------------------------------------------


@dataclass(frozen=True)
class KernelPackage:
    name: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # e.g. 6.1.192-2
    sha256: str
    filename: str  # the .deb's file name
    origin: str  # "apt" (resolved through linux-image-amd64) or "cache"


def _apt_fingerprint() -> str:
    """Changes whenever apt's idea of the candidate kernel may have changed."""
    h = hashlib.sha256()
    paths: list[Path] = []
    if APT_LISTS.is_dir():
        paths += sorted(p for p in APT_LISTS.iterdir() if p.is_file())
    for p in APT_STATE_FILES:
        if p.is_dir():
            paths += sorted(q for q in p.iterdir())
        elif p.exists():
            paths.append(p)
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _apt_show(tools: HostTools, spec: str) -> dict[str, str]:
    proc = _run([tools["apt-cache"], "show", "--no-all-versions", spec])
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    fields: dict[str, str] = {}
    key = None
    for line in proc.stdout.splitlines():
        if not line.strip():
            break  # first record only
        if line[:1].isspace() and key:
            fields[key] += "\n" + line.strip()
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _kernel_from_apt(tools: HostTools) -> KernelPackage | None:
    meta = _apt_show(tools, META_PACKAGE)
    if not meta:
        return None
    dep = None
    for alternative in re.split(r"[,|]", meta.get("Depends", "")):
        m = re.match(r"\s*(linux-image-\d[^\s(]*-amd64)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", alternative)
        if m:
            dep = m
            break
    if dep is None:
        raise ApplianceError(
            f"{META_PACKAGE} {meta.get('Version', '?')} depends on no linux-image-*-amd64 "
            f"package (Depends: {meta.get('Depends', '')!r}); cannot choose a kernel"
        )
    name, version = dep.group(1), dep.group(2)
    record = _apt_show(tools, f"{name}={version}" if version else name)
    if not record:
        raise ApplianceError(
            f"{META_PACKAGE} depends on {name} {version or ''} but apt knows no such "
            "package; run `apt-get update` and try again"
        )
    filename = record.get("Filename", "").rsplit("/", 1)[-1] or f"{name}_{record['Version']}_amd64.deb"
    return KernelPackage(name, record["Version"], record.get("SHA256", ""), filename, "apt")


def _compare_versions(a: str, b: str) -> int:
    dpkg = shutil.which("dpkg", path=_search_path()) or "dpkg"
    if _run([dpkg, "--compare-versions", a, "lt", b]).returncode == 0:
        return -1
    return 0 if a == b else 1


def _kernel_from_cache(tools: HostTools, downloads: Path) -> KernelPackage | None:
    debs: list[tuple[str, str, Path]] = []
    for deb in downloads.glob(KERNEL_DEB_GLOB):
        name, version, _arch = deb.name[: -len(".deb")].split("_")
        debs.append((name, version.replace("%3a", ":"), deb))
    if not debs:
        return None
    key = functools.cmp_to_key(lambda x, y: _compare_versions(x[1], y[1]))  # type: ignore[index]
    name, version, deb = max(debs, key=key)
    return KernelPackage(name, version, sha256_file(deb), deb.name, "cache")


def _package_from_apt(tools: HostTools, name: str) -> KernelPackage | None:
    record = _apt_show(tools, name)
    if not record:
        return None
    filename = record.get("Filename", "").rsplit("/", 1)[-1] or f"{name}_{record['Version']}_amd64.deb"
    return KernelPackage(name, record["Version"], record.get("SHA256", ""), filename, "apt")


def _package_from_cache(name: str, downloads: Path) -> KernelPackage | None:
    debs: list[tuple[str, Path]] = []
    for deb in downloads.glob(f"{name}_*_amd64.deb"):
        debs.append((deb.name[: -len(".deb")].split("_")[1].replace("%3a", ":"), deb))
    if not debs:
        return None
    key = functools.cmp_to_key(lambda x, y: _compare_versions(x[0], y[0]))  # type: ignore[index]
    version, deb = max(debs, key=key)
    return KernelPackage(name, version, sha256_file(deb), deb.name, "cache")


def _remembered(memo: Path, ask_apt: Callable[[], KernelPackage | None]) -> KernelPackage | None:
    """apt's answer for a package, remembered in ``memo`` with a fingerprint of apt's state (a hit costs no
    apt-cache); None when apt knows nothing."""
    fingerprint = _apt_fingerprint()
    try:
        saved = json.loads(memo.read_text())
        if saved.pop("fingerprint") == fingerprint:
            return KernelPackage(**saved)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package = ask_apt()
    if package is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps(dict(asdict(package), fingerprint=fingerprint)))
        os.replace(tmp, memo)
    return package


def resolve_package(tools: HostTools, name: str, cache: Path, log: Log) -> KernelPackage:
    """The candidate version of the Debian package ``name`` (one of GUEST_PACKAGES), remembered like the kernel's
    with a fingerprint of apt's state; without usable apt lists, the newest one already in the cache."""
    return _resolve(
        name,
        _remembered(cache / f"package-{name}.json", lambda: _package_from_apt(tools, name)),
        lambda: _package_from_cache(name, cache / "downloads"),
        log,
    )


def resolve_kernel(tools: HostTools, cache: Path, log: Log) -> KernelPackage:
    """The kernel package that linux-image-amd64 currently depends on.

    apt's answer is remembered in the cache together with a fingerprint of
    apt's state, so that a cache hit does not pay for apt-cache. Without
    usable apt lists, the newest kernel package already downloaded into the
    cache is used.
    """
    return _resolve(
        META_PACKAGE,
        _remembered(cache / "kernel-package.json", lambda: _kernel_from_apt(tools)),
        lambda: _kernel_from_cache(tools, cache / "downloads"),
        log,
    )


def _resolve(
    name: str, from_apt: KernelPackage | None, from_cache: Callable[[], KernelPackage | None], log: Log
) -> KernelPackage:
    """apt's answer for package ``name``; else the newest package already in the cache (said so); else an error
    saying what to run."""
    if from_apt is not None:
        return from_apt
    cached = from_cache()
    if cached is not None:
        log(f"apt knows no {name}; using the package already in the cache: {cached.filename}")
        return cached
    raise ApplianceError(
        f"cannot find the Debian package {name}: apt knows no {name} (the package lists are missing or stale) "
        "and the appliance cache holds none. Run `apt-get update` (as root) and try again."
    )


@contextmanager
def file_lock(path: Path, log: Log | None = None, what: str = "") -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path``, waiting as long as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another builder of {what or path.name}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_kernel_deb(tools: HostTools, kernel: KernelPackage, cache: Path, log: Log) -> Path:
    """The kernel .deb in the cache's download folder, downloaded if needed."""
    return ensure_deb(tools, kernel, cache, log, "the kernel package")


def ensure_deb(tools: HostTools, kernel: KernelPackage, cache: Path, log: Log, what: str = "the package") -> Path:
    """A package's .deb in the cache's download folder, downloaded if needed."""
    downloads = cache / "downloads"
    target = downloads / kernel.filename
    with file_lock(downloads / ".lock", log, "the download folder"):
        if target.is_file():
            if not kernel.sha256 or sha256_file(target) == kernel.sha256:
                return target
            log(f"{target.name} in the cache does not match apt's checksum; downloading again")
            target.unlink()
        log(f"downloading {kernel.name} {kernel.version} with apt-get download")
        with tempfile.TemporaryDirectory(prefix=".download-", dir=downloads) as tmp:
            proc = _run([tools["apt-get"], "download", f"{kernel.name}={kernel.version}"], cwd=tmp)
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode != 0 or len(debs) != 1:
                detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise ApplianceError(
                    f"cannot download {what} {kernel.name} {kernel.version}: "
                    + " / ".join(detail)
                    + ". Run `apt-get update` (Debian's mirror keeps only recent versions, "
                    "of the kernel ABIs too) and check that the Debian mirror is reachable."
                )
            if kernel.sha256 and sha256_file(debs[0]) != kernel.sha256:
                raise ApplianceError(
                    f"the downloaded {debs[0].name} does not match apt's SHA256 checksum; "
                    "run `apt-get update` and try again"
                )
            os.replace(debs[0], target)
    return target
