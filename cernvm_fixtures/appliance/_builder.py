"""Builds the appliance: a shared base (kernel, modules, OS repository, Docker
root fs) and, per variant, a small initrd segment and an ISO.

Cache layout (``cache`` is ``cache_dir()/"appliance"`` by default)::

    downloads/<kernel>.deb           the kernel package, fetched with apt-get
    kernel-package.json              apt's answer, with a fingerprint of apt's state
    base-<key16>/                    shared by all variants (expensive to build)
    <variant>-<key16>/               one per variant: everything a test needs
    .lock-<entry>                    flock files serialising builders of one entry

An entry is built in ``.tmp-<entry>-*`` and renamed into place when complete,
so an interrupted build is never reused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _archive, _host
from ._errors import ApplianceError

PACKAGE_DIR = Path(__file__).resolve().parent
FILES = PACKAGE_DIR / "files"

#: bootloader version (bump when the appliance changes in a way users notice)
RELEASE = "2026.11-1"
VERSION = f"{RELEASE}.appliance.x86_64"
PREVIOUS_RELEASE = "2026.05-1"
"""The release before :data:`RELEASE`: the variant ``previous`` boots as it (same OS repository, older bootloader),
so that an upgrade (the same scratch disk, then this release's ISO) can be tested."""
#: timestamp of every file in every artifact (reproducible builds)
SOURCE_DATE_EPOCH = 1793491200  # 2026-11-01T00:00:00Z
OS_REPO = "cernvm-prod.cern.ch"
OS_PATH = "cvm4"
ISO_LABEL = "UCERNVM_APPLIANCE"

STRATUM1 = "10.0.2.100"
"""The appliance's CernVM-FS server as the guest reaches it (its ``cvmfs_server=``): an address of QEMU's
user-mode network that the KVM provider forwards to a process on the host serving :data:`STRATUM1_DIR`
(``guestfwd``), whether or not the guest may reach anything else."""
STRATUM1_DIR = "stratum1"
"""Directory of a base cache entry the appliance's CernVM-FS server serves: ``cvmfs/<repo>/os.squashfs``."""
NO_SERVER = "10.0.2.101"
"""Where the variant ``no-stratum1`` looks for its server: nothing answers there."""
CVMFS_ARGS = f"cvmfs_repos={OS_REPO} cernvm_path={OS_PATH}"
SERIAL_CONSOLE = "console=ttyS0"
"""What CernVM's hvm (EC2), tar.gz (GCE) and vhd (Azure) images add to the kernel line; the ISO has no console=."""

# variant -> (description, flags that differ from the correct appliance)
_VARIANTS: dict[str, tuple[str, dict[str, int]]] = {
    "ok": ("the correct appliance", {}),
    "no-cvmfs": (
        "the OS repository is not mounted on /cvmfs/cernvm-prod.cern.ch (cvmfs_config probe fails)",
        {"UCVM_CVMFS": 0},
    ),
    "no-scratch": (
        "the empty disk is left untouched; /mnt/.rw is a tmpfs (no UROOT, no aux/ucernvm-version)",
        {"UCVM_SCRATCH": 0},
    ),
    "no-shared": ("9p shared folders are not mounted", {"UCVM_SHARED": 0}),
    "no-stratum1": (
        "the kernel line names a CernVM-FS server nobody answers at: the boot stops with µCernVM's "
        "'Unable to mount cvmfs root filesystem!' on the screen (tty0); the serial port stays silent",
        {},
    ),
    "bad-cmdline": ("the kernel command line lacks cvmfs_repos= and cernvm_path=", {}),
    "no-context": (
        "no host name from meta-data, no context/user-data or context/source (SSH keys are still installed)",
        {"UCVM_CONTEXT": 0},
    ),
    "nocloud-only": (
        "reads the NoCloud files at the context ISO's root instead of the config drive's "
        "openstack/latest/user_data, and records NoCloud as context source",
        {"UCVM_CONFIGDRIVE": 0},
    ),
    "no-ready": ("never creates the ready file nor prints the ready line (SSH still works)", {"UCVM_READY": 0}),
    "no-ssh": ("no SSH server starts (the ready line is still printed)", {"UCVM_SSH": 0}),
    "sshfs": (
        "no 9p (its modules are not loaded), like a real CernVM 4 kernel; sshfs and FUSE instead, for "
        "shared folders by reverse SSHFS over the instance's SSH connection",
        {"UCVM_9P": 0},
    ),
    "unclean-boot": (
        "the OS stage logs an error line at boot (in /mnt/.rw/ulogs/ucernvm-boot.log and on the screen); its name "
        "has none of the error words, so that only that line counts",
        {"UCVM_CLEAN_BOOT": 0},
    ),
    "no-ntpd": ("no time daemon runs (the clock is still right)", {"UCVM_NTPD": 0}),
    "no-shm": ("/dev/shm is not mounted (a plain directory on /dev's devtmpfs, no tmpfs)", {"UCVM_SHM": 0}),
    "root-password": (
        "root has a password (the one CernVM's debug boot sets) and dropbear offers password logins",
        {"UCVM_ROOT_LOCKED": 0},
    ),
    "reboot-reformats": (
        "the bootloader formats the scratch disk at every boot, not only the first: what a reboot should keep "
        "there (files, the recorded context) is gone",
        {"UCVM_SCRATCH_KEEP": 0},
    ),
    "cable-hang": (
        "the bootloader waits for a DHCP lease as long as it takes: a boot with the network cable pulled never "
        "completes (it goes on once the cable is back)",
        {"UCVM_BOOT_OFFLINE": 0},
    ),
    "no-acpi": (
        "nothing handles the ACPI power button (no acpid): the instance ignores a shutdown request",
        {"UCVM_ACPI": 0},
    ),
    "previous": (
        f"the previous release ({PREVIOUS_RELEASE}): the same appliance with an older bootloader version, to "
        "upgrade from (not broken)",
        {},
    ),
    "scratch-unpartitioned": (
        "the bootloader formats the whole empty disk without a partition table, whatever its size and the "
        "context's resize_rootfs (µCernVM partitions it)",
        {"UCVM_SCRATCH_PARTITION": 0},
    ),
    "no-users": (
        "the OS stage ignores amiconfig's [cernvm] users= (no user is created from it; cloud-config users: still are)",
        {"UCVM_USERS": 0},
    ),
}
VARIANTS: dict[str, str] = {name: desc for name, (desc, _) in _VARIANTS.items()}
_FLAGS = (
    "UCVM_CVMFS",
    "UCVM_SCRATCH",
    "UCVM_SHARED",
    "UCVM_CONTEXT",
    "UCVM_READY",
    "UCVM_SSH",
    "UCVM_CONFIGDRIVE",
    "UCVM_9P",
    "UCVM_CLEAN_BOOT",
    "UCVM_NTPD",
    "UCVM_SHM",
    "UCVM_ROOT_LOCKED",
    "UCVM_ACPI",
    "UCVM_SCRATCH_KEEP",
    "UCVM_BOOT_OFFLINE",
    "UCVM_SCRATCH_PARTITION",
    "UCVM_USERS",
)

# where the OS tree gets the host binaries (path in the tree)
_BINARIES = {
    "busybox": "bin/busybox",
    "dropbear": "usr/sbin/dropbear",
    "dropbearkey": "usr/bin/dropbearkey",
    "mke2fs": "sbin/mke2fs",
    "blkid": "sbin/blkid",  # util-linux: busybox-static has no blkid applet
    "dropbearconvert": "usr/bin/dropbearconvert",
    "automount": "usr/sbin/automount",
    "sshfs": "usr/lib/cernvm-fixtures/sshfs",  # on PATH only in the sshfs variant (rc.sysinit links it)
}

Log = Callable[[str], None]


def cmdline_for(variant: str) -> str:
    """The ISO's kernel line: like the released ISO, no console= word (so /dev/console is tty0, the screen)."""
    server = NO_SERVER if variant == "no-stratum1" else STRATUM1
    if variant == "bad-cmdline":
        return f"cvmfs_server={server}"
    return f"{CVMFS_ARGS} cvmfs_server={server}"


def version_for(variant: str) -> str:
    """The bootloader version a variant reports (aux/ucernvm-version): the previous release's for ``previous``."""
    return f"{PREVIOUS_RELEASE}.appliance.x86_64" if variant == "previous" else VERSION


def variant_conf(variant: str) -> str:
    flags = {flag: 1 for flag in _FLAGS}
    flags.update(_VARIANTS[variant][1])
    lines = [f"UCVM_VARIANT={variant}"] + [f"{k}={v}" for k, v in flags.items()]
    if version_for(variant) != VERSION:
        lines.append(f"UCVM_VERSION={version_for(variant)}")  # after build.conf's, which it overrides
    return "\n".join(lines) + "\n"


def check_variant(variant: str) -> None:
    if variant not in _VARIANTS:
        raise ApplianceError(f"unknown appliance variant {variant!r}; valid variants: " + ", ".join(_VARIANTS))


# --- inputs and keys ---------------------------------------------------------


def _ignored(path: Path) -> bool:
    """Editor droppings and caches, never part of the builder's inputs."""
    return (
        path.name.startswith(".")
        or path.name.endswith("~")
        or "__pycache__" in path.parts
        or path.suffix in (".pyc", ".pyo")
    )


def builder_digest() -> str:
    """Hash of the builder itself: its Python modules and files/ (not caches)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if _ignored(path) or not path.is_file():
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Inputs:
    tools: _host.HostTools
    kernel: _host.KernelPackage
    libraries: tuple[str, ...]  # absolute host paths of ld.so and shared libraries
    material: dict  # everything that determines the output, for the key
    packages: tuple[_host.KernelPackage, ...] = ()  # _host.GUEST_PACKAGES, resolved

    @property
    def base_key(self) -> str:
        blob = json.dumps(self.material, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def variant_key(self, variant: str) -> str:
        return hashlib.sha256(f"{self.base_key}\0{variant}".encode()).hexdigest()


def collect_inputs(cache: Path, log: Log) -> Inputs:
    tools = _host.find_host_tools()
    kernel = _host.resolve_kernel(tools, cache, log)
    libraries: list[str] = []
    linked = [tools[t] for t in ("dropbear", "dropbearkey", "dropbearconvert", "mke2fs", "blkid", "sshfs", "automount")]
    for binary in linked + [tools.files[m] for m in _host.AUTOFS_MODULES]:
        for lib in _host.ldd_libraries(binary, tools["ldd"]):
            if lib not in libraries:
                libraries.append(lib)
    hashed = [tools[t] for t in _BINARIES] + libraries + list(tools.files.values())
    packages = tuple(_host.resolve_package(tools, name, cache, log) for name in _host.GUEST_PACKAGES)
    material = {
        "builder": builder_digest(),
        "kernel": [kernel.name, kernel.version, kernel.sha256],
        "guest_packages": [[p.name, p.version, p.sha256] for p in packages],
        "packages": _host.package_versions(tools),
        "files": {path: _host.sha256_file(path) for path in hashed},
        "python": list(sys.version_info[:2]),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "version": VERSION,
        "epoch": SOURCE_DATE_EPOCH,
    }
    return Inputs(tools, kernel, tuple(libraries), material, packages)


# --- helpers -------------------------------------------------------------------


def _run(argv: list, what: str, epoch: bool = True, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")
    env.pop("SOURCE_DATE_EPOCH", None)
    if epoch:
        env["SOURCE_DATE_EPOCH"] = str(SOURCE_DATE_EPOCH)
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, **kw)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ApplianceError(f"{what} failed (exit {proc.returncode}): " + " / ".join(detail))
    return proc


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy(src: str | Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # follows symlinks: the real content under ldd's name
    os.chmod(dst, mode)


def _file_mode(path: Path) -> int:
    if path.name == "shadow":
        return 0o600
    with open(path, "rb") as f:
        return 0o755 if f.read(2) == b"#!" else 0o644


def _copy_files_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if _ignored(path):
            continue
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
            os.chmod(dst / rel, 0o755)
        else:
            _copy(path, dst / rel, _file_mode(path))


class _Timer:
    def __init__(self, log: Log):
        self.log = log
        self.t0 = time.monotonic()

    def step(self, message: str) -> None:
        self.log(f"[{time.monotonic() - self.t0:6.2f}s] {message}")


# --- the base ------------------------------------------------------------------


def _wanted_modules() -> list[tuple[str, bool]]:
    wanted = []
    for line in (FILES / "modules.txt").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            wanted.append((words[0], "optional" in words[1:]))
    return wanted


def _module_order(tools: _host.HostTools, moddir_root: Path, kver: str, work: Path) -> list[Path]:
    """Absolute paths of the .ko files to insmod, in load order."""
    confdir = work / "modprobe.d"  # keep the host's modprobe configuration out
    confdir.mkdir(exist_ok=True)
    order: list[Path] = []
    missing = []
    for name, optional in _wanted_modules():
        proc = subprocess.run(
            [
                tools["modprobe"],
                "-d",
                str(moddir_root),
                "-S",
                kver,
                "-C",
                str(confdir),
                "--ignore-install",
                "--show-depends",
                name,
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, LC_ALL="C"),
        )
        if proc.returncode != 0:
            if not optional:
                missing.append(name)
            continue
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in order:
                    order.append(path)
    if missing:
        raise ApplianceError(
            f"the kernel {kver} has no module(s) {', '.join(missing)} (neither built in "
            "nor in its modules.dep); the appliance cannot boot with this kernel"
        )
    return order


def _read_module(path: Path) -> tuple[bytes, str]:
    """Module content, decompressed, and its name ending in .ko."""
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes()), name[:-3]
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes()), name[:-3]
    if name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise ApplianceError("the kernel's modules are zstd-compressed; install zstd: apt-get install zstd")
        return subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout, name[:-4]
    return path.read_bytes(), name


def _guest_package_files(inputs: Inputs, cache: Path, work: Path, log: Log) -> dict[str, Path]:
    """The files the guest takes from GUEST_PACKAGES (path in the tree -> unpacked file), downloaded if needed."""
    found: dict[str, Path] = {}
    for package in inputs.packages:
        deb = _host.ensure_deb(inputs.tools, package, cache, log, "the guest package")
        unpacked = work / "packages" / package.name
        unpacked.mkdir(parents=True)
        _run([inputs.tools["dpkg-deb"], "-x", deb, unpacked], f"dpkg-deb -x {deb.name}")
        for rel in _host.GUEST_PACKAGES[package.name]:
            if not (unpacked / rel).is_file():
                raise ApplianceError(f"{deb.name} holds no {rel}")
            found[rel] = unpacked / rel
    return found


def _stage_os_tree(inputs: Inputs, root: Path, extra: dict[str, Path] | None = None) -> None:
    """The OS tree (cvm4): busybox, dropbear, mke2fs, libraries, /etc, scripts; ``extra``: files from
    GUEST_PACKAGES (with the libraries they need)."""
    tools = inputs.tools
    for d, mode in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("usr/lib", 0o755),
        ("lib", 0o755),
        ("lib64", 0o755),
        ("etc/dropbear", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("mnt/.ro", 0o755),
        ("mnt/.rw", 0o755),
        ("mnt/shared", 0o755),
        ("cvmfs", 0o755),  # autofs mounts repositories under it on first access
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
        ("var/lib", 0o755),
    ]:
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    os.symlink("/run", root / "var/run")
    for tool, dest in _BINARIES.items():
        _copy(tools[tool], root / dest, 0o755)
    os.symlink("mke2fs", root / "sbin/mkfs.ext4")
    for lib in inputs.libraries:
        _copy(lib, root / lib.lstrip("/"), 0o755)
    for rel, source in (extra or {}).items():
        _copy(source, root / rel, 0o755)
        for lib in _host.ldd_libraries(str(source), tools["ldd"]):
            if not (root / lib.lstrip("/")).exists():
                _copy(lib, root / lib.lstrip("/"), 0o755)
    _copy(tools["mke2fs.conf"], root / "etc/mke2fs.conf", 0o644)
    for module in _host.AUTOFS_MODULES:
        _copy(tools.files[module], root / tools.files[module].lstrip("/"), 0o644)
    proc = _run([tools["busybox"], "--list-full"], "busybox --list-full")
    for applet in proc.stdout.split():
        link = root / applet
        if link.exists() or link.is_symlink():
            continue  # a real program (mke2fs) wins over the applet
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    _copy_files_tree(FILES / "os", root)


#: where the Docker image carries the repositories its /init presents in parrot mode
#: (a stand-in for parrot's cvmfs access; CernVM's image has /UCVM/parrot_preload.tar.xz)
DOCKER_PRELOAD = "UCVM/parrot-preload"

# directories of the Docker image's own root (the OS itself comes from CERNVM_ROOT)
_DOCKER_DIRS = (
    ("cvmfs", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("mnt", 0o755),
    ("mnt/shared", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("var", 0o755),
    ("var/cache", 0o755),
    ("var/lib", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
)


def docker_entries(busybox: Path, repository: Path) -> list[_archive.Entry]:
    """The CernVM-in-Docker root fs: /init, /UCVM (busybox for /init, version,
    keys, the parrot preload holding ``repository``) and empty directories.

    Like CernVM's image it does not carry the OS in its root: /init links it in
    from CERNVM_ROOT, which lies in a bind-mounted or (stand-in) parrot-presented
    repository.
    """
    entries = [_archive.Entry(path, stat.S_IFDIR | mode) for path, mode in _DOCKER_DIRS]
    entries.append(_archive.Entry("var/run", stat.S_IFLNK | 0o777, target="/run"))
    entries.append(_archive.Entry("init", stat.S_IFREG | 0o755, source=FILES / "docker/init"))
    entries.append(_archive.Entry("UCVM", stat.S_IFDIR | 0o755))
    entries.append(_archive.Entry("UCVM/busybox", stat.S_IFREG | 0o755, source=busybox))
    entries.append(_archive.Entry("UCVM/version", stat.S_IFREG | 0o644, data=(VERSION + "\n").encode()))
    entries.append(_archive.Entry("UCVM/keys", stat.S_IFDIR | 0o755))
    for key in sorted(k for k in (FILES / "keys").iterdir() if not _ignored(k)):
        entries.append(_archive.Entry(f"UCVM/keys/{key.name}", stat.S_IFREG | 0o644, source=key))
    entries.append(_archive.Entry(DOCKER_PRELOAD, stat.S_IFDIR | 0o755))
    entries.append(_archive.Entry(f"{DOCKER_PRELOAD}/{OS_REPO}", stat.S_IFDIR | 0o755))
    entries.extend(_archive.tree_entries(repository, prefix=f"{DOCKER_PRELOAD}/{OS_REPO}"))
    # the key the preloaded copy is "signed" with: /init checks pubkey= against it
    entries.append(
        _archive.Entry(
            f"{DOCKER_PRELOAD}/{OS_REPO}.pub", stat.S_IFREG | 0o644, source=FILES / "keys" / f"{OS_REPO}.pub"
        )
    )
    return entries


def _build_base(inputs: Inputs, out: Path, cache: Path, log: Log) -> dict:
    timer = _Timer(log)
    tools = inputs.tools
    deb = _host.ensure_kernel_deb(tools, inputs.kernel, cache, log)
    timer.step(f"kernel package {deb.name}")
    work = out / "work"
    kroot = work / "kernel"
    kroot.mkdir(parents=True)
    _run([tools["dpkg-deb"], "-x", deb, kroot], f"dpkg-deb -x {deb.name}")
    timer.step("kernel package unpacked")

    moddir_root = kroot / "usr" if (kroot / "usr/lib/modules").is_dir() else kroot
    kvers = (
        sorted(p.name for p in (moddir_root / "lib/modules").iterdir())
        if (moddir_root / "lib/modules").is_dir()
        else []
    )
    if len(kvers) != 1:
        raise ApplianceError(f"{deb.name} holds {len(kvers)} module trees ({kvers}); expected one")
    kver = kvers[0]
    vmlinuz = next(
        (p for p in [kroot / f"boot/vmlinuz-{kver}", kroot / f"usr/lib/modules/{kver}/vmlinuz"] if p.is_file()), None
    )
    if vmlinuz is None:
        raise ApplianceError(f"{deb.name} holds no vmlinuz for {kver}")
    _copy(vmlinuz, out / "vmlinuz", 0o644)

    _run([tools["depmod"], "-b", moddir_root, kver], "depmod")
    modules = _module_order(tools, moddir_root, kver, work)
    timer.step(f"{len(modules)} modules selected from modules.dep of {kver}")

    # --- initramfs (bootloader stage) ---
    initramfs = work / "initramfs"
    for d in ("bin", "dev", "proc", "sys", "run", "tmp", "mnt/.ro", "mnt/.rw", "newroot", "etc/ucvm"):
        (initramfs / d).mkdir(parents=True, exist_ok=True)
        os.chmod(initramfs / d, 0o755)
    _copy(FILES / "initramfs/init", initramfs / "init", 0o755)
    _copy(FILES / "initramfs/udhcpc.script", initramfs / "etc/ucvm/udhcpc.script", 0o755)
    _copy(FILES / "os/usr/libexec/cernvm-fixtures/ucontext.awk", initramfs / "etc/ucvm/ucontext.awk", 0o644)
    _copy(tools["busybox"], initramfs / "bin/busybox", 0o755)
    moddir = moddir_root / "lib/modules" / kver
    order_lines = []
    for ko in modules:
        content, name = _read_module(ko)
        rel = ko.relative_to(moddir).parent / name
        dest = initramfs / "lib/modules" / kver / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        os.chmod(dest, 0o644)
        order_lines.append(rel.as_posix())
    for sub in (initramfs / "lib").rglob("*"):
        if sub.is_dir():
            os.chmod(sub, 0o755)
    (initramfs / "etc/ucvm/modules.order").write_text("\n".join(order_lines) + "\n")
    lib_dirs = sorted({os.path.dirname(lib) for lib in inputs.libraries if "/ld-linux" not in lib})
    ldso = next(lib for lib in inputs.libraries if "/ld-linux" in lib)
    build_conf = {
        "UCVM_VERSION": VERSION,
        "UCVM_KVER": kver,
        "UCVM_OS_REPO": OS_REPO,
        "UCVM_OS_PATH": OS_PATH,
        "UCVM_LDSO": ldso,
        "UCVM_LIBPATH": ":".join(f"@OS@{d}" for d in lib_dirs),
        "UCVM_MKE2FS": "/" + _BINARIES["mke2fs"],
    }
    (initramfs / "etc/ucvm/build.conf").write_text("".join(f"{k}={v}\n" for k, v in build_conf.items()))
    (initramfs / "etc/ucvm/version").write_text(VERSION + "\n")

    # --- OS repository (squashfs), served to the guest by the appliance's CernVM-FS server ---
    repo = work / "repository"
    os_tree = repo / OS_PATH
    os_tree.mkdir(parents=True)
    _stage_os_tree(inputs, os_tree, _guest_package_files(inputs, cache, work, log))
    _copy_files_tree(FILES / "repository", repo)  # README, and the workload's setup.sh and analysis/
    (repo / ".cvmfs-repository").write_text(OS_REPO + "\n")
    os.chmod(repo, 0o755)
    timer.step("OS tree staged")
    (out / STRATUM1_DIR / "cvmfs" / OS_REPO).mkdir(parents=True)
    _run(
        [
            tools["mksquashfs"],
            repo,
            out / STRATUM1_DIR / "cvmfs" / OS_REPO / "os.squashfs",
            "-noappend",
            "-comp",
            "gzip",
            "-all-root",
            "-no-xattrs",
            "-mkfs-time",
            SOURCE_DATE_EPOCH,
            "-all-time",
            SOURCE_DATE_EPOCH,
            "-quiet",
            "-no-progress",
        ],
        "mksquashfs",
        epoch=False,
    )  # mksquashfs refuses SOURCE_DATE_EPOCH together with -all-time
    os.chmod(out / STRATUM1_DIR / "cvmfs" / OS_REPO / "os.squashfs", 0o644)
    timer.step("OS repository squashfs made")

    entries = list(_archive.tree_entries(initramfs))
    entries.append(_archive.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(_archive.Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    _archive.gzip_file(lambda s: _archive.write_cpio(s, entries, SOURCE_DATE_EPOCH), out / "initrd-base.img")
    timer.step("base initrd written")

    # --- Docker root fs ---
    docker = docker_entries(Path(tools["busybox"]), repo)
    tarball = out / f"cvm-docker.{VERSION}.tar.gz"
    _archive.gzip_file(lambda s: _archive.write_tar(s, docker, SOURCE_DATE_EPOCH), tarball)
    timer.step("Docker root fs tarball written")

    shutil.rmtree(work)
    manifest = {
        "kernel_package": f"{inputs.kernel.name} {inputs.kernel.version}",
        "kernel_release": kver,
        "modules": order_lines,
        "docker_tarball": tarball.name,
        "version": VERSION,
    }
    (out / "base.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- one variant ---------------------------------------------------------------


def _build_variant(inputs: Inputs, variant: str, base: Path, out: Path, log: Log) -> dict:
    timer = _Timer(log)
    tools = inputs.tools
    manifest = json.loads((base / "base.json").read_text())
    cmdline = cmdline_for(variant)

    segment = [
        _archive.Entry("etc", stat.S_IFDIR | 0o755),
        _archive.Entry("etc/ucvm", stat.S_IFDIR | 0o755),
        _archive.Entry("etc/ucvm/variant.conf", stat.S_IFREG | 0o644, data=variant_conf(variant).encode()),
    ]
    seg_path = out / "initrd-variant.img"
    _archive.gzip_file(lambda s: _archive.write_cpio(s, segment, SOURCE_DATE_EPOCH), seg_path)
    initrd = out / "initrd.img"
    with open(initrd, "wb") as f:
        f.write((base / "initrd-base.img").read_bytes())
        f.write(seg_path.read_bytes())
    _link_or_copy(base / "vmlinuz", out / "vmlinuz")
    _link_or_copy(base / manifest["docker_tarball"], out / manifest["docker_tarball"])
    served = Path(STRATUM1_DIR) / "cvmfs" / OS_REPO / "os.squashfs"
    _link_or_copy(base / served, out / served)
    for d in (out / STRATUM1_DIR, *(out / STRATUM1_DIR).rglob("*")):
        if d.is_dir():
            os.chmod(d, 0o755)

    stage = out / "iso-root"
    _copy(tools["isolinux.bin"], stage / "isolinux/isolinux.bin", 0o644)
    _copy(tools["ldlinux.c32"], stage / "isolinux/ldlinux.c32", 0o644)
    cfg = (FILES / "iso/isolinux.cfg").read_text()
    cfg = cfg.replace("@VERSION@", version_for(variant)).replace("@VARIANT@", variant)
    cfg = cfg.replace("@CMDLINE@", cmdline)
    (stage / "isolinux/isolinux.cfg").write_text(cfg)
    _link_or_copy(out / "vmlinuz", stage / "boot/vmlinuz")
    _link_or_copy(initrd, stage / "boot/initrd.img")
    (stage / "VERSION").write_text(f"{version_for(variant)} {variant}\n")
    for p in [stage, *stage.rglob("*")]:
        os.utime(p, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)
    iso = out / f"ucernvm-{variant}.{version_for(variant)}.iso"
    _run(
        [
            tools["xorriso"],
            "-as",
            "mkisofs",
            "-quiet",
            "-o",
            iso,
            "-V",
            ISO_LABEL,
            "-J",
            "-r",
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-isohybrid-mbr",
            tools["isohdpfx.bin"],
            stage,
        ],
        "xorriso (ISO image)",
    )
    shutil.rmtree(stage)
    timer.step(f"variant {variant}: initrd and ISO written")
    return {
        "variant": variant,
        "version": version_for(variant),
        "cmdline": cmdline,
        "iso": iso.name,
        "kernel": "vmlinuz",
        "initrd": initrd.name,
        "docker_tarball": manifest["docker_tarball"],
        "stratum1": STRATUM1_DIR,
        "kernel_release": manifest["kernel_release"],
        "kernel_package": manifest["kernel_package"],
    }


# --- cache entries -------------------------------------------------------------


def _entry_complete(entry: Path, marker: str) -> bool:
    return (entry / marker).is_file()


def _build_entry(cache: Path, name: str, marker: str, force: bool, log: Log, build: Callable[[Path], dict]) -> Path:
    """Build ``cache/name`` with ``build(tmpdir)`` unless it exists complete."""
    entry = cache / name
    if not force and _entry_complete(entry, marker):
        return entry
    with _host.file_lock(cache / f".lock-{name}", log, name):
        if not force and _entry_complete(entry, marker):
            return entry  # another builder finished it while we waited
        for stale in cache.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted build of ours
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
        try:
            build(tmp)
            os.chmod(tmp, 0o755)
            if entry.exists():
                old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=cache))
                os.rename(entry, old / name)
                os.rename(tmp, entry)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry


PRUNE_AGE = 3600.0
"""Entries of other inputs untouched for this long are removed when a new base is built."""


def prune(cache: Path, current: set[str], kernel_deb: str, log: Log, keep: tuple[str, ...] = ()) -> None:
    """Drop cache entries and kernel packages of other builder inputs (each edit makes new ones).

    Only those older than PRUNE_AGE: a concurrent run of another checkout may still be using its own.
    """
    limit = time.time() - PRUNE_AGE
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "downloads"]
    entries += [p for p in (cache / "downloads").glob("*.deb") if p.name != kernel_deb and p.name not in keep]
    for path in entries:
        if path.name in current or path.stat().st_mtime > limit:
            continue
        log(f"removing the outdated cache entry {path.name}")
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def build_entry(variant: str, cache: Path, force: bool, log: Log) -> tuple[Path, dict, str]:
    """Return (entry directory, its manifest, key), building what is missing."""
    check_variant(variant)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=cache, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise ApplianceError(
            f"cannot write the appliance cache {cache}: {exc.strerror or exc}; set "
            "CERNVM_FIXTURES_CACHE to a writable directory"
        ) from None
    inputs = collect_inputs(cache, log)
    key = inputs.variant_key(variant)
    name = f"{variant}-{key[:16]}"
    entry = cache / name
    if not force and _entry_complete(entry, "appliance.json"):
        return entry, json.loads((entry / "appliance.json").read_text()), key

    base_name = f"base-{inputs.base_key[:16]}"

    def make_base(tmp: Path) -> dict:
        log(f"building the appliance base {base_name} (kernel {inputs.kernel.name} {inputs.kernel.version})")
        current = {base_name} | {f"{v}-{inputs.variant_key(v)[:16]}" for v in _VARIANTS}
        prune(cache, current, inputs.kernel.filename, log, tuple(p.filename for p in inputs.packages))
        return _build_base(inputs, tmp, cache, log)

    def make_variant(tmp: Path) -> dict:
        base = _build_entry(cache, base_name, "base.json", force, log, make_base)
        log(f"building appliance variant {variant} ({name})")
        manifest = _build_variant(inputs, variant, base, tmp, log)
        manifest["key"] = key
        manifest["inputs"] = inputs.material
        (tmp / "appliance.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    entry = _build_entry(cache, name, "appliance.json", force, log, make_variant)
    return entry, json.loads((entry / "appliance.json").read_text()), key
