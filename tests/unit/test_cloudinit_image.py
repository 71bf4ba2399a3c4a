"""The cloud-init test image's builder without building: where it installs from, and its cache entries."""

from __future__ import annotations

import json
import textwrap

import pytest

from ..images import cloudinit
from ..images.cloudinit import ImageBuildError, Source


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_sources_from_both_formats_debian_12_main_only(tmp_path):
    write(
        tmp_path / "sources.list",
        """\
        # a comment
        deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian/ bookworm main contrib
        deb-src http://mirror.example/debian bookworm main
        deb http://mirror.example/debian bullseye main
        """,
    )
    write(
        tmp_path / "sources.list.d/debian.sources",
        """\
        Types: deb
        # http://snapshot.debian.org/archive/debian/20250520T000000Z
        URIs: http://deb.debian.org/debian
        Suites: bookworm bookworm-updates
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        URIs: http://deb.debian.org/debian-security
        Suites: bookworm-security
        Components: main

        Types: deb
        URIs: http://disabled.example/debian
        Suites: bookworm
        Components: main
        Enabled: no
        """,
    )
    write(tmp_path / "sources.list.d/vendor.list", "deb https://vendor.example/apt stable main\n")
    write(tmp_path / "sources.list.d/old.list.disabled-by-farm", "deb http://other.example/debian bookworm main\n")
    found = cloudinit.host_sources(tmp_path)
    assert found == [
        Source("http://mirror.example/debian", "bookworm", ("main",)),
        Source("http://deb.debian.org/debian", "bookworm", ("main",)),
        Source("http://deb.debian.org/debian", "bookworm-updates", ("main",)),
        Source("http://deb.debian.org/debian-security", "bookworm-security", ("main",)),
    ]
    assert cloudinit.mirror(found) == "http://mirror.example/debian", "the first entry for the suite itself"
    assert found[3].line() == "deb http://deb.debian.org/debian-security bookworm-security main"


def test_no_debian_12_mirror_is_an_error_naming_the_files(tmp_path):
    write(tmp_path / "sources.list", "deb http://deb.debian.org/debian trixie main\n")
    with pytest.raises(ImageBuildError, match=r"/etc/apt/sources.list.*no 'deb' entry for Debian bookworm"):
        cloudinit.mirror(cloudinit.host_sources(tmp_path))


def test_an_entry_is_built_once_and_an_interrupted_build_never_reused(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp.name)
        (tmp / "payload").write_text("ok")
        return {"n": len(calls)}

    def interrupted(tmp):
        (tmp / "payload").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cloudinit.entry(tmp_path, "image-x", "image.json", interrupted, print)
    assert not (tmp_path / "image-x").exists() and not list(tmp_path.glob(".tmp-*")), "nothing of it is left"

    # a crashed builder's temporary directory, and an entry without its marker: neither is reused
    (tmp_path / ".tmp-image-x-crashed").mkdir()
    (tmp_path / "image-x").mkdir()
    (tmp_path / "image-x" / "payload").write_text("stale")
    done, built = cloudinit.entry(tmp_path, "image-x", "image.json", build, print)
    assert built and (done / "payload").read_text() == "ok"
    assert json.loads((done / "image.json").read_text()) == {"n": 1}
    assert not list(tmp_path.glob(".tmp-*"))

    again, built = cloudinit.entry(tmp_path, "image-x", "image.json", build, print)
    assert again == done and not built and len(calls) == 1


def test_apt_policy_candidates(monkeypatch):
    out = textwrap.dedent(
        """\
        cloud-init:
          Installed: (none)
          Candidate: 22.4.2-1+deb12u4
          Version table:
             22.4.2-1+deb12u4 500
        live-boot:
          Installed: (none)
          Candidate: 1:20230131+deb12u1
        """
    )

    class Done:
        stdout = out

    monkeypatch.setattr(cloudinit.subprocess, "run", lambda *a, **k: Done())
    assert cloudinit.candidates(("cloud-init", "live-boot")) == {
        "cloud-init": "22.4.2-1+deb12u4",
        "live-boot": "1:20230131+deb12u1",
    }
