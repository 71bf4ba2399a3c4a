"""A run: one invocation of the harness, with its id, directory, ledger, key pair and keep policy."""

from __future__ import annotations

import enum
import secrets
import shutil
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .dirs import state_dir, write_once
from .ledger import Ledger


class Keep(enum.StrEnum):
    """When to leave an instance running after the run: never, when its tests failed, always."""

    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


Endpoint = Callable[[Any, str, int], "tuple[str, int] | None"]
"""Maps a machine (a ``providers.base.Machine``, passed through untouched: the run sits below the providers) and
the SSH address its platform gave to the address to use (None: keep it)."""


class Run:
    """Everything one harness invocation owns; xdist workers share the controller's run id."""

    def __init__(
        self,
        run_id: str | None = None,
        *,
        state: Path | None = None,
        keep: Keep = Keep.NEVER,
        endpoint: Endpoint | None = None,
        screens: Path | None = None,
    ) -> None:
        self.id = run_id or secrets.token_hex(4)
        self.directory = (state or state_dir()) / "runs" / self.id
        self.screens = (screens or (state or state_dir()) / "screens") / self.id
        """Where screenshots of failing instances go, by machine: outside the run directory, which goes at the end
        of the run while the reports pointing at the screenshots stay."""
        self.ledger = Ledger(self.directory / "ledger")
        self.keep = keep
        self._endpoint = endpoint

    def endpoint(self, machine: Any, host: str, port: int) -> tuple[str, int]:
        """Where to reach ``machine``'s SSH server: the platform's address unless a resolver redirects it."""
        if self._endpoint is not None:
            redirected = self._endpoint(machine, host, port)
            if redirected is not None:
                return redirected
        return host, port

    def __repr__(self) -> str:
        return f"Run({self.id})"

    def name(self, target: str) -> str:
        """A unique, greppable instance name: prefix, run id, target, 64 random bits (at most 56 characters:
        within GCE's 63 and every other platform's limit for instance names and labels)."""
        return f"cvmfx-{self.id}-{target}-{secrets.token_hex(8)}"

    @cached_property
    def key_file(self) -> Path:
        """The run's ephemeral SSH private key (0600, created once, first writer wins; never printed)."""
        path = self.directory / "id_ed25519"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            private = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
            write_once(path, private)
        return path

    @cached_property
    def public_key(self) -> str:
        """The public half, derived from the private key file so the two can never disagree."""
        key = serialization.load_ssh_private_key(self.key_file.read_bytes(), password=None)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return f"{public.decode()} cernvm-fixtures-{self.id}"

    def machine_dir(self, name: str) -> Path:
        """Where one instance's files go (disks, seed, console log, shared folders); not created here."""
        return self.directory / "machines" / name

    def finish(self) -> None:
        """Remove the run directory once nothing recorded in it is left (kept instances keep it)."""
        if self.directory.exists() and not self.ledger.entries():
            shutil.rmtree(self.directory, ignore_errors=True)
