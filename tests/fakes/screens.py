"""The screen of a cloud instance's KVM stand-in, as the fakes serve it (GCE getScreenshot, EC2 on moto, Azure boot
diagnostics): taken through libvirt when asked, so the fake answers with the stand-in's real screen at that moment.
A stand-in booted by another process (a child scenario run) is named by its libvirt domain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def standin_screen(domain: str) -> Callable[[Path], Path]:
    """Writes a PNG of the screen of the stand-in domain named to the path given (and returns it)."""
    from cernvm_fixtures.providers.kvm import connect, default_uri, domain_screenshot

    def take(path: Path) -> Path:
        conn = connect(default_uri())
        return domain_screenshot(conn, conn.lookupByName(domain), path, domain)

    return take
