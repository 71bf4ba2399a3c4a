"""Images from a URL: downloaded once, verified against a SHA-256, cached, with progress, safe to interrupt.

An image reference is a URL with its digest (``https://.../file.iso#sha256=<hex>``) or
without one, in which case the checksum file CernVM publishes beside every image
(``<url>.sha256``) says what the file must hash to. Files land in a per-user cache
keyed by digest (:func:`images_dir`); a download goes to a partial file of the cache's own
(resumed with an HTTP range request after an interruption; one that already holds the whole
file is verified) and is renamed into place only once its digest matched, so an unverified
file is never used. A cached file is checked again on every use: unchanged since it was
verified (size, inode and times as recorded then), or hashed again, and downloaded anew if it
no longer matches. Concurrent runs and xdist workers fetch a file once (a file lock per digest).

A pinned URL (``#sha256=``) is never asked again once cached. An unpinned URL follows its
publisher: its ``.sha256`` is read on every fetch (a few bytes), so a respin is downloaded
rather than the first copy served forever; offline, or when the checksum file cannot be read,
the copy the URL had when it was last read is used (the latter with a warning). Pin the digest
to test one exact file. The checksum file is the publisher's own statement of the file, so it
decides rather than the server's ``ETag``/``Last-Modified``, which vary with mirrors and CDNs.

``HTTPS_PROXY``/``NO_PROXY`` are honoured (urllib's own handling); a redirect from https to a
plain scheme is refused; offline, only the cache is used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

from .dirs import cache_dir
from .errors import CernvmError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(CernvmError):
    """An image could not be fetched or did not verify; the message names the URL and what went wrong."""


@dataclass(frozen=True)
class Reference:
    """A downloadable image: where it is and the SHA-256 it must have (or where that digest is published)."""

    url: str
    sha256: str | None = None

    @property
    def name(self) -> str:
        """The file name the cache gives the image: the URL path's last part (``image`` if that names no file)."""
        name = Path(urlsplit(self.url).path).name
        return name if name not in ("", ".", "..") else "image"

    @property
    def checksum_url(self) -> str:
        """``<path>.sha256`` beside the file, with the same query (a container-wide token such as an Azure SAS
        reaches it too)."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=parts.path + ".sha256"))


def is_url(image: str) -> bool:
    return image.startswith(("http://", "https://"))


REDACTED = "REDACTED"


def redact(image: str) -> str:
    """``image`` as it may be shown or recorded: a URL's query values and user info replaced by ``REDACTED``
    (S3 presigned ``X-Amz-Signature``/``X-Amz-Credential``, an Azure SAS ``sig=``, any token), the rest kept;
    anything that is not a URL unchanged. Every message, report and JUnit property naming an image uses it."""
    if not is_url(image):
        return image
    parts = urlsplit(image)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{item.partition('=')[0]}={REDACTED}" if "=" in item else REDACTED for item in parts.query.split("&") if item
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


RELEASE = re.compile(r"^release:(?:(?P<branch>[a-z][a-z0-9-]*)/)?(?P<version>\d{4}\.\d{2}-\d+)$")
"""``release:[BRANCH/]YYYY.MM-R``: one CernVM release, each target taking the file in its own format."""
DEFAULT_BASE = "https://cernvm.cern.ch/releases/"
DEFAULT_PATTERN = "ucernvm-{branch}.{version}.cernvm.x86_64.{fmt}"
DOCKER_PATTERN = "cvm-docker.{version}.cernvm.x86_64.tar"
"""The Docker tarball's published name (format ``docker``), overridable by ``CERNVM_FIXTURES_DOCKER_PATTERN``."""
"""CernVM's published file names, relative to the base URL (``CERNVM_FIXTURES_IMAGE_PATTERN`` overrides it:
the layout has changed before)."""


def is_release(image: str) -> bool:
    return image.startswith("release:")


def check_release(image: str) -> re.Match[str]:
    match = RELEASE.match(image)
    if match is None:
        raise DownloadError(f"{image!r}: expected release:[BRANCH/]YYYY.MM-R, e.g. release:prod/2021.05-1")
    return match


def release_url(image: str, fmt: str) -> str:
    """The URL of a release's file in format ``fmt`` (``iso``, ``hvm``, ``vhd``...): base URL + published name;
    its SHA-256 comes from the ``.sha256`` file published beside it."""
    match = check_release(image)
    base = os.environ.get("CERNVM_FIXTURES_IMAGE_BASE") or DEFAULT_BASE
    pattern = os.environ.get("CERNVM_FIXTURES_IMAGE_PATTERN") or DEFAULT_PATTERN
    if fmt == "docker":
        pattern = os.environ.get("CERNVM_FIXTURES_DOCKER_PATTERN") or DOCKER_PATTERN
    try:
        name = pattern.format(branch=match["branch"] or "prod", version=match["version"], fmt=fmt)
    except (KeyError, IndexError, ValueError) as e:
        raise DownloadError(
            f"CERNVM_FIXTURES_IMAGE_PATTERN {pattern!r}: {e}; use the fields {{branch}}, {{version}} and {{fmt}}"
        ) from None
    return urljoin(base if base.endswith("/") else base + "/", name)


