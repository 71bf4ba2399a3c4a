"""Unit tests of the appliance builder that need no Debian packages and no
kernel: variants, cache keys, error messages, archive writers, and the guest's
awk parsers (run with the host's busybox when there is one)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import cernvm_fixtures.appliance as appliance
from cernvm_fixtures.appliance import ApplianceError, _archive, _builder, _host

FILES = Path(_builder.FILES)
AWK_DIR = FILES / "os/usr/libexec/cernvm-fixtures"


# --- variants ----------------------------------------------------------------


def test_variants_ok_first_and_described():
    names = list(appliance.VARIANTS)
    assert names[0] == "ok"
    assert set(names) == {
        "ok",
        "no-cvmfs",
        "no-scratch",
        "no-shared",
        "bad-cmdline",
        "no-context",
        "nocloud-only",
        "no-ready",
        "no-ssh",
        "sshfs",
        "no-stratum1",
        "unclean-boot",
        "no-ntpd",
        "no-shm",
        "root-password",
        "no-acpi",
        "reboot-reformats",
        "cable-hang",
        "scratch-unpartitioned",
        "no-users",
        "previous",
    }
    assert all(isinstance(d, str) and d and "\n" not in d for d in appliance.VARIANTS.values())


def test_unknown_variant_names_the_valid_ones(tmp_path):
    with pytest.raises(ApplianceError) as err:
        appliance.build("broken", cache=tmp_path)
    message = str(err.value)
    assert "'broken'" in message
    for name in appliance.VARIANTS:
        assert name in message
    assert not any(tmp_path.iterdir()), "nothing may be built for an unknown variant"


def test_each_broken_variant_drops_exactly_one_property():
    ok_conf = _builder.variant_conf("ok").splitlines()[1:]
    assert all(line.endswith("=1") for line in ok_conf)
    for variant in appliance.VARIANTS:
        conf = _builder.variant_conf(variant).splitlines()
        assert conf[0] == f"UCVM_VARIANT={variant}"
        zeros = [line for line in conf[1:] if line.endswith("=0")]
        if variant in ("ok", "bad-cmdline", "no-stratum1", "previous"):  # two differ on the kernel line, one in version
            assert zeros == []
        else:
            assert len(zeros) == 1, (variant, zeros)


# The kernel line of each image format, as CernVM's build writes it (cernvm-micro Makefile and isolinux.cfg,
# tag 2021.05-1): the ISO and .hdd have no console= word; hvm (EC2) and tar.gz (GCE) add console=ttyS0; vhd
# (Azure) adds console=ttyS0 earlyprintk=ttyS0 rootdelay=300 numa=off and drops quiet and loglevel=3; aarch64
# boots from UEFI startup.nsh without root=first and with cvmfs_repository_tag=HEAD. The appliance's ISO follows
# the ISO row; direct kernel boot appends what a format adds (KVM's kernel_args).
FORMATS = [
    ("iso", [], ["console=ttyS0", "console=tty0"]),
    ("hvm", ["console=ttyS0"], []),
    ("tar.gz", ["console=ttyS0"], []),
    ("vhd", ["console=ttyS0", "earlyprintk=ttyS0", "rootdelay=300", "numa=off"], ["quiet", "loglevel=3"]),
]


@pytest.mark.parametrize(("fmt", "adds", "lacks"), FORMATS, ids=[f[0] for f in FORMATS])
def test_cmdline_per_image_format_matches_the_cernvm4_profile(fmt, adds, lacks):
    from cernvm_fixtures import profile

    provider = {"iso": "kvm", "hvm": "ec2", "tar.gz": "gce", "vhd": "azure"}[fmt]
    wanted = profile.load("cernvm4").expect("kernel.cmdline", {"provider": provider, "kind": "vm"}).value
    assert all(word in wanted for word in adds), (fmt, wanted)
    assert not any(word in wanted for word in lacks), (fmt, wanted)
    ok = _builder.cmdline_for("ok").split()
    if fmt == "iso":
        assert not any(word.startswith("console=") for word in ok), ok
    assert "cvmfs_repos=cernvm-prod.cern.ch" in ok and "cernvm_path=cvm4" in ok and "cernvm_path=cvm4" in wanted
    assert "cvmfs_server=*" in wanted and f"cvmfs_server={_builder.STRATUM1}" in ok


def test_aarch64_rule_follows_startup_nsh():
    from cernvm_fixtures import profile

    arm = profile.load("cernvm4").expect("kernel.cmdline", {"provider": "kvm", "kind": "vm", "arch": "aarch64"}).value
    assert "root=first" not in arm and "cvmfs_repository_tag=HEAD" in arm
    assert "cvmfs_repos=cernvm-aarch64.cern.ch" in arm


def test_cmdline_per_variant():
    ok = _builder.cmdline_for("ok")
    assert ok.split() == ["cvmfs_repos=cernvm-prod.cern.ch", "cernvm_path=cvm4", f"cvmfs_server={_builder.STRATUM1}"]
    bad = _builder.cmdline_for("bad-cmdline")
    assert "cvmfs_repos=" not in bad and "cernvm_path=" not in bad and "console=" not in bad
    assert _builder.cmdline_for("no-stratum1").split()[-1] == f"cvmfs_server={_builder.NO_SERVER}"
    for variant in appliance.VARIANTS:
        if variant not in ("bad-cmdline", "no-stratum1"):
            assert _builder.cmdline_for(variant) == ok


def test_version_matches_profile_regex():
    import re
    import tomllib

    profile = Path(appliance.__file__).parent.parent / "profiles/appliance.toml"
    expected = tomllib.loads(profile.read_text())["scratch"]["version"]
    assert re.match(expected, appliance.VERSION)


# --- cache keys ----------------------------------------------------------------


def _inputs(material: dict) -> _builder.Inputs:
    kernel = _host.KernelPackage(
        "linux-image-1.2.3-4-amd64", "1.2.3-4", "ab" * 32, "linux-image-1.2.3-4-amd64_1.2.3-4_amd64.deb", "apt"
    )
    return _builder.Inputs(_host.HostTools({}, {}), kernel, (), material)


def test_keys_depend_on_every_input_and_variant():
    base = {
        "builder": "b",
        "kernel": ["k", "1", "s"],
        "packages": {"busybox-static": "1"},
        "files": {"/bin/busybox": "h"},
    }
    ref = _inputs(base)
    keys = {ref.variant_key(v) for v in appliance.VARIANTS}
    assert len(keys) == len(appliance.VARIANTS)
    assert ref.variant_key("ok") == _inputs(dict(base)).variant_key("ok")
    changed = [
        dict(base, builder="c"),
        dict(base, kernel=["k", "2", "s"]),
        dict(base, packages={"busybox-static": "2"}),
        dict(base, files={"/bin/busybox": "i"}),
    ]
    for material in changed:
        other = _inputs(material)
        assert other.base_key != ref.base_key
        assert other.variant_key("ok") != ref.variant_key("ok")


def test_builder_digest_covers_files_but_not_bytecode(tmp_path, monkeypatch):
    copy = tmp_path / "appliance"
    shutil.copytree(_builder.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_builder, "PACKAGE_DIR", copy)
    first = _builder.builder_digest()
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert _builder.builder_digest() == first
    inittab = copy / "files/os/etc/inittab"
    inittab.write_text(inittab.read_text() + "# changed\n")
    assert _builder.builder_digest() != first


# --- host checks and error messages ------------------------------------------


def _fake_path(tmp_path: Path, monkeypatch, tools: dict[str, str]) -> Path:
    """A PATH holding only ``tools`` (name -> shell script body or a real path)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in tools.items():
        target = bindir / name
        if body.startswith("/"):
            target.symlink_to(body)
        else:
            target.write_text("#!/bin/sh\n" + body + "\n")
            target.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(_host, "EXTRA_TOOL_DIRS", ())
    return bindir


