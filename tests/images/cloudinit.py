"""A test image running real cloud-init under CernVM 4's cloud-init settings, built from Debian 12 packages.

What it proves: the user data the harness sends (``Context.render()``, on the ``config-2`` context ISO of
``write_seed``) is what cloud-init itself accepts, not only what the appliance's own reading of it accepts.

The image is a live ISO booted like the released CernVM ISO (isolinux, from the CD drive):

* the root file system is ``debootstrap --variant=minbase`` of Debian 12 plus, with
  ``--no-install-recommends``, systemd, udev, dbus, cloud-init, openssh-server, iproute2, the current kernel
  (``linux-image-amd64``) and live-boot; it is a squashfs on the ISO under a tmpfs overlay (live-boot);
* cloud-init has CernVM 4's settings (cernvm-config ``50_cernvm.cfg``: ``users: []``, ``disable_root: false``,
  ``datasource_list: [NoCloud, ConfigDrive, AltCloud, OVF, MAAS, None]``); Debian's ``90_dpkg.cfg``, which would
  override that list, is removed (CernVM has no such file);
* the kernel line has no ``console=``: like the released ISO, ``/dev/console`` is tty0 and nothing (kernel,
  systemd, cloud-init's host key block) reaches the serial port;
* nothing waits for a network that cannot reach anything (the harness's user network is ``restrict=on``):
  ``systemd-networkd-wait-online`` is masked, and no DNS or NTP client is installed.

The image keeps the host keys openssh-server's postinst generated in the chroot (as a pristine image with
static keys would): cloud-init's ``ssh_deletekeys`` (default true) must remove them at first boot.

Built once per set of inputs and cached under ``cache_dir()/"cloudinit-image"``::

    debs/                 .deb files debootstrap and apt fetched (reused by the next build of the root)
    root-<key16>/         the installed root file system (``root/``) and ``root.json``; the slow part
    image-<key16>/        ``cloudinit.iso`` and ``image.json`` (package versions, kernel command line, seconds spent)
    .lock-<entry>         flock files serialising builders of one entry

Each entry is built in ``.tmp-<entry>-*`` under its lock and renamed into place when complete, so an
interrupted build is never reused. A root's key covers the Debian sources it is installed from, the candidate
versions of its packages as the host's apt sees them and the code that installs it (``build_root``,
``in_chroot``); an image's key covers its root and this whole file. Entries of other keys untouched for an hour
are removed when a new one is built.

Needs root (debootstrap, chroot), debootstrap, mksquashfs (squashfs-tools), xorriso, isolinux and
syslinux-common, and the Debian mirror the host's apt uses (read from /etc/apt/sources.list(.d)).
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cernvm_fixtures.dirs import cache_dir

SUITE = "bookworm"
"""Debian 12."""
SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
"""The suites the root is installed from (those of them the host's apt lists), so it gets the current updates."""
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "iproute2",
    "linux-image-amd64",
    "live-boot",
)
"""Installed with --no-install-recommends on top of debootstrap's minbase."""
KEY_PACKAGES = ("cloud-init", "openssh-server", "systemd", "live-boot", "linux-image-amd64")
"""Their candidate versions, as the host's apt sees them, are part of the root's key: a new one on the mirror
makes a new root (the manifest records the versions installed)."""

CMDLINE = "boot=live net.ifnames=0 quiet"
"""The ISO's kernel line: live-boot's root; eth0 as on CernVM; no console= (so tty0, as the released ISO)."""

LIVE_IMAGE_CLOUD_CFG = """\
# The cernvm-fixtures cloud-init test image's own settings (not CernVM's): its root is live-boot's overlay on a
# tmpfs, which has no device to grow or resize (cloud-init would warn "Device '/dev/overlay' did not exist").
resize_rootfs: false
growpart:
  mode: "off"
"""

CERNVM_CLOUD_CFG = """\
# CernVM 4's cloud-init settings (cernvm-config, branch cernvm-4, 50_cernvm.cfg), restated for the
# cernvm-fixtures cloud-init test image.
users: []
disable_root: false
datasource_list: [NoCloud, ConfigDrive, AltCloud, OVF, MAAS, None]
"""

ISOLINUX_CFG = f"""\
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /live/vmlinuz
  APPEND initrd=/live/initrd.img {CMDLINE}
"""

