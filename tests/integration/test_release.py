"""A CernVM release by name: each target fetches the file CernVM publishes in its own format, verified, once.

A local HTTP server on 127.0.0.1 publishes the test appliance's ISO and Docker tarball under CernVM's release
names with their ``.sha256`` files; the scenario suite runs on KVM and Docker from ``--cernvm-release``.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cernvm_fixtures import appliance, download

from ..helpers import domains_under, ledger_entries, outcomes, run_scenarios

RELEASE = "2099.01-1"
FILES = {
    "iso": f"ucernvm-prod.{RELEASE}.cernvm.x86_64.iso",
    "docker": f"cvm-docker.{RELEASE}.cernvm.x86_64.tar",
}


def publish(directory: Path, name: str, source: Path) -> Path:
    """Publish ``source`` as ``name`` with its checksum file; returns where the image cache keeps it."""
    shutil.copyfile(source, directory / name)
    digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    cached = download.images_dir() / digest / name
    cached.unlink(missing_ok=True)  # fetched by this test, not found from an earlier run
    return cached


def test_a_release_boots_every_local_target_from_its_published_file(tmp_path):
    built = appliance.build()
    site = tmp_path / "releases"
    site.mkdir()
    cached = [publish(site, FILES["iso"], built.iso), publish(site, FILES["docker"], built.docker_tarball)]
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_scenarios(
            tmp_path,
            f"--cernvm-release={RELEASE}",
            f"--cernvm-image-base=http://127.0.0.1:{server.server_address[1]}/",
            "--cernvm-profile=appliance",
            "--cernvm-target=kvm,docker",
            "-k",
            "kernel or cvmfs",
        )
    finally:
        server.shutdown()
        present = [path.is_file() for path in cached]
        for path in cached:
            path.unlink(missing_ok=True)
    assert domains_under(tmp_path) == [] and ledger_entries(tmp_path / "state") == []
    assert result.returncode == 0, result.output[-6000:]
    found = outcomes(result.output)
    assert {name.split("[")[1] for name in found} == {"kvm]", "docker]"}, found
    assert set(found.values()) == {"PASSED"}, found
    assert present == [True, True], "both files were verified into the image cache"
    downloads = [path.lstrip("/") for path in requests if not path.endswith(".sha256")]
    assert sorted(downloads) == sorted(FILES.values()), "each file fetched once"