def _fake_data_files(tmp_path: Path, monkeypatch, missing=()) -> None:
    files = {}
    for name, (_path, package) in _host.DATA_FILES.items():
        path = tmp_path / "data" / name
        if name not in missing:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x")
        files[name] = (str(path), package)
    monkeypatch.setattr(_host, "DATA_FILES", files)


def test_missing_tools_give_exact_install_command(tmp_path, monkeypatch):
    present = {t: "exit 0" for t in _host.TOOLS if t not in ("xorriso", "mksquashfs", "dropbear")}
    _fake_path(tmp_path, monkeypatch, present)
    _fake_data_files(tmp_path, monkeypatch, missing=("isolinux.bin",))
    with pytest.raises(ApplianceError) as err:
        _host.find_host_tools()
    message = str(err.value)
    assert "xorriso (package xorriso)" in message
    assert "mksquashfs (package squashfs-tools)" in message
    assert "dropbear (package dropbear-bin)" in message
    assert "(package isolinux)" in message
    command = message.split("Install them with: ", 1)[1]
    assert command.split()[:2] == ["apt-get", "install"]
    assert set(command.split()[2:]) == {"xorriso", "squashfs-tools", "dropbear-bin", "isolinux"}


def test_missing_tools_error_through_build(tmp_path, monkeypatch):
    _fake_path(tmp_path, monkeypatch, {})
    with pytest.raises(ApplianceError) as err:
        appliance.build("ok", cache=tmp_path / "cache")
    assert "dpkg and apt" in str(err.value)


