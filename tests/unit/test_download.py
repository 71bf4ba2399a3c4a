"""Image downloads against a local HTTP server on 127.0.0.1: once, verified, resumable, locked, honest errors."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cernvm_fixtures import download
from cernvm_fixtures.images import Accepts, local_file

DATA = os.urandom(3 * 1024 * 1024 + 123)
DIGEST = hashlib.sha256(DATA).hexdigest()
NAME = "ucernvm-prod.2021.05-1.cernvm.x86_64.iso"


class Server:
    """Serves DATA under CernVM's published name with its .sha256, range requests as RFC 9110 has them (416 past
    the end), redirects, and faults on demand."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None
        self.stall = False
        self.ignore_range = False
        self.wrong_range = False
        """Answer a range request with 206 from byte 0 whatever was asked (a broken proxy)."""
        self.body = DATA
        self.published = DIGEST
        """What ``NAME.sha256`` says (a respin changes body and published digest together)."""
        self.extra: dict[str, bytes] = {}
        """More published files (name -> content), served with their .sha256."""
        self.redirects: dict[str, str] = {}
        """Path -> Location answered with 302."""
        self.gate: threading.Event | None = None
        """When set, every body waits for it (a download held in progress)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]  # a signed URL's query is the server's business
                outer.requests.append((path, self.headers.get("Range")))
                if path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                name = path.lstrip("/")
                file = name.removesuffix(".sha256")
                if file == NAME:
                    content, digest = outer.body, outer.published
                elif file in outer.extra:
                    content = outer.extra[file]
                    digest = hashlib.sha256(content).hexdigest()
                else:
                    self.send_error(404)
                    return
                if file != name:
                    body = f"{digest}  {file}\n".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and not outer.ignore_range:
                    start = int(header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(content):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(content)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start = 0 if outer.wrong_range else start
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                else:
                    self.send_response(200)
                body = content[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.gate is not None:
                    outer.gate.wait(10)
                if outer.stall:
                    self.wfile.write(body[:1000])
                    self.wfile.flush()
                    time.sleep(3)
                    return
                if outer.drop_after is not None:
                    cut, outer.drop_after = outer.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def gets(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0] == f"/{NAME}"]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CERNVM_FIXTURES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def leftovers(cache) -> list[str]:
    return sorted(p.name for p in cache.rglob("*.part"))


def test_first_fetch_verifies_against_the_published_checksum_then_hits_the_cache(server):
    ref = download.parse(f"{server.url}/{NAME}")
    path = download.fetch(ref)
    assert path.read_bytes() == DATA and path.name == NAME and path.parent.name == DIGEST
    assert download.fetch(ref) == path
    assert len(server.gets()) == 1, "the second fetch is a cache hit"
    assert download.fetch(ref, offline=True) == path, "offline finds it through the URL's recorded digest"


def test_digest_in_the_reference(server):
    path = download.fetch(download.parse(f"{server.url}/{NAME}#sha256={DIGEST}"))
    assert path.read_bytes() == DATA
    assert not any(r[0].endswith(".sha256") for r in server.requests), "a given digest needs no checksum file"


def test_resume_after_a_dropped_connection(server, cache):
    server.drop_after = 1024 * 1024
    ref = download.parse(f"{server.url}/{NAME}")
    with pytest.raises(download.DownloadError, match="connection closed after 1048576 of|connection lost after"):
        download.fetch(ref)
    assert len(leftovers(cache)) == 1 and download.cached(ref) is None, "never used unverified"
    assert not list((cache / "images" / DIGEST).glob("*")), "the entry's folder holds verified files only"
    path = download.fetch(ref)
    assert path.read_bytes() == DATA
    assert server.gets()[-1][1] == "bytes=1048576-", "the second request resumes where the first stopped"
    assert leftovers(cache) == []


def test_server_ignoring_the_range_restarts_cleanly(server):
    server.drop_after = 5000
    ref = download.parse(f"{server.url}/{NAME}")
    with pytest.raises(download.DownloadError):
        download.fetch(ref)
    server.ignore_range = True
    assert download.fetch(ref).read_bytes() == DATA


def test_checksum_mismatch_is_one_clear_error_and_leaves_no_partial_file(server, cache):
    server.body = DATA[:-1] + b"X"
    with pytest.raises(download.DownloadError) as error:
        download.fetch(download.parse(f"{server.url}/{NAME}"))
    message = str(error.value)
    assert f"{server.url}/{NAME}" in message and f"expected sha256 {DIGEST}" in message
    assert hashlib.sha256(server.body).hexdigest() in message
    assert leftovers(cache) == [] and not list(cache.rglob(NAME))


def test_not_found(server):
    with pytest.raises(download.DownloadError, match=r"missing.iso.sha256: HTTP 404"):
        download.fetch(download.parse(f"{server.url}/missing.iso"))
    with pytest.raises(download.DownloadError, match=r"missing.iso: HTTP 404"):
        download.fetch(download.parse(f"{server.url}/missing.iso#sha256={DIGEST}"))


def test_a_stalled_server_times_out_with_a_clear_message(server):
    server.stall = True
    with pytest.raises(download.DownloadError, match=r"sent nothing for 1 s after 1000 bytes"):
        download.fetch(download.parse(f"{server.url}/{NAME}#sha256={DIGEST}"), timeout=1)


def test_concurrent_fetches_download_once(server):
    ref = download.parse(f"{server.url}/{NAME}#sha256={DIGEST}")
    results = []
    threads = [threading.Thread(target=lambda: results.append(download.fetch(ref))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert len(server.gets()) == 1


def test_offline_without_the_file_names_it(server):
    with pytest.raises(download.DownloadError, match=rf"{NAME}: not in the cache .* offline mode \(--cernvm-offline"):
        download.fetch(download.parse(f"{server.url}/{NAME}"), offline=True)
    assert server.requests == []


def test_bad_fragment():
    with pytest.raises(download.DownloadError, match="#sha256=<64 hex digits>"):
        download.parse("https://example.invalid/x.iso#md5=abc")


def test_progress_one_line_per_tenth_on_a_log(server):
    log = io.StringIO()
    download.fetch(download.parse(f"{server.url}/{NAME}"), progress=download.progress_printer(NAME, log))
    lines = log.getvalue().splitlines()
    percents = [int(line.split(": ")[1].split(" %")[0]) for line in lines]
    assert percents == sorted(set(percents)) and all(p % 10 == 0 for p in percents) and percents[-1] == 100


def test_prune(server):
    path = download.fetch(download.parse(f"{server.url}/{NAME}"))
    assert [e[0] for e in download.entries()] == [path]
    assert download.prune(max_bytes=10**9) == []
    os.utime(path.parent, (time.time() - 3 * 86400,) * 2)  # last used three days ago
    assert download.prune(older_than=2 * 86400) == [path] and download.entries() == []


def test_a_target_image_url_is_fetched_once_and_booted_from_the_cache(server):
    from cernvm_fixtures import config

    target = config.parse(
        {"targets": {"kvm": {"provider": "kvm", "image": f"{server.url}/{NAME}", "profile": "cernvm4"}}}, "t"
    ).targets["kvm"]
    path = local_file(target, Accepts(".iso", "ISO images"))
    assert path.read_bytes() == DATA and local_file(target, Accepts(".iso", "ISO images")) == path
    assert len(server.gets()) == 1
    broken = config.parse(
        {"targets": {"kvm": {"provider": "kvm", "image": f"{server.url}/gone.iso", "profile": "cernvm4"}}}, "t"
    ).targets["kvm"]
    with pytest.raises(config.ConfigError, match=r"t: targets.kvm.image: .*gone.iso.sha256: HTTP 404"):
        local_file(broken, Accepts(".iso", "ISO images"))


def test_cli_fetch_list_prune(server, capsys):
    from cernvm_fixtures import cli

    assert cli.main(["image", "fetch", f"{server.url}/{NAME}"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(NAME)
    assert cli.main(["image", "list"]) == 0 and "1 image(s)" in capsys.readouterr().out
    assert cli.main(["image", "prune", "--max-size", "0"]) == 0 and f"removed {path}" in capsys.readouterr().out
    assert cli.main(["image", "fetch", "--offline", f"{server.url}/{NAME}"]) == 2
    assert "--cernvm-offline" in capsys.readouterr().err


def test_a_release_gives_each_target_the_file_in_its_format(server, monkeypatch):
    from cernvm_fixtures import config

    monkeypatch.setenv("CERNVM_FIXTURES_IMAGE_BASE", server.url)
    loaded = config.parse(
        {
            "targets": {
                "kvm": {"provider": "kvm", "image": "release:2021.05-1"},
                "ec2": {
                    "provider": "ec2",
                    "image": "release:prod/2021.05-1",
                    "region": "eu-west-1",
                    "ssh_cidr": "203.0.113.7/32",
                },
            }
        },
        "t",
    )
    kvm = loaded.targets["kvm"]
    assert kvm.profile == "cernvm4", "a CernVM release is µCernVM with the CernVM 4 OS"
    path = local_file(kvm, Accepts(".iso", "ISO images"))
    assert path.name == NAME and path.read_bytes() == DATA, "release:V-R -> ucernvm-prod.V-R.cernvm.x86_64.iso"
    with pytest.raises(
        config.ConfigError, match=r"targets\.ec2\.image: .*/ucernvm-prod\.2021\.05-1\.cernvm\.x86_64\.hvm"
    ):
        local_file(
            loaded.targets["ec2"], Accepts(".hvm", "raw HVM images")
        )  # the server publishes no .hvm of this release


def test_a_release_gives_openstack_its_hdd_and_gce_its_tarball(server, monkeypatch):
    from cernvm_fixtures import config
    from cernvm_fixtures.images import resolve
    from cernvm_fixtures.providers.openstack import GLANCE

    monkeypatch.setenv("CERNVM_FIXTURES_IMAGE_BASE", server.url)
    server.extra = {
        "ucernvm-prod.2021.05-1.cernvm.x86_64.hdd": b"raw disk",
        "ucernvm-prod.2021.05-1.cernvm.x86_64.tar.gz": b"gzipped disk.raw",
    }
    loaded = config.parse(
        {
            "targets": {
                "os": {"provider": "openstack", "image": "release:2021.05-1", "ssh_cidr": "203.0.113.7/32"},
                "gce": {
                    "provider": "gce",
                    "image": "release:2021.05-1",
                    "project": "p",
                    "zone": "europe-west1-b",
                    "ssh_cidr": "203.0.113.7/32",
                },
            }
        },
        "t",
    )
    path = resolve(loaded.targets["os"], GLANCE).file
    assert path is not None
    assert (path.name, path.read_bytes()) == ("ucernvm-prod.2021.05-1.cernvm.x86_64.hdd", b"raw disk")
    gce = local_file(loaded.targets["gce"], Accepts(".tar.gz", "tarballs"))
    assert gce.read_bytes() == b"gzipped disk.raw"


def test_the_published_layout_can_be_overridden(server, monkeypatch):
    from cernvm_fixtures import download

    monkeypatch.setenv("CERNVM_FIXTURES_IMAGE_BASE", "https://mirror.invalid/cernvm")
    assert download.release_url("release:testing/2022.01-2", "vhd") == (
        "https://mirror.invalid/cernvm/ucernvm-testing.2022.01-2.cernvm.x86_64.vhd"
    )
    monkeypatch.setenv("CERNVM_FIXTURES_IMAGE_PATTERN", "{version}/{branch}.{fmt}")
    assert download.release_url("release:2022.01-2", "iso") == "https://mirror.invalid/cernvm/2022.01-2/prod.iso"
    monkeypatch.setenv("CERNVM_FIXTURES_IMAGE_PATTERN", "{release}.{fmt}")
    with pytest.raises(download.DownloadError, match=r"IMAGE_PATTERN.*use the fields \{branch\}, \{version\} and"):
        download.release_url("release:2022.01-2", "iso")


@pytest.mark.parametrize("image", ["release:2021.5-1", "release:latest", "release:Prod/2021.05-1"])
def test_a_malformed_release_is_refused_at_load(image):
    from cernvm_fixtures import config

    with pytest.raises(config.ConfigError, match=r"t: targets\.kvm\.image: .*expected release:\[BRANCH/\]YYYY\.MM-R"):
        config.parse({"targets": {"kvm": {"provider": "kvm", "image": image}}}, "t")


def test_cernvm_release_and_image_base_options(pytester, server, monkeypatch):
    monkeypatch.delenv("CERNVM_FIXTURES_IMAGE_BASE", raising=False)
    pytester.makefile(".toml", cernvm='[targets.kvm]\nprovider = "kvm"\n[targets.docker]\nprovider = "docker"\n')
    pytester.makepyfile(
        test_it="""
