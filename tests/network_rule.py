"""The network rule, as a pytest plugin: a test connects to the loopback addresses and to Unix sockets only.

pytest-socket enforces it (its ``--allow-hosts`` and ``--allow-unix-socket``): a connection to anything else
fails the test loudly. The root conftest applies it to every run of the project's own tests (``tests/``); every
pytest those tests start loads it (``-p tests.network_rule``, see ``tests/helpers.py``), and so do ``./dev
scenarios`` and ``tox -e scenarios``. A command line that sets pytest-socket's options itself keeps them.
"""

from __future__ import annotations

import pytest

ALLOWED_HOSTS = "127.0.0.1,::1"
"""Where a test may connect: IPv4's and IPv6's loopback addresses (and Unix sockets: libvirt, dockerd)."""


@pytest.hookimpl(tryfirst=True)  # before pytest-socket's own pytest_configure reads its options
def pytest_configure(config: pytest.Config) -> None:
    if config.option.allow_hosts is None and not config.option.force_enable_socket:
        config.option.allow_hosts = ALLOWED_HOSTS
        config.option.allow_unix_socket = True
