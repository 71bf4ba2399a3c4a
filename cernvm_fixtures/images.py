"""The names of images the harness knows itself (a leaf module: config and providers both use it)."""

from __future__ import annotations

APPLIANCE = "appliance"
"""Image name of the project's own test appliance; ``appliance:<variant>`` picks a broken variant."""


def appliance_variant(image: str) -> str | None:
    """The appliance variant an image name asks for (``appliance`` is ``ok``); None for any other image."""
    if image == APPLIANCE:
        return "ok"
    if image.startswith(APPLIANCE + ":"):
        return image.partition(":")[2] or "ok"
    return None
