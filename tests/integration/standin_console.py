"""Copied beside the conftest of a scenario run through stand-ins (and imported there): what a stand-in prints
on its console goes to where the cloud's fake serves the instance's console, so the provider reads the host
keys from there as it would on the real cloud."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import Any


def forward_console(standin: Any, url: str, stop: threading.Event) -> None:
    """POST what the stand-in's console file gains to ``url`` until ``stop`` is set or the instance is gone."""
    sent = 0
    while not stop.is_set():
        data = standin.console_file.read_bytes() if standin.console_file.exists() else b""
        if len(data) > sent:
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=data[sent:], method="POST"), timeout=10).read()
            except urllib.error.HTTPError:
                return
            sent = len(data)
        stop.wait(0.3)