SQUASHFS_EXCLUDED = (
    "boot/*",  # the kernel and initrd are on the ISO, beside the squashfs
    "proc/*",
    "sys/*",
    "dev/*",
    "run/*",
    "tmp/*",
    "usr/share/doc/*",
    "usr/share/man/*",
)
UNUSED_MODULES = (
    "sound",
    "drivers/gpu",
    "drivers/media",
    "drivers/infiniband",
    "drivers/iio",
    "drivers/staging",
    "drivers/comedi",
    "drivers/net/wireless",
)
"""Kernel module trees no virtual machine here loads (about 150 MB): left out of the squashfs."""

ISOLINUX_FILES = {
    "isolinux.bin": Path("/usr/lib/ISOLINUX/isolinux.bin"),
    "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
}
TOOLS = {"debootstrap": "debootstrap", "mksquashfs": "squashfs-tools", "xorriso": "xorriso", "unshare": "util-linux"}

PRUNE_AGE = 3600.0
"""Entries of other keys untouched for this long are removed when a new entry is built."""

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The image cannot be built here; the message says what is missing."""


@dataclass(frozen=True)
class CloudInitImage:
    iso: Path
    manifest: dict
    built_in: float | None
    """Seconds this call spent building (None: taken from the cache)."""


def default_cache() -> Path:
    return cache_dir() / "cloudinit-image"


def _stderr(message: str) -> None:
    print(f"cloudinit-image: {message}", file=sys.stderr, flush=True)


# --- inputs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One ``deb`` entry of the host's apt sources."""

    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def parse_sources(text: str, deb822: bool) -> list[Source]:
    """The ``deb`` entries of one sources.list (one-line format) or .sources (deb822) file."""
    found: list[Source] = []
    if not deb822:
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "deb":
                continue
            words = words[1:]
            if words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                found.append(Source(words[0].rstrip("/"), words[1], tuple(words[2:])))
        return found
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in paragraph.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, sep, value = raw.partition(":")
            if not sep:
                key = None
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                found.append(Source(uri.rstrip("/"), suite, tuple(fields.get("components", "").split())))
    return found


def host_sources(etc: Path = Path("/etc/apt")) -> list[Source]:
    """The Debian entries the host's apt uses for Debian 12 (main component only), in apt's file order."""
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    found = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for source in parse_sources(text, deb822=path.suffix == ".sources"):
            if source.suite in SUITES and "main" in source.components:
                found.append(Source(source.uri, source.suite, ("main",)))
    return list(dict.fromkeys(found))


def mirror(sources: list[Source]) -> str:
    """The mirror debootstrap installs from: the host's entry for the suite itself."""
    for source in sources:
        if source.suite == SUITE:
            return source.uri
    raise ImageBuildError(
        f"the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/) have no 'deb' entry for Debian "
        f"{SUITE} (main): the cloud-init test image is installed from the mirror apt already uses"
    )


