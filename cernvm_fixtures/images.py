"""Which image a target boots: the names the harness knows itself (the appliance), the check of an image value at
load (a file must be there), and one resolution of the generic ``image`` key into a file to upload or a name the
platform already has, for every provider.

Imports only download and convert (never config or providers), so config and providers both use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .download import redact
from .errors import ConfigError

if TYPE_CHECKING:
    from .appliance import Appliance

APPLIANCE = "appliance"
"""Image name of the project's own test appliance; ``appliance:<variant>`` picks a broken variant."""


def appliance_variant(image: str) -> str | None:
    """The appliance variant an image name asks for (``appliance`` is ``ok``); None for any other image."""
    if image == APPLIANCE:
        return "ok"
    if image.startswith(APPLIANCE + ":"):
        return image.partition(":")[2] or "ok"
    return None


IMAGE_FILES = (
    ".iso",
    ".hvm",
    ".hdd",
    ".img",
    ".raw",
    ".qcow2",
    ".vhd",
    ".vdi",
    ".vmdk",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.xz",
    ".txz",
    ".tar.bz2",
    ".tbz2",
)
"""Suffixes that make an ``image`` value a file (anything else may be a cloud image id or a local image name)."""
ISO_MAGIC = (32769, b"CD001")
"""ISO 9660: the primary volume descriptor's identifier, at byte 32769 (sector 16, after the type byte)."""


def check_image(image: str, where: str) -> None:
    """An image that names a file must exist, and a ``.iso`` must be one; a release name must be well formed. For
    config, at load (not per test): the only look at the disk a config file's values get before a run needs them."""
    if appliance_variant(image) is not None or image.startswith(("http://", "https://")):
        return
    if image.startswith("release:"):
        from .download import DownloadError, check_release

        try:
            check_release(image)
        except DownloadError as e:
            raise ConfigError(f"{where}: {e}") from None
        return
    path = Path(image).expanduser()
    if not image.lower().endswith(IMAGE_FILES):
        return
    if not path.is_file():
        raise ConfigError(f"{where}: {image!r} does not exist (or is not a file)")
    if path.suffix.lower() == ".iso":
        offset, magic = ISO_MAGIC
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                found = f.read(len(magic))
        except OSError as e:
            raise ConfigError(f"{where}: {image!r}: cannot read: {e.strerror}") from None
        if found != magic:
            raise ConfigError(
                f"{where}: {image!r} is not an ISO 9660 image (no 'CD001' at byte {offset}); "
                "give a CernVM ISO such as ucernvm-prod.<V>-<R>.cernvm.x86_64.iso"
            )


class ImageTarget(Protocol):
    """What resolution reads of a target (``config.Target`` is one)."""

    @property
    def image(self) -> str: ...
    @property
    def provider(self) -> str: ...
    def where(self, key: str = "") -> str: ...


@dataclass(frozen=True)
class Accepts:
    """What one provider boots, for :func:`resolve`.

    ``suffix``: the file format it uploads or boots (``.iso``, ``.hdd``, ``.hvm``, ``.vhd``, ``.tar.gz``...), also
    the format picked from a release (unless ``fmt`` names the release's); ``convertible``: other file formats
    qemu-img turns into it; ``platform``: which other image values name an image the platform already has (None:
    none; a value that is neither is refused); ``appliance``: the file of a built appliance it boots (None: the
    provider boots the appliance its own way, and :func:`resolve` returns the name as a platform image);
    ``boots``: the sentence every refusal ends with.
    """

    suffix: str
    boots: str
    fmt: str | None = None
    convertible: tuple[str, ...] = ()
    platform: Callable[[str], bool] | None = None
    appliance: Callable[[Appliance], Path] | None = None
    other_files: tuple[str, ...] = ()
    """Further local file suffixes taken as they are (e.g. OpenStack uploads .iso, .qcow2 and .raw alike)."""


@dataclass(frozen=True)
class Resolved:
    """The target's image: a local ``file`` to upload, import or boot, or a ``platform`` image name or id."""

    file: Path | None = None
    platform: str | None = None


def resolve(target: ImageTarget, accepts: Accepts) -> Resolved:
    """The target's ``image`` as a file (a release or URL fetched and verified into the cache, converted with
    qemu-img once where needed) or as a platform image; ConfigError naming the key and what would be valid."""
    image = target.image
    variant = appliance_variant(image)
    if variant is not None:
        if accepts.appliance is None:
            return Resolved(platform=image)
        from . import appliance

        return Resolved(file=accepts.appliance(appliance.build(variant)))
    if _is_file(image, accepts) or accepts.platform is None:
        return Resolved(file=local_file(target, accepts))
    if accepts.platform(image):
        return Resolved(platform=image)
    raise refused(target, accepts)


def refused(target: ImageTarget, accepts: Accepts) -> ConfigError:
    """The error for an image value this provider cannot boot: the key, the value (redacted) and what it boots."""
    return ConfigError(
        f"{target.where('image')}: {redact(target.image)!r}: the {target.provider} provider boots {_boots(accepts)}"
    )


def _is_file(image: str, accepts: Accepts) -> bool:
    from . import download

    if download.is_release(image) or download.is_url(image):
        return True
    suffixes = (accepts.suffix, *accepts.convertible, *accepts.other_files)
    return image.lower().endswith(suffixes) or ("/" in image and Path(image).expanduser().exists())


def _boots(accepts: Accepts) -> str:
    if accepts.convertible:
        return f"{accepts.boots}, or converts {'/'.join(accepts.convertible)} with qemu-img"
    return accepts.boots


def local_file(target: ImageTarget, accepts: Accepts) -> Path:
    """The target's image as an existing file with ``accepts.suffix`` (a URL or a release is fetched into the
    cache, verified; a release's file is the one published in format ``accepts.fmt``, by default the suffix). A file
    (or URL) with one of the ``convertible`` suffixes is converted with qemu-img, once (see :mod:`.convert`)."""
    from . import convert, download

    image = target.image
    allowed = (accepts.suffix, *accepts.convertible, *accepts.other_files)
    if download.is_release(image):
        try:
            image = download.release_url(image, accepts.fmt or accepts.suffix.lstrip("."))
        except download.DownloadError as e:
            raise ConfigError(f"{target.where('image')}: {e}") from None
    if download.is_url(image):
        reference = download.parse(image)
        if not reference.name.lower().endswith(allowed):
            raise refused(target, accepts)
        try:
            path = download.fetch(
                reference,
                offline=bool(os.environ.get("CERNVM_FIXTURES_OFFLINE")),
                progress=download.progress_printer(reference.name),
            )
        except download.DownloadError as e:
            raise ConfigError(f"{target.where('image')}: {e}") from None
    else:
        path = Path(image).expanduser()
        if not path.name.lower().endswith(allowed):
            raise refused(target, accepts)
        if not path.is_file():
            raise ConfigError(f"{target.where('image')}: {redact(target.image)!r} does not exist")
    if path.name.lower().endswith(accepts.convertible) and not path.name.lower().endswith(accepts.suffix):
        return convert.convert(path, accepts.suffix, target.where("image"))
    return path.resolve()
