"""The provider contract every platform implements (pycloudlib-style: one small, shared shape).

A provider creates machines for a target. Everything it creates is recorded in
the run's ledger *before* the create call, so it can be destroyed later from the
ledger alone, by this process, the plugin's end-of-run check, or ``sweep``.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import ProviderError
from ..ledger import Resource

if TYPE_CHECKING:
    from ..config import Target
    from ..context import Context
    from ..doctor import Check
    from ..run import Run
    from ..transport.base import Transport

log = logging.getLogger(__name__)

KEYS_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----\r?\n(.*?)-----END SSH HOST KEY KEYS-----", re.S)
"""The block of host public keys cloud-init (and the test appliance) print on the console."""
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|c)")


def console_text(text: str) -> str:
    """Console output as plain text: terminal escape sequences dropped, CRLF as LF."""
    return ANSI.sub("", text).replace("\r\n", "\n")


class ProviderOptions(BaseModel):
    """Provider-specific target keys; subclasses add fields, unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class Provider(ABC):
    """Knows one platform: launches machines for a target and destroys what it recorded."""

    name: ClassVar[str]
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    shares_folders: ClassVar[bool] = False
    """Whether the provider can hand host folders to instances (target key ``shared_folders``)."""

    def __init__(self, target: Target, run: Run) -> None:
        self.target = target
        self.run = run
        self.options: Any = target.options

    @abstractmethod
    def machine(self, name: str) -> Machine:
        """A machine object for ``name``, with nothing created yet (so a failed launch can still be cleaned up)."""

    @abstractmethod
    def launch(self, machine: Machine, context: Context) -> None:
        """Record, then create the machine booted with this context; returns once it was started."""

    @classmethod
    @abstractmethod
    def destroy_resource(cls, resource: Resource) -> None:
        """Destroy one recorded resource from its ledger data alone; a resource already gone is fine."""

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources found on the target's platform by name or tag whose names are not in ``recorded``."""
        return []

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """This host's prerequisites for ``target`` (``cernvm-fixtures doctor``); cheap, and never changes the host."""
        return []

    def record(self, machine: Machine, kind: str, name: str, **data: Any) -> Resource:
        """Write a ledger entry for something about to be created and attach it to the machine."""
        resource = Resource(provider=self.name, kind=kind, name=name, run=self.run.id, target=self.target.name, data=data)
        self.run.ledger.record(resource)
        machine.resources.append(resource)
        return resource


class Machine(ABC):
    """One created machine or container, as its provider sees it."""

    slowdown: float = 1.0
    """Factor applied to readiness deadlines (e.g. software emulation is several times slower)."""

    def __init__(self, provider: Provider, name: str) -> None:
        self.provider = provider
        self.name = name
        self.resources: list[Resource] = []
        self.traits: dict[str, str] = {"provider": provider.name, "target": provider.target.name}
        self.shared_folders: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @abstractmethod
    def wait_running(self, deadline: float) -> None:
        """Block until the platform reports the machine running; raise ProviderError on failure."""

    @abstractmethod
    def transport(self) -> Transport:
        """The transport that reaches this machine (not yet connected)."""

    @abstractmethod
    def login_command(self) -> str:
        """What a person types to get a shell on the machine."""

    def console_log(self) -> str:
        """The serial console (or closest equivalent) so far; empty if the platform has none."""
        return ""

    def host_keys(self) -> list[str] | None:
        """The host keys from the last ``SSH HOST KEY KEYS`` block on the console, None if none was printed."""
        blocks = KEYS_BLOCK.findall(self.console_log())
        if not blocks:
            return None
        return [line.strip() for line in blocks[-1].splitlines() if line.strip()]

    def make_shared_folders(self, directory: Path) -> None:
        """Host side of the target's shared folders: its directories, or fresh ones under ``directory``."""
        for folder, path in self.provider.target.shared_folders.items():
            host = Path(path).expanduser().resolve() if path else directory / "shared" / folder
            host.mkdir(parents=True, exist_ok=True)
            self.shared_folders[folder] = host

    def destroy(self) -> None:
        """Destroy every recorded resource, newest first; idempotent, and keeps going past errors."""
        errors = []
        for resource in reversed(list(self.resources)):
            try:
                type(self.provider).destroy_resource(resource)
            except Exception as e:  # noqa: BLE001 - finish the others, report all at the end
                errors.append(f"{resource.kind} {resource.name}: {e}")
                continue
            self.provider.run.ledger.forget(resource)
            self.resources.remove(resource)
        if errors:
            raise ProviderError(f"{self.name}: could not destroy: " + "; ".join(errors))

    def keep(self) -> None:
        """Mark everything this machine owns as intentionally kept (sweep leaves it alone until it expires)."""
        login = self.login_command()
        for resource in self.resources:
            resource.kept = True
            resource.data["login"] = login
            resource.expires = time.time() + 24 * 3600
            self.provider.run.ledger.update(resource)
