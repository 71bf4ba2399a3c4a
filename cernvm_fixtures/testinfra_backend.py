"""A testinfra backend over an instance's own transport, so testinfra modules use the same channel.

It knows an instance only as :class:`Runs` (the instance module imports this one, never the other way round).
"""

from __future__ import annotations

from typing import Any, Protocol

import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from .transport.base import TIMEOUT, Default, Result


class Runs(Protocol):
    """What the backend needs of an instance (``Instance`` is one): its name and its ``run``."""

    @property
    def name(self) -> str: ...
    def run(self, command: str, *, timeout: float | Default | None = ..., stdin: bytes | str | None = ...) -> Result:
        """Run ``command`` as ``sh -c`` would (the target's command_timeout unless ``timeout`` is given)."""
        ...


class InstanceBackend(BaseBackend):
    """testinfra's backend contract (``run`` returning a CommandResult) on top of ``Instance.run``."""

    NAME = "cernvm"

    def __init__(self, instance: Runs, *args: Any, **kwargs: Any) -> None:
        self.instance = instance
        super().__init__(instance.name, *args, **kwargs)

    def get_encoding(self) -> str:
        return "utf-8"

    def run(
        self, command: str, *args: str, timeout: float | Default | None = TIMEOUT, stdin: bytes | str | None = None
    ) -> CommandResult:
        """``host.run(cmd, *args, timeout=..., stdin=...)``: the target's command_timeout unless given."""
        command = self.get_command(command, *args)
        result = self.instance.run(command, timeout=timeout, stdin=stdin)
        return self.result(result.exit_status, self.encode(command), result.stdout_bytes, result.stderr_bytes)


def host_for(instance: Runs) -> testinfra.host.Host:
    """A testinfra Host for ``instance`` (``host.file(...)``, ``host.mount_point(...)``, ...)."""
    backend = InstanceBackend(instance)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