def test_dynamic_busybox_is_refused(tmp_path, monkeypatch):
    tools = {t: "exit 0" for t in _host.TOOLS}
    _fake_path(tmp_path, monkeypatch, tools)
    _fake_data_files(tmp_path, monkeypatch)
    with pytest.raises(ApplianceError) as err:
        _host.find_host_tools()
    assert "apt-get install busybox-static" in str(err.value)


def _tools(bindir: Path) -> _host.HostTools:
    return _host.HostTools({t: str(bindir / t) for t in _host.TOOLS}, {})


def test_no_apt_lists_says_apt_get_update(tmp_path, monkeypatch):
    tools = {"apt-cache": 'echo "E: No packages found" >&2; exit 100', "dpkg": "exit 1"}
    bindir = _fake_path(tmp_path, monkeypatch, tools)
    with pytest.raises(ApplianceError) as err:
        _host.resolve_kernel(_tools(bindir), tmp_path / "cache", lambda m: None)
    assert "apt-get update" in str(err.value)


APT_CACHE_SHOW = r"""
case "$3" in
  linux-image-amd64) printf 'Package: linux-image-amd64\nVersion: 6.1.99-1\nDepends: linux-image-6.1.0-99-amd64 (= 6.1.99-1)\n\n' ;;
  linux-image-6.1.0-99-amd64=6.1.99-1) printf 'Package: linux-image-6.1.0-99-amd64\nVersion: 6.1.99-1\nFilename: pool/main/l/linux-signed-amd64/linux-image-6.1.0-99-amd64_6.1.99-1_amd64.deb\nSHA256: %s\n\n' 0123 ;;
  *) exit 100 ;;
esac"""  # noqa: E501
"""``apt-cache show`` of a kernel metapackage and the kernel package it depends on."""


def test_kernel_resolved_through_metapackage(tmp_path, monkeypatch):
    bindir = _fake_path(tmp_path, monkeypatch, {"apt-cache": APT_CACHE_SHOW})
    monkeypatch.setattr(_host, "APT_LISTS", tmp_path / "lists")
    kernel = _host.resolve_kernel(_tools(bindir), tmp_path / "cache", lambda m: None)
    assert (kernel.name, kernel.version, kernel.sha256, kernel.origin) == (
        "linux-image-6.1.0-99-amd64",
        "6.1.99-1",
        "0123",
        "apt",
    )
    assert kernel.filename == "linux-image-6.1.0-99-amd64_6.1.99-1_amd64.deb"
    # remembered: a second call must not need apt-cache while apt's state is unchanged
    (bindir / "apt-cache").write_text("#!/bin/sh\nexit 100\n")
    assert _host.resolve_kernel(_tools(bindir), tmp_path / "cache", lambda m: None) == kernel