def candidates(packages: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """The versions the host's apt would install now (they change the root's key when the mirror moves on)."""
    try:
        out = subprocess.run(
            ["apt-cache", "policy", *packages], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C")
        ).stdout
    except OSError:
        return {}
    found: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            found[current] = line.split(":", 1)[1].strip()
    return found


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_host() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the cloud-init test image needs root (debootstrap, chroot)")
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    missing += sorted(
        {"isolinux" if "ISOLINUX" in str(p) else "syslinux-common" for p in ISOLINUX_FILES.values() if not p.is_file()}
    )
    if missing:
        raise ImageBuildError(
            f"the cloud-init test image needs these Debian packages: apt-get install {' '.join(missing)}"
        )


# --- cache entries ---------------------------------------------------------------------------------------------


@contextmanager
def file_lock(path: Path, log: Log) -> Iterator[None]:
    """An exclusive flock on ``path``, waiting as long as another builder holds it."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another builder ({path.name})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def entry(cache: Path, name: str, marker: str, build: Callable[[Path], dict], log: Log) -> tuple[Path, bool]:
    """``cache/name``, built with ``build(tmp)`` (which writes everything but the marker) unless complete.

    Returns (entry, whether this call built it).
    """
    done = cache / name
    if (done / marker).is_file():
        os.utime(done)
        return done, False
    with file_lock(cache / f".lock-{name}", log):
        if (done / marker).is_file():
            return done, False  # another builder finished it while we waited
        for stale in cache.glob(f".tmp-{name}-*"):
            log(f"removing the interrupted build {stale.name}")
            shutil.rmtree(stale, ignore_errors=True)
        if done.exists():  # incomplete without its marker: never reused
            shutil.rmtree(done, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
        try:
            manifest = build(tmp)
            (tmp / marker).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            os.chmod(tmp, 0o755)
            os.rename(tmp, done)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    prune(cache, keep={name}, log=log)
    return done, True


def prune(cache: Path, keep: set[str], log: Log) -> None:
    """Remove entries of other keys untouched for PRUNE_AGE (a run of another checkout may still use newer ones)."""
    limit = time.time() - PRUNE_AGE
    for path in cache.iterdir():
        if not path.is_dir() or not path.name.startswith(("root-", "image-")) or path.name in keep:
            continue
        if path.stat().st_mtime < limit:
            with file_lock(cache / f".lock-{path.name}", log):
                log(f"removing the outdated entry {path.name}")
                shutil.rmtree(path, ignore_errors=True)
            (cache / f".lock-{path.name}").unlink(missing_ok=True)


# --- the root file system ---------------------------------------------------------------------------------------


def _run(argv: list[str], what: str, log: Log, **kw) -> None:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail}")
    log(f"{what}: {time.monotonic() - started:.0f} s")


def in_chroot(root: Path, script: str, what: str, log: Log, debs: Path | None = None) -> None:
    """Run a shell script in the chroot, in new mount and PID namespaces: the mounts (/proc, /sys, /dev, the
    .deb cache) vanish with it and any daemon a package script might start is killed when it ends."""
    mounts = [
        f"mount -t proc proc {root}/proc",
        f"mount -t sysfs sysfs {root}/sys",
        f"mount --rbind /dev {root}/dev",
    ]
    if debs is not None:
        mounts.append(f"mount --bind {debs} {root}/var/cache/apt/archives")
    outer = " && ".join([*mounts, f"exec chroot {root} /bin/sh -euc {shlex.quote(script)}"])
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
        "HOME": "/root",
    }
    _run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-euc", outer], what, log, env=env)


def build_root(out: Path, sources: list[Source], debs: Path, log: Log) -> dict:
    """debootstrap minbase + PACKAGES (no recommends) into ``out/root``; returns the manifest."""
    root = out / "root"
    debs.mkdir(parents=True, exist_ok=True)
    (debs / "partial").mkdir(exist_ok=True)
    _run(
        ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(root), mirror(sources)],
        f"debootstrap {SUITE} from {mirror(sources)}",
        log,
    )
    # No service may start in the chroot (openssh-server's postinst would start sshd on the host's network).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "etc/apt/sources.list").write_text("".join(s.line() + "\n" for s in sources))
    install = (
        "apt-get -q update && "
        f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)} && "
        f"dpkg-query -W -f '${{Package}} ${{Version}}\\n' > /tmp/versions"
    )
    in_chroot(root, install, "apt-get install " + " ".join(PACKAGES), log, debs=debs)
    versions = dict(line.split(" ", 1) for line in (root / "tmp/versions").read_text().splitlines() if line)
    (root / "tmp/versions").unlink()
    policy.unlink()
    # .debs of packages no longer installed here are of no use to the next build
    wanted = {f"{name}_{version.replace(':', '%3a')}_" for name, version in versions.items()}
    for deb in debs.glob("*.deb"):
        if not any(deb.name.startswith(w) for w in wanted):
            deb.unlink()
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1 or not (root / "boot" / kernels[0].name.replace("vmlinuz", "initrd.img")).is_file():
        raise ImageBuildError(
            f"expected one kernel and its initrd in the root's /boot, found {os.listdir(root / 'boot')}"
        )
    return {
        "suite": SUITE,
        "sources": [s.line() for s in sources],
        "kernel": kernels[0].name.removeprefix("vmlinuz-"),
        "packages": {name: versions.get(name) for name in PACKAGES if name in versions},
        "installed": len(versions),
    }


# --- the ISO ----------------------------------------------------------------------------------------------------


def configure(root: Path, log: Log) -> None:
    """CernVM 4's cloud-init settings and a boot that waits for no network."""
    cfg = root / "etc/cloud/cloud.cfg.d"
    (cfg / "50_cernvm.cfg").write_text(CERNVM_CLOUD_CFG)
    (cfg / "60_live-image.cfg").write_text(LIVE_IMAGE_CLOUD_CFG)
    # Debian's debconf-written datasource list: as 90_ it would override 50_cernvm.cfg's. CernVM has no such file.
    (cfg / "90_dpkg.cfg").unlink(missing_ok=True)
    # An empty machine id: systemd makes one at boot (each instance its own), and it is a first boot.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    resolv = root / "etc/resolv.conf"  # debootstrap copied the host's; the guest has no DNS to ask
    resolv.unlink(missing_ok=True)
    resolv.write_text("")
    script = (
        # cloud-init's default locale, generated and set as the system's (as on CernVM's EL7): minbase has only
        # C.UTF-8, where cc_locale's update-locale LANG=en_US.UTF-8 fails, and with no /etc/default/locale it
        # would run locale-gen at every first boot (20 s under TCG)
        "sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen && locale-gen >/dev/null && "
        "update-locale LANG=en_US.UTF-8 && "
        # cloud-init renders its fallback network configuration (DHCP on eth0) for systemd-networkd
        "systemctl enable systemd-networkd.service && "
        # cloud-init.service is ordered after it: with no DHCP answer it would hold the boot for two minutes
        "systemctl mask systemd-networkd-wait-online.service && "
        # e2fsprogs' clean-up of stale LVM snapshots (there are none): about 20 s of the one vCPU under TCG
        "systemctl mask e2scrub_reap.service e2scrub_all.timer"
    )
    in_chroot(root, script, "systemctl enable/mask", log)


def build_image(out: Path, root_entry: Path, root_manifest: dict, log: Log) -> dict:
    """The live ISO from a copy of the root: configured, squashed, with isolinux."""
    root = out / "root"
    _run(["cp", "-a", "--reflink=auto", str(root_entry / "root"), str(root)], "copy the root", log)
    configure(root, log)
    stage = out / "iso"
    (stage / "live").mkdir(parents=True)
    (stage / "isolinux").mkdir()
    kernel = root_manifest["kernel"]
    shutil.copy2(root / f"boot/vmlinuz-{kernel}", stage / "live/vmlinuz")
    shutil.copy2(root / f"boot/initrd.img-{kernel}", stage / "live/initrd.img")
    modules = f"usr/lib/modules/{kernel}/kernel"
    _run(
        [
            "mksquashfs",
            str(root),
            str(stage / "live/filesystem.squashfs"),
            "-noappend",
            "-no-progress",
            "-quiet",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "9",
            "-wildcards",
            "-e",
            *SQUASHFS_EXCLUDED,
            *(f"{modules}/{m}" for m in UNUSED_MODULES),
        ],
        "mksquashfs",
        log,
    )
    shutil.rmtree(root)
    for name, path in ISOLINUX_FILES.items():
        shutil.copy2(path, stage / "isolinux" / name)
    (stage / "isolinux/isolinux.cfg").write_text(ISOLINUX_CFG)
    iso = out / "cloudinit.iso"
    _run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-o",
            str(iso),
            "-V",
            "CLOUDINIT",
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
            str(stage),
        ],
        "xorriso",
        log,
    )
    shutil.rmtree(stage)
    return {**root_manifest, "cmdline": CMDLINE, "iso": iso.name, "iso_bytes": iso.stat().st_size}