import os

def test_release(cernvm_harness):
    kvm, docker = cernvm_harness.targets["kvm"], cernvm_harness.targets["docker"]
    assert (kvm.image, kvm.profile) == ("release:2021.05-1", "cernvm4")
    assert docker.image == "appliance", "--cernvm-release kvm=... leaves the other targets alone"
    print("BASE", os.environ["CERNVM_FIXTURES_IMAGE_BASE"])
"""
    )
    result = pytester.runpytest_inprocess(
        "-s", "-p", "no:cacheprovider", "--cernvm-release", "kvm=2021.05-1", "--cernvm-image-base", server.url
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*BASE {server.url}*"])


def test_progress_bar_on_a_terminal(server, cache):
    """``image fetch`` with its stderr on a pseudo-terminal draws one bar redrawn in place: bytes, rate, ETA."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = dict(os.environ, CERNVM_FIXTURES_CACHE=str(cache))
    child = subprocess.Popen(
        [sys.executable, "-m", "cernvm_fixtures.cli", "image", "fetch", f"{server.url}/{NAME}"],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    child.wait(60)
    child.stdout.close()
    os.close(master)
    text = seen.decode()
    assert child.returncode == 0, text
    assert "\r" + NAME + ": [" in text, f"no bar redrawn in place: {text!r}"
    assert re.search(r"\[#{30}\] [\d.]+/[\d.]+ MB [\d.]+ MB/s ETA \d+ s", text), text
    assert " % of " not in text, "the log format is for non-terminals"


# --- signed URLs: their query tokens are never shown or recorded ----------------------------------------------

SIGNED = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=0badc0ffee"
"""An S3 presigned URL's query (the credential and signature are secrets)."""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"https://b.s3.amazonaws.com/x.hdd?{SIGNED}",
            "https://b.s3.amazonaws.com/x.hdd?X-Amz-Algorithm=REDACTED&"
            "X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
        ),
        (
            "https://a.blob.core.windows.net/c/x.vhd?sv=2022-11-02&sp=r&sig=s3cr3t%3D#sha256=" + "0" * 64,
            "https://a.blob.core.windows.net/c/x.vhd?sv=REDACTED&sp=REDACTED&sig=REDACTED#sha256=" + "0" * 64,
        ),
        ("https://user:pa55@example.org/x.iso", "https://REDACTED@example.org/x.iso"),
        ("https://example.org/x.iso?t0ken", "https://example.org/x.iso?REDACTED"),
        ("https://example.org/x.iso", "https://example.org/x.iso"),
        ("/srv/images/x.iso", "/srv/images/x.iso"),
        ("release:prod/2021.05-1", "release:prod/2021.05-1"),
    ],
)
def test_redact_keeps_what_a_person_needs_and_drops_tokens(url, shown):
    assert download.redact(url) == shown


