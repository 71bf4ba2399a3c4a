"""The cernvm-fixtures test appliance: a small CernVM look-alike built from
Debian packages (kernel, busybox-static, dropbear-bin, e2fsprogs' mke2fs).

``build(variant)`` returns an :class:`Appliance` with a bootable isolinux ISO
(boots like the µCernVM ISO: from the CD drive, taking the first empty disk as
its scratch disk), the same kernel, initrd and command line for direct kernel
boot, and a CernVM-in-Docker root fs tarball. Results are cached per user and
reused while their inputs (builder files, package versions, kernel package,
variant) are unchanged.

Variants other than ``ok`` each lack exactly one property, for negative tests
(see :data:`VARIANTS`).

It boots like the released µCernVM ISO where the harness depends on it: its kernel line has no
``console=`` word, so everything it prints goes to tty0 (the screen) and the serial port stays silent
(direct kernel boot may append ``console=ttyS0``, as CernVM's hvm, tar.gz and vhd images do); it loads its
OS repository over HTTP at boot from the CernVM-FS server on its kernel line (``cvmfs_server=`` :data:`STRATUM1`,
which the KVM provider forwards to a process on the host serving :attr:`Appliance.stratum1`), stopping with
"Unable to mount cvmfs root filesystem!" when nothing answers; its SSH host key is the one the context hands
over in the cloud-config's ``ssh_keys``.

Console lines (on /dev/console), besides the kernel's own messages:

* progress lines, with the uptime like kernel messages:
  ``[        3.98] cernvm-fixtures: bootloader: <message>`` (initramfs stage) and
  ``[        5.19] cernvm-fixtures: <message>`` (OS stage); warnings contain
  ``WARNING:``, a failed boot ``FATAL:`` (followed by a rescue shell);
* the cloud-init style host key blocks, each written in one piece::

    -----BEGIN SSH HOST KEY FINGERPRINTS-----
    256 SHA256:<base64, no padding> root@<hostname> (ED25519)
    -----END SSH HOST KEY FINGERPRINTS-----
    -----BEGIN SSH HOST KEY KEYS-----
    ssh-ed25519 AAAA... root@<hostname>
    -----END SSH HOST KEY KEYS-----

* ``cernvm-fixtures: contextualization complete`` (exactly, alone on its line)
  once the appliance is ready: ``/run/cernvm-fixtures/ready`` exists and the
  SSH server listens.

The Docker image's ``/init`` prints ``cernvm-docker: debug: <message>`` lines
on stderr when ``CERNVM_DEBUG=1``. The Docker tarball is the same for every
variant (the variants are properties of a booted VM).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._builder import (  # noqa: F401 - re-exported
    CVMFS_ARGS,
    OS_PATH,
    OS_REPO,
    RELEASE,
    SERIAL_CONSOLE,
    SOURCE_DATE_EPOCH,
    STRATUM1,
    VARIANTS,
    VERSION,
)  # noqa: F401
from ._errors import ApplianceError

__all__ = ["VARIANTS", "VERSION", "ApplianceError", "Appliance", "build"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Appliance:
    variant: str
    key: str  # content hash of all inputs (builder files, package versions, variant)
    directory: Path  # the cache entry
    iso: Path
    kernel: Path
    initrd: Path
    cmdline: str  # kernel command line used by the ISO, for direct kernel boot
    stratum1: Path  # what the appliance's CernVM-FS server serves (cvmfs/<repo>/os.squashfs)
    docker_tarball: Path
    version: str  # what aux/ucernvm-version and /UCVM/version contain


def is_appliance_iso(path: Path) -> bool:
    """Whether ``path`` is an ISO of the test appliance (by its volume label), e.g. one published as a release:
    it loads its OS from the appliance's CernVM-FS server, which this package serves."""
    from ._builder import ISO_LABEL

    try:
        with open(path, "rb") as f:
            f.seek(16 * 2048)
            descriptor = f.read(72)
    except OSError:
        return False
    return descriptor[1:6] == b"CD001" and descriptor[40:72].rstrip(b" ") == ISO_LABEL.encode()


def serve_stratum1(built: Appliance) -> int:
    """Start (once per process) the appliance's CernVM-FS server on 127.0.0.1; returns its port."""
    from ._stratum1 import serve

    return serve(built.stratum1)


def default_cache() -> Path:
    from .. import dirs

    return dirs.cache_dir() / "appliance"


def build(
    variant: str = "ok", *, cache: Path | None = None, force: bool = False, log: Callable[[str], None] | None = None
) -> Appliance:
    """Build (or find in the cache) the appliance ``variant``.

    Raises :class:`ApplianceError` with an actionable message when a host tool,
    a package or the kernel package is missing.
    """
    from . import _builder

    _builder.check_variant(variant)
    cache = Path(cache) if cache is not None else default_cache()
    entry, manifest, key = _builder.build_entry(variant, cache, force, log or _logger.info)
    return Appliance(
        variant=variant,
        key=key,
        directory=entry,
        iso=entry / manifest["iso"],
        kernel=entry / manifest["kernel"],
        initrd=entry / manifest["initrd"],
        cmdline=manifest["cmdline"],
        stratum1=entry / manifest["stratum1"],
        docker_tarball=entry / manifest["docker_tarball"],
        version=manifest["version"],
    )