def build(cache: Path | None = None, log: Log = _stderr) -> CloudInitImage:
    """The cloud-init test image, from the cache or built now (under a lock; see the module's docstring)."""
    cache = cache or default_cache()
    sources = host_sources()
    recipe = [inspect.getsource(f) for f in (build_root, in_chroot)]
    root_key = _digest(SUITE, [s.line() for s in sources], PACKAGES, candidates(), recipe)
    image_key = _digest(root_key, Path(__file__).read_bytes(), CMDLINE)
    image_name, root_name = f"image-{image_key[:16]}", f"root-{root_key[:16]}"
    done = cache / image_name
    if (done / "image.json").is_file():
        os.utime(done)
        manifest = json.loads((done / "image.json").read_text())
        return CloudInitImage(done / manifest["iso"], manifest, None)
    check_host()
    mirror(sources)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def make_root(tmp: Path) -> dict:
        log(f"building the root file system {root_name} (Debian {SUITE}: {', '.join(PACKAGES)})")
        begun = time.monotonic()
        manifest = build_root(tmp, sources, cache / "debs", log)
        return {**manifest, "key": root_key, "root_seconds": round(time.monotonic() - begun)}

    def make_image(tmp: Path) -> dict:
        root_entry, _ = entry(cache, root_name, "root.json", make_root, log)
        log(f"building the live ISO {image_name}")
        begun = time.monotonic()
        root_manifest = json.loads((root_entry / "root.json").read_text())
        manifest = build_image(tmp, root_entry, root_manifest, log)
        return {**manifest, "key": image_key, "root": root_name, "image_seconds": round(time.monotonic() - begun)}

    done, built = entry(cache, image_name, "image.json", make_image, log)
    manifest = json.loads((done / "image.json").read_text())
    seconds = time.monotonic() - started
    if built:
        log(f"built {done / manifest['iso']} ({manifest['iso_bytes'] / 2**20:.0f} MiB) in {seconds:.0f} s")
    return CloudInitImage(done / manifest["iso"], manifest, seconds if built else None)


if __name__ == "__main__":
    image = build()
    print(image.iso)