def test_kernel_falls_back_to_cached_package(tmp_path, monkeypatch):
    newer = '[ "$1" = --compare-versions ] && case "$2/$4" in 6.1.5-1/6.1.10-1) exit 0;; esac; exit 1'
    bindir = _fake_path(tmp_path, monkeypatch, {"apt-cache": "exit 100", "dpkg": newer})
    downloads = tmp_path / "cache/downloads"
    downloads.mkdir(parents=True)
    for version, abi in (("6.1.5-1", 5), ("6.1.10-1", 10)):
        (downloads / f"linux-image-6.1.0-{abi}-amd64_{version}_amd64.deb").write_bytes(b"deb")
    messages = []
    kernel = _host.resolve_kernel(_tools(bindir), tmp_path / "cache", messages.append)
    assert kernel.version == "6.1.10-1" and kernel.origin == "cache"
    assert messages and "already in the cache" in messages[0]


def test_download_failure_is_actionable(tmp_path, monkeypatch):
    failing = 'echo "E: Failed to fetch http://mirror/x.deb  404  Not Found" >&2; exit 100'
    bindir = _fake_path(tmp_path, monkeypatch, {"apt-get": failing})
    kernel = _host.KernelPackage("linux-image-6.1.0-1-amd64", "6.1.1-1", "", "k.deb", "apt")
    with pytest.raises(ApplianceError) as err:
        _host.ensure_kernel_deb(_tools(bindir), kernel, tmp_path / "cache", lambda m: None)
    message = str(err.value)
    assert "404" in message and "apt-get update" in message
    assert not list((tmp_path / "cache/downloads").glob("*.deb"))


def test_unwritable_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ApplianceError) as err:
        appliance.build("ok", cache=blocker / "cache")
    assert "CERNVM_FIXTURES_CACHE" in str(err.value)


LDD = r"""
printf '\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n' """  # noqa: E501
"""``ldd`` of a dynamically linked dropbear."""


def test_ldd_parsing(tmp_path, monkeypatch):
    bindir = _fake_path(tmp_path, monkeypatch, {"ldd": LDD})
    libs = _host.ldd_libraries("/usr/sbin/dropbear", str(bindir / "ldd"))
    assert libs == ["/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]


# --- archives ------------------------------------------------------------------


def test_cpio_is_sorted_reproducible_and_kernel_readable(tmp_path):
    root = tmp_path / "tree"
    (root / "b/c").mkdir(parents=True)
    (root / "a").write_text("A")
    (root / "b/c/d").write_bytes(b"\x00" * 5)
    (root / "b/link").symlink_to("/bin/busybox")
    os.utime(root / "a", (1, 1))
    entries = list(_archive.tree_entries(root))
    entries.append(_archive.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    out1, out2 = io.BytesIO(), io.BytesIO()
    _archive.write_cpio(out1, entries, 1234)
    os.utime(root / "a", (99, 99))
    _archive.write_cpio(out2, list(_archive.tree_entries(root)) + entries[-1:], 1234)
    assert out1.getvalue() == out2.getvalue()
    members = _archive.read_cpio(out1.getvalue())
    names = [m[0] for m in members]
    assert names == ["a", "b", "b/c", "b/c/d", "b/link", "dev/console"]
    by_name = {m[0]: m for m in members}
    assert by_name["a"][2] == b"A"
    assert stat.S_ISLNK(by_name["b/link"][1]) and by_name["b/link"][2] == b"/bin/busybox"
    assert stat.S_ISCHR(by_name["dev/console"][1])
    if shutil.which("cpio"):
        listing = (
            subprocess.run(["cpio", "-t", "--quiet"], input=out1.getvalue(), capture_output=True, check=True)
            .stdout.decode()
            .split()
        )
        assert listing == names


def test_tar_is_reproducible_and_root_owned(tmp_path):
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("x" * 300)
    (root / "l").symlink_to("/")
    blobs = []
    for _ in range(2):
        path = tmp_path / f"t{len(blobs)}.tar.gz"
        _archive.gzip_file(lambda s: _archive.write_tar(s, _archive.tree_entries(root), 42), path)
        blobs.append(path.read_bytes())
        os.utime(root / "d/f", (7, 7))
    assert blobs[0] == blobs[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blobs[0]))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["d", "d/f", "l"]
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 42 for m in members)
    assert members[2].issym() and members[2].linkname == "/"


# --- guest scripts -------------------------------------------------------------