def test_a_signed_url_is_redacted_in_errors_and_its_checksum_keeps_the_token(server):
    with pytest.raises(download.DownloadError) as error:
        download.fetch(download.parse(f"{server.url}/missing.iso?{SIGNED}"))
    message = str(error.value)
    assert "missing.iso.sha256?X-Amz-Algorithm=REDACTED&" in message and "HTTP 404" in message
    assert "AKIAEXAMPLE" not in message and "0badc0ffee" not in message
    assert server.requests == [("/missing.iso.sha256", None)], "the checksum file is <path>.sha256, same query"
    path = download.fetch(download.parse(f"{server.url}/{NAME}?{SIGNED}"))
    assert path.name == NAME and path.read_bytes() == DATA


def test_a_signed_url_is_redacted_in_config_errors_and_junit_properties(server):
    from types import SimpleNamespace

    from cernvm_fixtures import config, junit

    url = f"{server.url}/x.vhd?{SIGNED}"
    target = config.parse({"targets": {"kvm": {"provider": "kvm", "image": url, "profile": "cernvm4"}}}, "t")
    kvm = target.targets["kvm"]
    with pytest.raises(config.ConfigError) as error:
        local_file(kvm, Accepts(".iso", "ISO images"))
    assert "X-Amz-Signature=REDACTED" in str(error.value) and "0badc0ffee" not in str(error.value)
    with pytest.raises(config.ConfigError) as error:
        config.parse({"targets": {"kvm": {"provider": "kvm", "image": url}}}, "t")
    assert "X-Amz-Signature=REDACTED" in str(error.value) and "0badc0ffee" not in str(error.value)
    instance = SimpleNamespace(
        target=kvm, profile=SimpleNamespace(name="cernvm4"), ready_after=None, timings={}, host_key_trust=None
    )
    properties = dict(junit.instance_properties(instance))
    assert properties["cernvm_image"] == download.redact(url) and "0badc0ffee" not in str(properties)


