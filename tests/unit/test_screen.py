"""The guest's screen: images from every platform's format to PNG, the text of a virtual console, and
``cernvm-fixtures screen`` on a kept instance."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cernvm_fixtures import cli, config
from cernvm_fixtures.errors import ScreenUnavailable
from cernvm_fixtures.instance import launch
from cernvm_fixtures.providers.docker import DockerProvider
from cernvm_fixtures.providers.openstack import OpenStackProvider
from cernvm_fixtures.run import Keep, Run
from cernvm_fixtures.screen import Capture, file_label, png_size, vcsa_text, write_png
from cernvm_fixtures.testing.local import PROFILE


def image(fmt: str, size: tuple[int, int] = (720, 400)) -> bytes:
    """A screen in ``fmt``: black, one grey text pixel (as a VGA text console shows)."""
    picture = Image.new("RGB", size)
    picture.putpixel((5, 7), (170, 170, 170))
    out = io.BytesIO()
    picture.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PPM", "JPEG", "BMP", "PNG"], ids=["libvirt", "ec2", "azure", "png"])
def test_every_platforms_format_becomes_a_png_of_the_same_size(tmp_path, fmt):
    path = write_png(image(fmt), tmp_path / "s" / "screen.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png_size(path) == (720, 400)
    with Image.open(path) as written:
        assert written.getpixel((0, 0)) == (0, 0, 0)
        if fmt != "JPEG":  # lossy
            assert written.getpixel((5, 7)) == (170, 170, 170)
    assert [p.name for p in path.parent.iterdir()] == ["screen.png"], "no partial file left"


@pytest.mark.parametrize("data,said", [(b"", "an empty image"), (b"<html>busy</html>", "not an image")])
def test_what_is_not_an_image_is_no_screenshot(tmp_path, data, said):
    with pytest.raises(ScreenUnavailable, match=said):
        write_png(data, tmp_path / "screen.png", "vm-1")
    assert not (tmp_path / "screen.png").exists()


def vcsa(rows: int, columns: int, text: list[str]) -> bytes:
    cells = b"".join(line.encode("cp437").ljust(columns, b"\0") for line in text + [""] * (rows - len(text)))
    return bytes([rows, columns, 3, 1]) + bytes(b for c in cells for b in (c, 0x07))


def test_vcsa_text_is_the_screen_row_by_row():
    raw = vcsa(25, 80, ["Booting \u00b5CernVM", "Unable to mount cvmfs root filesystem!", "", "(initramfs) _"])
    assert vcsa_text(raw) == "Booting \u00b5CernVM\nUnable to mount cvmfs root filesystem!\n\n(initramfs) _"
    assert vcsa_text(vcsa(2, 3, ["abc", "de"])) == "abc\nde", "rows split at the width from the header"


@pytest.mark.parametrize("raw", [b"\x19P", bytes([25, 80, 0, 0]) + b"a\x07" * 10], ids=["header", "cells"])
def test_a_truncated_vcsa_is_refused(raw):
    with pytest.raises(ValueError):
        vcsa_text(raw)


def test_file_labels_and_the_description():
    assert file_label("scenarios/test_kernel.py::test_release[kvm-ec2/x]") == "test_kernel-test_release-kvm-ec2-x"
    assert file_label("not-ready-reachable") == "not-ready-reachable"
    assert Capture(None, "a Docker container has no display").describe() == (
        "no screenshot: a Docker container has no display"
    )


@pytest.mark.parametrize(
    "provider,reason",
    [
        (DockerProvider, "a Docker container has no display"),
        (OpenStackProvider, "OpenStack's compute API has no screenshot call"),
    ],
)
def test_docker_and_openstack_say_why_not(tmp_path, provider, reason):
    from cernvm_fixtures.ledger import Resource

    with pytest.raises(ScreenUnavailable, match=reason):
        provider.screenshot_resource(Resource(provider.name, "server", "cvmfx-r-x-1", "r"), tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_cli_screen_of_a_kept_instance(local_provider, tmp_path, capsys):
    target = config.parse({"targets": {"alpha": {"provider": "local", "profile": PROFILE}}}, "test").targets["alpha"]
    instance = launch(target, Run(keep=Keep.ALWAYS))
    instance.machine.keep()
    instance.transport.close()
    try:
        assert cli.main(["screen", instance.name, "--output", str(tmp_path / "s.png")]) == 2
        assert "no screenshot: a local machine shows no screen" in capsys.readouterr().err
        (instance.machine.directory / "screen.png").write_bytes(image("PNG"))
        assert cli.main(["screen", instance.name, "--output", str(tmp_path / "s.png")]) == 0
        assert capsys.readouterr().out == f"{tmp_path / 's.png'} (720x400)\n"
        assert (tmp_path / "s.png").read_bytes() == image("PNG")
    finally:
        assert cli.main(["down", instance.name]) == 0


def test_an_instance_never_logged_in_is_not_asked_for_its_screen_over_the_network():
    """A failure report's screen text comes from inside only once readiness logged in: an address a cloud gave a
    machine that never got that far (it failed to provision) may be anyone's, and is never connected to."""
    from types import SimpleNamespace

    from cernvm_fixtures.instance import Instance

    asked: list[str] = []

    class Transport:
        def unreachable(self):
            asked.append("unreachable")
            return None

        def run(self, command, **kwargs):
            asked.append(command)
            raise AssertionError("not to be called")

    machine = SimpleNamespace(screen_text=lambda: "from outside", name="m")
    instance = Instance.__new__(Instance)
    instance.machine, instance.logged_in = machine, False
    instance.__dict__["transport"] = Transport()
    assert instance.screen_text() == "from outside" and asked == []
