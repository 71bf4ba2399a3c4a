"""Azurite, Microsoft's own Azure Storage emulator, serving blobs over HTTPS on 127.0.0.1 (tests only).

It runs with ``--oauth basic``: it accepts the bearer tokens the fake ARM's token endpoint issues
(it checks issuer, audience and expiry, not the signature), so the provider's blob client
authenticates through azure-identity exactly as against a real storage account. Telemetry is off
(it would reach out), data stays in memory.

Installed project-locally from the npm registry with ``npm install --prefix tests/fakes/azure/node azurite@3``
(see :func:`ensure_installed`); Node.js comes from Debian's ``nodejs`` and ``npm`` packages.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NODE = Path(__file__).resolve().parent / "node"
BINARY = NODE / "node_modules" / ".bin" / "azurite-blob"
VERSION = "3"
ACCOUNT = "devstoreaccount1"
"""The account Azurite serves by default (path-style URLs: https://127.0.0.1:PORT/devstoreaccount1)."""
LISTENING = re.compile(r"listens on (https://127\.0\.0\.1:(\d+))")


class AzuriteUnavailable(RuntimeError):
    """Azurite is not installed and cannot be installed here (no node/npm, or the registry said no)."""


def ensure_installed() -> Path:
    """The azurite-blob launcher, installed under tests/fakes/azure/node on first use."""
    if BINARY.exists():
        return BINARY
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AzuriteUnavailable("Azurite needs Node.js and npm (Debian packages nodejs and npm)")
    NODE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE), f"azurite@{VERSION}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0 or not BINARY.exists():
        raise AzuriteUnavailable(f"npm install azurite@{VERSION} failed: {result.stderr[-2000:]}")
    return BINARY


@dataclass
class Azurite:
    """One running azurite-blob process."""

    process: subprocess.Popen
    url: str
    log: Path

    @property
    def account_url(self) -> str:
        return f"{self.url}/{ACCOUNT}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start(directory: Path, cert: Path, key: Path, timeout: float = 60.0) -> Azurite:
    """Start azurite-blob on a free port of 127.0.0.1 with the given certificate; wait until it listens."""
    binary = ensure_installed()
    log = directory / "azurite.log"
    out = open(log, "w")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--extentMemoryLimit",
            "512",
            "--oauth",
            "basic",
            "--cert",
            str(cert),
            "--key",
            str(key),
            # azure-storage-blob sends a newer x-ms-version than Azurite 3 knows; the calls we make are old ones.
            "--skipApiVersionCheck",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=directory,
    )
    out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text())
        if found:
            return Azurite(process, found[1], log)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    azurite = Azurite(process, "", log)
    azurite.stop()
    raise AzuriteUnavailable(f"azurite-blob did not start within {timeout:.0f} s: {log.read_text()[-2000:]}")