def parse(image: str) -> Reference:
    """``URL[#sha256=HEX]``; a clear error for a fragment that is not a SHA-256."""
    url, fragment = urldefrag(image)
    if not fragment:
        return Reference(url)
    key, _, value = fragment.partition("=")
    if key != "sha256" or not DIGEST.match(value.lower()):
        raise DownloadError(f"{redact(image)!r}: the fragment must be #sha256=<64 hex digits>, got #{fragment}")
    return Reference(url, value.lower())


def images_dir() -> Path:
    """The image cache: ``<sha256>/<name>`` holds a verified download and nothing else (so no download's name can
    collide with the cache's own files), ``.work/`` the locks and partial files, ``urls/`` the digest each unpinned
    URL had, ``converted/`` the conversions (:mod:`.convert`)."""
    return cache_dir() / "images"


def _work(digest: str, what: str) -> Path:
    """The cache's own file ``what`` for a digest (``lock``, ``part``, ``verified``), apart from every download's
    name."""
    return images_dir() / ".work" / f"{digest}.{what}"


def cached(ref: Reference) -> Path | None:
    """The cached file, if it is there and still what was verified (found by digest, or by the digest the URL had
    when its checksum file was last read); never the network."""
    digest = ref.sha256 or _recorded_digest(ref.url)
    if digest is None:
        return None
    with _locked(digest):
        return _still_verified(images_dir() / digest / ref.name, digest)