# --- the cache: resumes that end, names that cannot collide, full disks, last use, downgrades, re-verification ----


def interrupted_before_the_rename(ref: download.Reference) -> None:
    """Fetch ``ref`` and stop once the whole file is written, before it is renamed into place (a kill there)."""

    def killed(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            download.fetch(ref)


def test_a_part_holding_the_whole_file_is_verified_when_the_server_answers_416(server, cache):
    ref = download.parse(f"{server.url}/{NAME}")
    interrupted_before_the_rename(ref)
    assert [p.stat().st_size for p in cache.rglob("*.part")] == [len(DATA)]
    path = download.fetch(ref)
    assert path.read_bytes() == DATA and leftovers(cache) == []
    assert server.gets()[-1] == (f"/{NAME}", f"bytes={len(DATA)}-"), "asked for the rest, answered 416"


def test_a_whole_part_that_does_not_verify_is_downloaded_again(server, cache):
    ref = download.parse(f"{server.url}/{NAME}")
    interrupted_before_the_rename(ref)
    (part,) = cache.rglob("*.part")
    with open(part, "r+b") as f:
        f.write(b"X")
    assert download.fetch(ref).read_bytes() == DATA
    assert [r[1] for r in server.gets()][-2:] == [f"bytes={len(DATA)}-", None], "416, then from the start"


def test_a_range_answered_from_another_offset_restarts_the_download(server):
    ref = download.parse(f"{server.url}/{NAME}")
    server.drop_after = 1024 * 1024
    with pytest.raises(download.DownloadError):
        download.fetch(ref)
    server.wrong_range = True
    assert download.fetch(ref).read_bytes() == DATA


def test_a_download_named_like_a_lock_file_is_downloaded_and_verified(server):
    server.extra = {".lock": b"an image that happens to be called .lock"}
    path = download.fetch(download.parse(f"{server.url}/.lock"))
    assert path.read_bytes() == b"an image that happens to be called .lock"


def test_a_download_named_like_another_ones_partial_file_is_downloaded_and_verified(server, cache):
    server.drop_after = 1024 * 1024
    with pytest.raises(download.DownloadError):
        download.fetch(download.parse(f"{server.url}/{NAME}"))
    server.extra = {f"{NAME}.part": DATA}  # the same content (so the same digest) under the partial file's name
    assert download.fetch(download.parse(f"{server.url}/{NAME}.part")).read_bytes() == DATA


def test_a_url_ending_in_dot_dot_still_names_a_file():
    assert download.Reference("https://example.org/images/..").name not in ("", ".", "..")


def test_a_disk_too_small_is_one_clear_error_before_the_download(server, cache, monkeypatch):
    usage = shutil.disk_usage(cache.parent)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(download.DownloadError) as error:
        download.fetch(download.parse(f"{server.url}/{NAME}"))
    message = str(error.value)
    assert f"not enough space in {cache / 'images'}: {NAME} needs {len(DATA)} bytes" in message, message
    assert "1000 bytes are free" in message and "cernvm-fixtures image prune" in message
    assert not list(cache.rglob(NAME)) and leftovers(cache) == []


def test_disk_full_during_the_download_is_one_clear_error(server, cache, monkeypatch):
    """Writes to the partial file fail as on a full disk (they go to /dev/full)."""

    def full(file, mode="r", *args, **kwargs):
        if str(file).endswith(".part") and mode in ("ab", "wb"):
            return open("/dev/full", mode, *args, **kwargs)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(download, "open", full, raising=False)
    with pytest.raises(download.DownloadError) as error:
        download.fetch(download.parse(f"{server.url}/{NAME}"))
    message = str(error.value)
    assert f"no space left in {cache / 'images'}" in message and f"{NAME} needs {len(DATA)} bytes" in message


def test_prune_older_than_counts_from_the_last_use(server):
    ref = download.parse(f"{server.url}/{NAME}")
    path = download.fetch(ref)
    long_ago = time.time() - 3 * 86400
    for downloaded in (path, path.parent):
        os.utime(downloaded, (long_ago, long_ago))
    assert download.fetch(ref) == path, "used today"
    assert download.prune(older_than=2 * 86400) == []
    assert [(e[0], e[2] > time.time() - 60) for e in download.entries()] == [(path, True)]


def test_prune_leaves_an_entry_alone_while_its_lock_is_held(server):
    """Another name with the same content is being downloaded into the entry's digest: prune skips it."""
    path = download.fetch(download.parse(f"{server.url}/{NAME}"))
    server.extra = {"copy.iso": DATA}
    server.gate = threading.Event()
    fetched: list[object] = []

    def fetch_copy():
        try:
            fetched.append(download.fetch(download.parse(f"{server.url}/copy.iso")))
        except BaseException as e:  # noqa: BLE001 - reported below
            fetched.append(e)

    copying = threading.Thread(target=fetch_copy)
    copying.start()
    deadline = time.monotonic() + 10
    while ("/copy.iso", None) not in server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the request is in: the copy's download holds the digest's lock
    try:
        assert download.prune(max_bytes=0) == [], "an entry whose lock is held is not removed"
    finally:
        server.gate.set()
        copying.join(10)
    assert path.read_bytes() == DATA and [type(f).__name__ for f in fetched] == ["PosixPath"], fetched


@pytest.fixture
def https_server(tmp_path, monkeypatch):
    """The same server over TLS (a trustme CA this process trusts through SSL_CERT_FILE)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    s = Server(tls=context)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_https_serves_and_follows_an_https_redirect(https_server):
    https_server.redirects = {"/moved.iso": f"{https_server.url}/{NAME}"}
    assert download.fetch(download.parse(f"{https_server.url}/moved.iso#sha256={DIGEST}")).read_bytes() == DATA


@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_a_redirect_from_https_to_a_plain_scheme_is_refused(https_server, server, scheme):
    plain = server.url if scheme == "http" else "ftp://127.0.0.1:9"
    https_server.redirects = {f"/{NAME}": f"{plain}/{NAME}", f"/{NAME}.sha256": f"{plain}/{NAME}.sha256"}
    with pytest.raises(download.DownloadError, match=rf"redirected to {scheme}://127\.0\.0\.1:\d+/.*: refused"):
        download.fetch(download.parse(f"{https_server.url}/{NAME}#sha256={DIGEST}"))
    with pytest.raises(download.DownloadError, match=rf"{NAME}\.sha256: redirected to {scheme}://.*: refused"):
        download.fetch(download.parse(f"{https_server.url}/{NAME}"))
    assert server.requests == [], "nothing was asked over the plain scheme"


@pytest.mark.parametrize("damage", ["same-size", "truncated"])
def test_a_cached_file_changed_since_it_was_verified_is_downloaded_again(server, damage):
    ref = download.parse(f"{server.url}/{NAME}")
    path = download.fetch(ref)
    stamp = path.stat()
    with open(path, "r+b") as f:
        if damage == "same-size":
            f.seek(len(DATA) // 2)
            f.write(b"X")
        else:
            f.truncate(len(DATA) // 2)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # a change that keeps the file's time
    assert download.cached(ref) is None, "a changed file is not a cache hit"
    assert download.fetch(ref) == path and path.read_bytes() == DATA
    assert len(server.gets()) == 2


def test_offline_a_cached_file_that_does_not_verify_is_an_error(server):
    ref = download.parse(f"{server.url}/{NAME}#sha256={DIGEST}")
    path = download.fetch(ref)
    path.write_bytes(b"X" + DATA[1:])
    with pytest.raises(download.DownloadError, match=r"not in the cache .*offline"):
        download.fetch(ref, offline=True)


def test_an_unpinned_url_follows_a_respin(server):
    """Without #sha256= the published checksum decides: a respin (new file, new .sha256) is downloaded."""
    ref = download.parse(f"{server.url}/{NAME}")
    first = download.fetch(ref)
    respun = os.urandom(4096)
    server.body, server.published = respun, hashlib.sha256(respun).hexdigest()
    second = download.fetch(ref)
    assert second.read_bytes() == respun and second != first
    assert download.fetch(ref, offline=True) == second, "offline: the copy the URL had last"
    assert first.read_bytes() == DATA, "the earlier copy stays cached under its own digest"


def test_an_unpinned_url_whose_server_is_down_uses_the_copy_it_had_with_a_warning(server, caplog):
    ref = download.parse(f"{server.url}/{NAME}")
    path = download.fetch(ref)
    server.httpd.shutdown()
    server.httpd.server_close()
    with caplog.at_level("WARNING", logger="cernvm_fixtures.download"):
        assert download.fetch(ref, timeout=2) == path
    assert any(NAME in r.getMessage() and "cannot connect" in r.getMessage() for r in caplog.records)
