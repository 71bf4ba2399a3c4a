"""The keep policy: at the end of an instance, leave it running (``--cernvm-keep``) or destroy it, and remember
what was kept, for the summary and for ``cernvm-fixtures down``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..instance import Instance
from ..interrupts import signals_deferred
from ..run import Keep, Run


@dataclass
class KeepPolicy:
    """Applies the run's keep policy (``run.keep``) to each instance the run is done with."""

    run: Run
    kept: list[dict[str, str]] = field(default_factory=list)
    """What this process kept: name, target and the login command of each instance."""
    workers_kept: list[list[dict[str, str]]] = field(default_factory=list)
    """xdist controller: what each worker kept (sent back when the worker ends)."""

    def finish(self, instance: Instance) -> None:
        """Keep or destroy an instance according to the keep policy (a signal waits until it is destroyed)."""
        keep = self.run.keep is Keep.ALWAYS or (self.run.keep is Keep.ON_FAILURE and instance.failed)
        if keep:
            instance.machine.keep()
            if "transport" in instance.__dict__:  # the machine stays; this process's connection to it does not
                instance.transport.close()
            self.kept.append({"name": instance.name, "target": instance.target.name, "login": instance.login_command})
            return
        with signals_deferred():
            instance.destroy()

    def everything_kept(self) -> list[dict[str, str]]:
        """What this process and its workers kept, in that order."""
        return self.kept + [entry for worker in self.workers_kept for entry in worker]
