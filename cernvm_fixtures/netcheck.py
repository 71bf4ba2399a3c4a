"""Validators for network values that reach a cloud's firewall or a guest's shell (a leaf: imports no sibling).

Used by option and profile models as ``field_validator`` bodies; each raises ValueError
saying what would be valid, which pydantic turns into an error naming the file and key.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

WIDEST_SSH = {4: 24, 6: 48}
"""The broadest SSH source network accepted without ``allow_wide_ssh``: an IPv4 /24, an IPv6 /48 (one site)."""
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""Hosts an API endpoint may be reached on over plain http (a local emulator): nothing leaves the machine."""
INTERFACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
"""A Linux network interface name: 1-15 characters, no '/', ':', whitespace or shell metacharacters."""


def ssh_cidr(value: str, allow_wide: bool = False) -> str:
    """An SSH source network no broader than a /24 (IPv4) or /48 (IPv6) unless ``allow_wide``; never /0."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"an IPv4/IPv6 address or network such as '203.0.113.7/32' ({e})") from None
    if network.prefixlen == 0:
        raise ValueError("the runner's own address range, not the whole internet")
    widest = WIDEST_SSH[network.version]
    if network.prefixlen < widest and not allow_wide:
        raise ValueError(
            f"the runner's own address or range, /{widest} or narrower (e.g. '203.0.113.7/32'): {value} admits "
            f"{network.num_addresses} addresses to SSH; set allow_wide_ssh = true to mean it"
        )
    return str(network)


def interface_name(value: str) -> str:
    """A network interface name safe to put in a guest's shell command unquoted."""
    if not INTERFACE.match(value) or value in (".", ".."):
        raise ValueError(
            f"{value!r} is not a network interface name: use 1-15 letters, digits, '_', '.', '-' (e.g. 'eth0')"
        )
    return value


def api_endpoint(value: str) -> str:
    """An API endpoint the client sends its bearer token to: ``https://``, or ``http://`` on this machine only
    (127.0.0.1, ::1, localhost: a local emulator); anything else would put the token on the network in clear."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
        raise ValueError(f"{value!r} is not an https:// URL (e.g. 'https://compute.googleapis.com')")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"{value!r}: plain http would send the bearer token in clear; use https:// "
            f"(http:// only for {', '.join(LOOPBACK_HOSTS)})"
        )
    return value
