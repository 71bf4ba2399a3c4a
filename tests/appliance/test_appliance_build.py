"""Tests that really build the appliance (Debian packages, kernel package from
apt): cache behaviour, reproducibility, budgets, artifact contents, Docker."""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from cernvm_fixtures import appliance
from cernvm_fixtures.appliance import _archive, _builder, _host

MB = 1000 * 1000
REQUIRED_MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "e1000",
    "9p",
    "9pnet_virtio",
    "ata_piix",
    "sr_mod",
    "cdrom",
    "isofs",
    "squashfs",
    "loop",
    "overlay",
    "ext4",
)


def _members(initrd: Path) -> list[tuple[str, int, bytes]]:
    return _archive.read_cpio(gzip.decompress(initrd.read_bytes()))


def _last(members, name: str) -> bytes:
    found = [body for n, _mode, body in members if n == name]
    assert found, f"{name} not in the initrd"
    return found[-1]


# --- cache ---------------------------------------------------------------------


def test_cache_hit_is_fast_and_builds_nothing(ok_appliance, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a cache hit must not run an expensive step")

    monkeypatch.setattr(_builder, "_build_base", boom)
    monkeypatch.setattr(_builder, "_build_variant", boom)
    monkeypatch.setattr(_host, "ensure_kernel_deb", boom)
    start = time.monotonic()
    again = appliance.build("ok")
    elapsed = time.monotonic() - start
    assert again == ok_appliance
    assert elapsed < 2.0, f"cache hit took {elapsed:.2f} s"


def test_artifacts_are_complete(appliances):
    for variant, app in appliances.items():
        assert app.variant == variant
        assert re.fullmatch(r"[0-9a-f]{64}", app.key)
        for path in (app.iso, app.kernel, app.initrd, app.docker_tarball):
            assert path.is_file() and path.parent == app.directory, path
        assert app.version == _builder.version_for(variant)  # the previous release's variant has its own
        assert app.cmdline == _builder.cmdline_for(variant)
        assert not list(app.directory.parent.glob(f".tmp-{app.directory.name}-*"))
    keys = {app.key for app in appliances.values()}
    assert len(keys) == len(appliances)


def test_sizes_within_budget(ok_appliance):
    assert ok_appliance.iso.stat().st_size <= 40 * MB
    # the OS tree carries Debian's automount (/cvmfs on demand), whose libxml2 brings ICU's 30 MB data library
    assert ok_appliance.docker_tarball.stat().st_size <= 32 * MB
    assert (ok_appliance.stratum1 / "cvmfs/cernvm-prod.cern.ch/os.squashfs").stat().st_size <= 32 * MB


def _build_in(cache: str, variant: str) -> str:
    return str(appliance.build(variant, cache=Path(cache)).directory)


def _seed_downloads(source: Path, cache: Path) -> None:
    """Give a fresh cache the kernel package already downloaded (no network)."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True)
    for deb in (source.parent / "downloads").glob("*.deb"):
        try:
            os.link(deb, downloads / deb.name)
        except OSError:
            shutil.copy2(deb, downloads / deb.name)


def test_reproducible_and_concurrent_builds(ok_appliance, tmp_path):
    """Two fresh caches give the same bytes; two builders racing on one cache
    (like pytest-xdist workers) share one build and both get a complete entry."""
    cache_a, cache_b = tmp_path / "a", tmp_path / "b"
    for cache in (cache_a, cache_b):
        _seed_downloads(ok_appliance.directory, cache)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_build_in, [(str(cache_a), "ok"), (str(cache_a), "ok"), (str(cache_b), "ok")])
    assert results[0] == results[1]
    a = appliance.build("ok", cache=cache_a)
    b = appliance.build("ok", cache=cache_b)
    assert a.key == b.key == ok_appliance.key
    for field in ("iso", "kernel", "initrd", "docker_tarball"):
        assert getattr(a, field).read_bytes() == getattr(b, field).read_bytes(), field
        assert getattr(a, field).read_bytes() == getattr(ok_appliance, field).read_bytes(), field
    assert len(list(cache_a.glob("base-*"))) == 1
    assert not list(cache_a.glob(".tmp-*"))


def test_interrupted_build_is_not_reused(ok_appliance, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    _seed_downloads(ok_appliance.directory, cache)
    for base in ok_appliance.directory.parent.glob("base-*"):  # skip the slow part
        shutil.copytree(base, cache / base.name, copy_function=os.link)
    real = _builder._build_variant

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(_builder, "_build_variant", interrupted)
    with pytest.raises(KeyboardInterrupt):
        appliance.build("no-ssh", cache=cache)
    assert not list(cache.glob("no-ssh-*")) and not list(cache.glob(".tmp-*"))
    monkeypatch.setattr(_builder, "_build_variant", real)
    assert appliance.build("no-ssh", cache=cache).iso.is_file()


# --- contents ------------------------------------------------------------------


def test_initrd_variant_segment(appliances):
    base = None
    for variant, app in appliances.items():
        members = _members(app.initrd)
        conf = _last(members, "etc/ucvm/variant.conf").decode()
        assert conf == _builder.variant_conf(variant)
        base_part = (app.directory / "initrd-variant.img").stat().st_size
        prefix = app.initrd.read_bytes()[:-base_part]
        if base is None:
            base = prefix
        assert prefix == base, "the expensive part must be shared by all variants"


def test_initrd_bootloader_and_modules(ok_appliance):
    members = _members(ok_appliance.initrd)
    names = {name for name, _, _ in members}
    assert {
        "init",
        "bin/busybox",
        "dev/console",
        "etc/ucvm/build.conf",
        "etc/ucvm/udhcpc.script",
        "etc/ucvm/ucontext.awk",
        "etc/ucvm/modules.order",
    } <= names
    assert not any(name.endswith(".squashfs") for name in names), "like µCernVM, the OS comes over the network"
    build_conf = _last(members, "etc/ucvm/build.conf").decode()
    kver = re.search(r"^UCVM_KVER=(\S+)$", build_conf, re.M).group(1)
    assert re.match(r"^\d+\.\d+\.\d+-\d+-amd64$", kver)
    order = _last(members, "etc/ucvm/modules.order").decode().split()
    loaded = [Path(m).name.removesuffix(".ko").replace("-", "_") for m in order]
    for module in REQUIRED_MODULES:
        assert module in loaded, module
    for module in order:
        assert f"lib/modules/{kver}/{module}" in names
    # dependencies first (from the kernel package's own modules.dep)
    for dep, user in (
        ("virtio", "virtio_pci"),
        ("virtio_ring", "virtio_net"),
        ("scsi_mod", "sr_mod"),
        ("cdrom", "sr_mod"),
        ("libata", "ata_piix"),
        ("jbd2", "ext4"),
        ("9pnet", "9pnet_virtio"),
        ("failover", "net_failover"),
    ):
        assert loaded.index(dep) < loaded.index(user), (dep, user)


def test_os_repository(ok_appliance, tmp_path):
    unsquashfs = shutil.which("unsquashfs")
    assert unsquashfs, "squashfs-tools is a build dependency, so unsquashfs must exist"
    image = ok_appliance.stratum1 / "cvmfs/cernvm-prod.cern.ch/os.squashfs"  # what its CernVM-FS server serves
    listing = subprocess.run([unsquashfs, "-lls", str(image)], capture_output=True, text=True, check=True).stdout
    paths = {
        line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
        for line in listing.splitlines()
        if line.startswith(("-", "d", "l"))
    }
    for path in (
        "README",
        ".cvmfs-repository",
        "cvm4/bin/busybox",
        "cvm4/bin/sh",
        "cvm4/usr/sbin/dropbear",
        "cvm4/usr/bin/dropbearkey",
        "cvm4/sbin/mke2fs",
        "cvm4/sbin/blkid",
        "cvm4/sbin/init",
        "cvm4/usr/bin/cvmfs_config",
        "cvm4/etc/inittab",
        "cvm4/etc/cvmfs/default.local",
        "cvm4/lib64/ld-linux-x86-64.so.2",
        "cvm4/lib/x86_64-linux-gnu/libc.so.6",
        "cvm4/lib/x86_64-linux-gnu/libext2fs.so.2",
        "cvm4/cvmfs",
        "cvm4/usr/sbin/automount",
        "cvm4/etc/auto.master",
        "cvm4/etc/auto.cvmfs",
        "cvm4/usr/lib/x86_64-linux-gnu/autofs/lookup_program.so",
        "cvm4/usr/bin/dropbearconvert",
    ):
        assert f"squashfs-root/{path}" in paths, path
    assert re.search(r"^drwx------ root/root .* squashfs-root/cvm4/root$", listing, re.M)


def _iso_file(iso: Path, path: str) -> bytes:
    import pycdlib

    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        out = io.BytesIO()
        cd.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()
    finally:
        cd.close()


def test_iso_boot_configuration(appliances):
    for variant, app in appliances.items():
        cfg = _iso_file(app.iso, "/isolinux/isolinux.cfg").decode()
        append = re.search(r"^\s*APPEND (.*)$", cfg, re.M).group(1)
        assert append == app.cmdline
        assert "SERIAL" not in cfg and "console=" not in append, "like the released ISO: nothing on serial"
        if variant == "bad-cmdline":
            assert "cvmfs_repos" not in cfg and "cernvm_path" not in cfg
        else:
            assert "cvmfs_repos=cernvm-prod.cern.ch" in append
            assert "cernvm_path=cvm4" in append
    ok = appliances["ok"]
    assert _iso_file(ok.iso, "/boot/vmlinuz") == ok.kernel.read_bytes()
    assert _iso_file(ok.iso, "/boot/initrd.img") == ok.initrd.read_bytes()
    assert _iso_file(ok.iso, "/isolinux/isolinux.bin")[:4] != b""


def test_docker_tarball_layout(ok_appliance):
    preload = f"{_builder.DOCKER_PRELOAD}/{_builder.OS_REPO}"
    with tarfile.open(ok_appliance.docker_tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["init"].mode & 0o111
        assert tar.extractfile("init").read().startswith(b"#!/UCVM/busybox sh\n")
        version = tar.extractfile("UCVM/version").read().decode().strip()
        assert any(n.startswith("UCVM/keys/") and n.endswith(".pub") for n in members)
        signer = tar.extractfile(f"{preload}.pub").read()
        assert signer == tar.extractfile(f"UCVM/keys/{_builder.OS_REPO}.pub").read()
    assert version == ok_appliance.version
    assert all(m.uid == 0 and m.mtime == _builder.SOURCE_DATE_EPOCH for m in members.values())
    assert members["UCVM/busybox"].mode & 0o111
    # like CernVM's image, the root carries no OS: /init links it in from CERNVM_ROOT
    assert not any(n == "bin" or n.startswith(("bin/", "lib/", "usr/bin/")) for n in members)
    assert members["cvmfs"].isdir() and not any(n.startswith("cvmfs/") for n in members)
    # the repository parrot (stand-in) presents, with the OS tree in cvm4
    for path in (
        "README",
        ".cvmfs-repository",
        "cvm4/bin/sh",
        "cvm4/bin/busybox",
        "cvm4/usr/bin/cvmfs_config",
        "cvm4/usr/sbin/dropbear",
        "cvm4/etc/passwd",
        "cvm4/lib64/ld-linux-x86-64.so.2",
    ):
        assert f"{preload}/{path}" in members, path


# --- Docker --------------------------------------------------------------------


@pytest.fixture
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        pytest.fail(f"no usable Docker engine (./dev starts dockerd): {err}", pytrace=False)
    yield client
    client.close()


def test_docker_tarball_runs(ok_appliance, docker_client, tmp_path):
    repository = f"cernvm-fixtures-test-{uuid.uuid4().hex[:12]}"
    containers = []
    unconfined = ["seccomp=unconfined"]  # parrot mode needs ptrace, as documented
    try:
        docker_client.api.import_image_from_file(str(ok_appliance.docker_tarball), repository=repository, tag="latest")
        image = f"{repository}:latest"

        def run(command, security_opt=None, volumes=None, **env):
            container = docker_client.containers.create(
                image, command, environment=env, network_mode="none", security_opt=security_opt, volumes=volumes
            )
            containers.append(container)
            container.start()
            status = container.wait(timeout=60)["StatusCode"]
            out = container.logs(stdout=True, stderr=False).decode()
            err = container.logs(stdout=False, stderr=True).decode()
            return status, out, err

        status, out, err = run(["/init", "uname", "-r"], unconfined)
        assert status == 0, err
        assert out.strip() == os.uname().release  # a container runs the host's kernel
        assert "debug" not in err and err == ""

        status, out, err = run(
            ["/init", "sh", "-c", "cat /UCVM/version; cvmfs_config probe cernvm-prod.cern.ch; readlink /bin"],
            unconfined,
            CERNVM_DEBUG="1",
        )
        assert status == 0, err
        assert out.splitlines() == [
            ok_appliance.version,
            "Probing /cvmfs/cernvm-prod.cern.ch... OK",
            "/cvmfs/cernvm-prod.cern.ch/cvm4/bin",
        ]
        debug = [line for line in err.splitlines() if line.startswith("cernvm-docker: debug: ")]
        assert any("CERNVM_ROOT=/cvmfs/cernvm-prod.cern.ch/cvm4" in line for line in debug)
        assert any("parrot: /cvmfs/cernvm-prod.cern.ch from http" in line for line in debug)

        # parrot needs ptrace: with Docker's default seccomp filter /init refuses, naming the fix
        status, out, err = run(["/init", "true"])
        assert status == 1 and out == ""
        assert "a seccomp filter is active (Seccomp: 2 in /proc/self/status)" in err
        assert "--security-opt seccomp=unconfined" in err and "fatal: could not trace child" in err

        status, out, err = run(["/init", "true"], unconfined, CERNVM_ROOT="/cvmfs/nowhere")
        assert status != 0 and "CERNVM_ROOT=/cvmfs/nowhere" in err

        status, out, err = run(
            ["/init", "true"], unconfined, PARROT_CVMFS_REPO="cernvm-prod.cern.ch:url=http://x,pubkey=/UCVM/version"
        )
        assert status == 1 and "signature verification failed with public key(s) /UCVM/version" in err

        # bind mount mode: the host's repository (here: the copy the image carries), no parrot, no seccomp change
        host_repo = tmp_path / "cvmfs" / "cernvm-prod.cern.ch"
        prefix = f"{_builder.DOCKER_PRELOAD}/{_builder.OS_REPO}/"
        with tarfile.open(ok_appliance.docker_tarball) as tar:
            members = [m.replace(name=m.name[len(prefix) :]) for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(host_repo, members=members, filter="fully_trusted")
        volumes = {str(host_repo): {"bind": "/cvmfs/cernvm-prod.cern.ch", "mode": "ro"}}
        status, out, err = run(
            [
                "/init",
                "sh",
                "-c",
                "cvmfs_config probe cernvm-prod.cern.ch; grep -c ' /cvmfs/cernvm-prod.cern.ch ' /proc/mounts",
            ],
            volumes=volumes,
            CERNVM_DEBUG="1",
        )
        assert status == 0, err
        assert out.splitlines() == ["Probing /cvmfs/cernvm-prod.cern.ch... OK", "1"]
        assert "bind mounted from the host: no parrot" in err
    finally:
        for container in containers:
            try:
                container.remove(force=True)
            except Exception:
                pass
        try:
            docker_client.images.remove(f"{repository}:latest", force=True)
        except Exception:
            pass