def test_guest_scripts_are_executable_shell():
    for path in FILES.rglob("*"):
        if path.is_file() and path.read_bytes()[:2] == b"#!":
            assert _builder._file_mode(path) == 0o755
            first = path.read_text().splitlines()[0]
            if path == FILES / "docker/init":  # the Docker image's root has no /bin: its busybox is in /UCVM
                assert first == "#!/UCVM/busybox sh", path
            else:
                assert first in ("#!/bin/sh", "#!/bin/busybox sh"), path
            if BUSYBOX:
                syntax = subprocess.run([BUSYBOX, "sh", "-n", str(path)], capture_output=True, text=True)
                assert syntax.returncode == 0, f"{path}: {syntax.stderr}"


BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(not BUSYBOX, reason="busybox is not installed")


def _awk(script: str, text: str) -> list[str]:
    proc = subprocess.run(
        [BUSYBOX, "awk", "-f", str(AWK_DIR / script)], input=text, capture_output=True, text=True, check=True
    )
    return proc.stdout.splitlines()


@needs_busybox
def test_cloud_config_plain_and_multipart():
    plain = "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA a@b\n"
    assert _awk("cloud-config.awk", plain) == plain.splitlines()
    mime = (
        'Content-Type: multipart/mixed; boundary="==BOUNDARY=="\r\n'
        "MIME-Version: 1.0\r\n\r\n"
        "--==BOUNDARY==\r\n"
        'Content-Type: text/x-shellscript; charset="us-ascii"\r\n\r\n'
        "#!/bin/sh\necho no\n"
        "--==BOUNDARY==\r\n"
        'Content-Type: text/cloud-config; charset="us-ascii"\r\n'
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
        "#cloud-config\r\nhostname: x\r\n"
        "--==BOUNDARY==\r\n"
        "Content-Type: text/cloud-config\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "I2Nsb3VkLWNvbmZpZwo=\r\n"
        "--==BOUNDARY==--\r\n"
    )
    assert _awk("cloud-config.awk", mime) == ["#cloud-config", "hostname: x"]
    assert _awk("cloud-config.awk", "[amiconfig]\nplugins=cernvm\n") == []


@needs_busybox
def test_ssh_keys_block_flow_and_nested():
    text = """#cloud-config
ssh_authorized_keys:
  - ssh-ed25519 AAAA1 one@host
  - "ssh-rsa AAAA2 two@host"

  - 'ssh-ed25519 AAAA3'
runcmd:
  - echo not-a-key
users:
  - name: root
    ssh_authorized_keys:
      - ssh-ed25519 AAAA4 four
  - name: other
other_keys: [x]
"""
    # root's keys are the top-level list; a user's own list (root's too) is users.awk's
    assert _awk("ssh-keys.awk", text) == [
        "ssh-ed25519 AAAA1 one@host",
        "ssh-rsa AAAA2 two@host",
        "ssh-ed25519 AAAA3",
    ]
    flow = 'ssh_authorized_keys: [ssh-ed25519 AAAA5 five, "ssh-rsa AAAA6"]\n'
    assert _awk("ssh-keys.awk", flow) == ["ssh-ed25519 AAAA5 five", "ssh-rsa AAAA6"]
    assert _awk("users.awk", text) == [
        "user\troot\t-\ttrue\t-",
        "key\troot\tssh-ed25519 AAAA4 four",
        "user\tother\t-\ttrue\t-",
    ]


@needs_busybox
def test_cloud_config_users_as_the_harness_writes_them():
    """users.awk reads the users: list of the cloud-config the harness renders (the run's key in a user's list),
    skipping plain string items (cloud-init's "default") and keys it does not implement."""
    from cernvm_fixtures.context import RUN_KEYS, Context, UserData

    users = [
        "default",
        {"name": "alice", "ssh_authorized_keys": [RUN_KEYS], "shell": "/bin/sh"},
        {"name": "bob", "primary_group": "physics", "lock_passwd": False, "passwd": "$6$salt$hash"},
    ]
    context = Context("vm", ("ssh-ed25519 AAAArun run@host",), UserData(cloud_config={"users": users}))
    text = context.parts()[0][1]
    assert _awk("users.awk", text) == [
        "user\talice\t-\ttrue\t-",
        "key\talice\tssh-ed25519 AAAArun run@host",
        "user\tbob\tphysics\tfalse\t$6$salt$hash",
    ]
    assert _awk("ssh-keys.awk", text) == ["ssh-ed25519 AAAArun run@host"], "root keeps the run's key"