@contextlib.contextmanager
def _locked(digest: str) -> Iterator[None]:
    """The digest's lock, exclusive: one process downloads, verifies or prunes it at a time."""
    lock_path = _work(digest, "lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _signature(path: Path) -> list[int]:
    """What changes whenever the file's content does: size, inode, modification and change times (the change time
    cannot be set back, so an edit that restores the modification time still shows)."""
    st = path.stat()
    return [st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _records(digest: str) -> dict[str, list[int]]:
    """File name -> signature right after the file was verified (the digest's ``.work/<digest>.verified``)."""
    try:
        found = json.loads(_work(digest, "verified").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _record_verified(path: Path, digest: str) -> None:
    records = _records(digest)
    records[path.name] = _signature(path)
    record = _work(digest, "verified")
    tmp = record.with_name(f"{record.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, record)


def _still_verified(path: Path, digest: str) -> Path | None:
    """``path`` if it is still the file that was verified: unchanged since (size and times as recorded, cheap) or
    hashing to ``digest`` again; a file that does not is removed (and downloaded again). Under the digest's lock."""
    try:
        signature = _signature(path)
    except FileNotFoundError:
        return None
    recorded = _records(digest).get(path.name)
    if recorded == signature:
        return path
    if not isinstance(recorded, list) or not recorded or recorded[0] == signature[0]:  # unrecorded or same size
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() == digest:
                _record_verified(path, digest)
                return path
    log.warning("cernvm: %s changed since it was verified (no longer sha256 %s): removed", path, digest)
    path.unlink(missing_ok=True)
    return None


def _recorded_digest(url: str) -> str | None:
    """The digest a URL had when its checksum file was last read (so offline runs find it)."""
    record = images_dir() / "urls" / hashlib.sha256(url.encode()).hexdigest()
    try:
        value = record.read_text().strip()
    except OSError:
        return None
    return value if DIGEST.match(value) else None


def _record_digest(url: str, digest: str) -> None:
    record = images_dir() / "urls" / hashlib.sha256(url.encode()).hexdigest()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(digest + "\n")


Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) as data arrives."""


def progress_printer(name: str, stream=None) -> Progress:
    """A bar on a terminal (bytes, rate, ETA); on a log (CI), one line per 10 %."""
    out = stream or sys.stderr
    tty = out.isatty()
    started = time.monotonic()
    last = {"tenth": -1, "drawn": 0.0}

    def show(done: int, total: int | None) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        if tty:
            now = time.monotonic()
            if now - last["drawn"] < 0.1 and done != total:
                return
            last["drawn"] = now
            if total:
                width = 30
                filled = int(width * done / total)
                eta = (total - done) / rate if rate else 0
                out.write(
                    f"\r{name}: [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB "
                    f"{rate / 1e6:.1f} MB/s ETA {eta:.0f} s "
                )
            else:
                out.write(f"\r{name}: {done / 1e6:.1f} MB {rate / 1e6:.1f} MB/s ")
            if done == total:
                out.write("\n")
            out.flush()
        elif total:
            tenth = done * 10 // total
            if tenth > last["tenth"]:
                last["tenth"] = tenth
                out.write(f"{name}: {tenth * 10} % of {total / 1e6:.1f} MB ({rate / 1e6:.1f} MB/s)\n")
                out.flush()

    return show


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https to a plain scheme (http, ftp): the image and its checksum would then
    come from whoever is on the path, and the checksum would vouch for their file."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https") or (urlsplit(req.full_url).scheme == "https" and scheme != "https"):
            fp.close()
            raise DownloadError(
                f"{redact(req.full_url)}: redirected to {redact(newurl)}: refused (leaves https for {scheme}: an "
                "image and its checksum must not travel unauthenticated); ask the server's owner for an https "
                "location, or give the http:// URL yourself if you mean to trust the network"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _RangeNotSatisfiable(DownloadError):
    """HTTP 416: nothing lies past the requested start (the partial file may hold the whole image already)."""


def _open(url: str, timeout: float, start: int = 0):
    request = urllib.request.Request(url, headers={"User-Agent": "cernvm-fixtures"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        # urllib's default handlers, proxies from the environment as it is now included, with redirects checked
        return urllib.request.build_opener(_NoDowngrade).open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()  # its connection
        error = _RangeNotSatisfiable if e.code == 416 and start else DownloadError
        raise error(f"{redact(url)}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{redact(url)}: cannot connect: {reason}") from None


def published_digest(ref: Reference, timeout: float) -> str:
    """The SHA-256 from the checksum file beside the image (``<hex>  <name>`` or just ``<hex>``)."""
    with _open(ref.checksum_url, timeout) as response:
        text = response.read(4096).decode("utf-8", "replace")
    for line in text.splitlines():
        words = line.split()
        if words and DIGEST.match(words[0].lower()) and (len(words) == 1 or words[-1].lstrip("*") == ref.name):
            return words[0].lower()
    raise DownloadError(f"{redact(ref.checksum_url)}: no SHA-256 for {ref.name} in the checksum file")


def fetch(ref: Reference, *, offline: bool = False, timeout: float = 30.0, progress: Progress | None = None) -> Path:
    """The image as a verified file in the cache, downloading (or resuming) it if needed.

    A pinned URL (``#sha256=``) is never asked again once cached. An unpinned one follows its publisher: its
    ``.sha256`` is read on every fetch (a few bytes), so a respin is downloaded; offline, or when the checksum cannot
    be read, the copy the URL had last is used (the latter with a warning)."""
    digest = _digest(ref, offline, timeout)
    if digest is None:
        raise _offline(ref)
    final = images_dir() / digest / ref.name
    with _locked(digest):
        if _still_verified(final, digest) is None:
            if offline:
                raise _offline(ref)
            final.parent.mkdir(parents=True, exist_ok=True)
            _download(ref, digest, final, timeout, progress)
            _record_verified(final, digest)
    if ref.sha256 is None:
        _record_digest(ref.url, digest)
    touch_used(final)
    return final


def _offline(ref: Reference) -> DownloadError:
    return DownloadError(
        f"{redact(ref.url)}: not in the cache ({images_dir()}) and offline mode (--cernvm-offline, --offline) "
        "forbids downloading it"
    )


def _digest(ref: Reference, offline: bool, timeout: float) -> str | None:
    """The SHA-256 ``ref`` must have: pinned, as published now, or (offline, or the checksum out of reach with a
    copy cached) the one recorded when the checksum was last read; None offline without a record."""
    if ref.sha256:
        return ref.sha256
    recorded = _recorded_digest(ref.url)
    if offline:
        return recorded
    try:
        return published_digest(ref, timeout)
    except DownloadError as e:
        if recorded is None or not (images_dir() / recorded / ref.name).is_file():
            raise
        log.warning("cernvm: %s; using the copy cached when it was last read (sha256 %s)", e, recorded)
        return recorded


CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")


def _download(ref: Reference, digest: str, final: Path, timeout: float, progress: Progress | None) -> None:
    """Download (or resume) ``ref`` into the digest's partial file, verify it, rename it to ``final``."""
    part = _work(digest, "part")
    hasher = hashlib.sha256()
    have = part.stat().st_size if part.exists() else 0
    if have:
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
    try:
        response = _open(ref.url, timeout, start=have)
    except _RangeNotSatisfiable:  # nothing after the partial file's end: it is whole if it verifies
        if hasher.hexdigest() == digest:
            os.replace(part, final)
            return
        part.unlink()
        have, hasher = 0, hashlib.sha256()
        response = _open(ref.url, timeout)
    resumed = CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
    if have and (response.status != 206 or resumed is None or int(resumed[1]) != have):
        have, hasher = 0, hashlib.sha256()  # the server ignored the range: start again
        if response.status == 206:  # a range from elsewhere (a broken proxy): this body cannot follow the part
            response.close()
            response = _open(ref.url, timeout)
    with response:
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if total is not None:
            _check_space(ref, part.parent, total, have)
        done = have
        try:
            with open(part, "ab" if have else "wb") as out:
                while True:
                    try:
                        chunk = response.read1(CHUNK)
                    except TimeoutError:
                        raise DownloadError(
                            f"{redact(ref.url)}: the server sent nothing for {timeout:.0f} s after {done} bytes "
                            "(the partial file is kept and resumed next time)"
                        ) from None
                    except OSError as e:
                        raise DownloadError(f"{redact(ref.url)}: connection lost after {done} bytes: {e}") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except OSError as e:  # writing the partial file: the download's own errors are DownloadErrors already
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                needs = f"{ref.name} needs {total} bytes" if total is not None else f"{ref.name} needs more"
                raise DownloadError(
                    f"{redact(ref.url)}: no space left in {images_dir()} after {done} bytes: {needs}; "
                    f"{_room()} (the partial file is kept and resumed next time)"
                ) from None
            raise DownloadError(f"{redact(ref.url)}: cannot write {part}: {e.strerror or e}") from None
    if total is not None and done < total:
        raise DownloadError(f"{redact(ref.url)}: connection closed after {done} of {total} bytes (resumed next time)")
    actual = hasher.hexdigest()
    if actual != digest:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{redact(ref.url)}: checksum mismatch: expected sha256 {digest}, got {actual}; file discarded"
        )
    os.replace(part, final)


LEGACY = (".lock",)
"""The cache's own names inside an entry's folder: conversions keep their lock there (and partial files, ``*.part``),
and so did downloads before ``.work/``. Not listed as entries; a download of that name is still verified and used
(it never meets the cache's own files), only ``image list`` and ``prune`` pass it over."""


def _room() -> str:
    """What a person can do about a full cache."""
    return (
        "make room (cernvm-fixtures image prune --older-than DAYS / --max-size GB) "
        "or set CERNVM_FIXTURES_CACHE to a larger disk"
    )


def _check_space(ref: Reference, folder: Path, total: int, have: int) -> None:
    """Refuse a download the cache's file system cannot hold, before writing any of it."""
    free = shutil.disk_usage(folder).free
    if total - have > free:
        raise DownloadError(
            f"{redact(ref.url)}: not enough space in {images_dir()}: {ref.name} needs {total} bytes "
            f"({total / 1e6:.1f} MB{f', {have} of them downloaded' if have else ''}), {free} bytes are free; {_room()}"
        )


def touch_used(path: Path) -> None:
    """Record that the cached image ``path`` was used now, as its folder's time (``image list`` shows it, ``prune
    --older-than`` counts from it); the file's own times stay those it was verified with."""
    try:
        os.utime(path.parent)
    except OSError:
        pass


def entries() -> list[tuple[Path, int, float]]:
    """Cached images (downloads, and conversions under ``converted/``): path, size in bytes, last use (the time of
    its folder: :func:`touch_used`), least recently used first."""
    found: list[tuple[Path, int, float]] = []
    root = images_dir()
    if not root.is_dir():
        return found
    folders = [*root.iterdir(), *((root / "converted").iterdir() if (root / "converted").is_dir() else ())]
    for folder in folders:
        if not DIGEST.match(folder.name) or not folder.is_dir():
            continue
        used = folder.stat().st_mtime
        for path in folder.iterdir():
            if path.is_file() and path.name not in LEGACY and not path.name.endswith(".part"):
                found.append((path, path.stat().st_size, used))
    return sorted(found, key=lambda e: e[2])


def prune(*, older_than: float | None = None, max_bytes: int | None = None) -> list[Path]:
    """Remove cached images unused for ``older_than`` seconds, then the least recently used until ``max_bytes``
    remain; an entry whose lock is held (downloading, being verified or converted) is left alone."""
    removed: list[Path] = []
    now = time.time()
    items = entries()
    folders: dict[Path, list[tuple[Path, int, float]]] = {}
    for entry in items:
        folders.setdefault(entry[0].parent, []).append(entry)
    total = sum(size for _, size, _ in items)
    for folder, members in folders.items():  # least recently used first
        stale = older_than is not None and now - members[0][2] > older_than
        over = max_bytes is not None and total > max_bytes
        if (stale or over) and _remove_unless_locked(folder):
            removed += [path for path, _, _ in members]
            total -= sum(size for _, size, _ in members)
    return removed


def _remove_unless_locked(folder: Path) -> bool:
    """Remove an entry's folder while holding its lock; False (and nothing removed) if another process holds it."""
    lock_path = folder / ".lock" if folder.parent.name == "converted" else _work(folder.name, "lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("cernvm: %s is in use (its lock is held): not pruned", folder)
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