@needs_busybox
@needs_busybox
def test_host_key_from_ssh_keys_block_and_plain():
    from cernvm_fixtures.context import Context, HostKey

    key = HostKey.generate()
    text = Context("vm", ("ssh-ed25519 AAAA run",), host_key=key).parts()[0][1]
    private = _awk_vars("host-key.awk", text, want="ed25519_private")
    assert "\n".join(private) + "\n" == key.private
    assert _awk_vars("host-key.awk", text, want="ed25519_public") == [key.public]
    hand = "#cloud-config\nssh_keys:\n    ed25519_public: 'ssh-ed25519 AAAB x'\nhostname: h\n"
    assert _awk_vars("host-key.awk", hand, want="ed25519_public") == ["ssh-ed25519 AAAB x"]
    assert _awk_vars("host-key.awk", "#cloud-config\nhostname: h\n", want="ed25519_private") == []


def _awk_vars(script: str, text: str, **variables: str) -> list[str]:
    argv = [BUSYBOX, "awk", *(f"-v{k}={v}" for k, v in variables.items()), "-f", str(AWK_DIR / script)]
    return subprocess.run(argv, input=text, capture_output=True, text=True, check=True).stdout.splitlines()


@needs_busybox
def test_ucontext_block_anywhere():
    text = """#cloud-config
# [ucernvm-begin]
# resize_rootfs=off
#   cvmfs_branch = devel
not a setting
# [ucernvm-end]
outside=1
"""
    # µCernVM's record: _UCONTEXT_<KEY IN CAPITALS>=<value>, yes/on/true as 1 and no/off/false as 0
    assert _awk("ucontext.awk", text) == ["_UCONTEXT_RESIZE_ROOTFS=0", "_UCONTEXT_CVMFS_BRANCH=devel"]
    flags = "[ucernvm-begin]\na=YES\nb=on\nc=True\nd=No\ne=off\nf=false\ng=maybe\n[ucernvm-end]\n"
    assert _awk("ucontext.awk", flags) == [
        "_UCONTEXT_A=1",
        "_UCONTEXT_B=1",
        "_UCONTEXT_C=1",
        "_UCONTEXT_D=0",
        "_UCONTEXT_E=0",
        "_UCONTEXT_F=0",
        "_UCONTEXT_G=maybe",
    ]


def test_prune_drops_old_entries_of_other_inputs_only(tmp_path):
    from cernvm_fixtures.appliance import _builder

    old = time.time() - 2 * _builder.PRUNE_AGE
    (tmp_path / "downloads").mkdir()
    names = ["base-new", "ok-new", "base-old", "ok-old", "no-ssh-recent"]
    for name in names:
        (tmp_path / name).mkdir()
    for deb in ("linux-image-new.deb", "linux-image-old.deb"):
        (tmp_path / "downloads" / deb).write_bytes(b"deb")
    for path in [tmp_path / n for n in ("base-new", "ok-new", "base-old", "ok-old")] + list(
        (tmp_path / "downloads").iterdir()
    ):
        os.utime(path, (old, old))
    (tmp_path / ".lock-ok-new").write_text("")
    removed = []
    _builder.prune(tmp_path, {"base-new", "ok-new"}, "linux-image-new.deb", removed.append)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".lock-ok-new", "base-new", "downloads", "no-ssh-recent", "ok-new"], "recent entries may be in use"
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["linux-image-new.deb"]
    assert len(removed) == 3


def test_no_variant_name_holds_an_error_word():
    """The boot logs name the variant in several lines: a name holding one of the words the appliance's profile
    greps its boot logs for would make each of those lines an error (only the unclean-boot line must count)."""
    import re

    from cernvm_fixtures import profile

    command = profile.load("appliance").expect("errors.logs", {"kind": "vm"}).value["ulogs"]
    words = re.search(r"-HiwE '([^']+)'", command).group(1).split("|")
    for variant in appliance.VARIANTS:
        assert not set(re.split(r"[^a-z0-9]+", variant)) & set(words), variant
