"""The run inside a pytest process, as the plugin (``plugin.py``) holds it: the targets the options selected, and
the parts that do the work, each in a module of its own:

- :mod:`.options`: the pytest options and ini keys, read and checked once;
- :mod:`.instances`: the shared instances (the instance cache) and which tests used them;
- :mod:`.boot_pool`: instances launched in parallel ahead of the tests needing them;
- :mod:`.keep`: the keep policy at the end of each instance, and what was kept;
- :mod:`.signals`: the run's SIGTERM/SIGINT handlers (the machinery itself is :mod:`cernvm_fixtures.interrupts`).

Reaping what the run still holds at its end is :func:`cernvm_fixtures.sweep.reap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from .. import config as configuration
from ..context import UserData
from ..instance import Instance, launch
from ..run import Run
from ..sweep import reap
from . import options
from .boot_pool import BootPool
from .instances import InstanceCache
from .keep import KeepPolicy
from .signals import SignalHandlers

__all__ = ["Harness"]


@dataclass
class Harness:
    """Per-process state: the run, the selected targets, and the parts launching and finishing their instances."""

    run: Run
    config: configuration.Config
    targets: dict[str, configuration.Target]
    selected: list[str]
    is_worker: bool = False
    refused: dict[str, str] = field(default_factory=dict)
    """Targets that cannot take a command-line value given for every target, and why (see :meth:`check_used`)."""
    signals: SignalHandlers = field(init=False)
    keeping: KeepPolicy = field(init=False)
    boots: BootPool = field(init=False)
    instances: InstanceCache = field(init=False)

    def __post_init__(self) -> None:
        self.signals = SignalHandlers(self.run.ledger)
        self.keeping = KeepPolicy(self.run)
        self.boots = BootPool(self.run)
        self.instances = InstanceCache(self.fresh, self.boots, self.keeping.finish)

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> Harness:
        """The harness of this pytest process (an xdist worker joins its controller's run)."""
        selection = options.read(config)
        workerinput = getattr(config, "workerinput", None)
        run = Run(
            workerinput["cernvm_run"] if workerinput else None,
            keep=selection.keep,
            screens=selection.screens,
            endpoint=lambda machine, host, port: config.hook.pytest_cernvm_endpoint(
                machine=machine, host=host, port=port
            ),
        )
        return cls(
            run=run,
            config=selection.config,
            targets=selection.targets,
            selected=selection.selected,
            is_worker=workerinput is not None,
            refused=selection.refused,
        )

    def check_used(self, used: set[str]) -> None:
        """Stop (UsageError, one message naming each option) if a test of a target that refused a value given for
        every target is still selected once ``-k``/``-m`` have deselected theirs."""
        problems = [self.refused[name] for name in self.selected if name in used and name in self.refused]
        if problems:
            raise pytest.UsageError("\n".join(problems))

    def fresh(self, target: configuration.Target, user_data: UserData) -> Instance:
        """A new instance of the target (the caller finishes it); from now on SIGTERM unwinds like Ctrl-C."""
        self.signals.install()
        return launch(target, self.run, user_data=user_data)

    def finish(self, instance: Instance) -> None:
        """Keep or destroy an instance according to the keep policy."""
        self.keeping.finish(instance)

    def boot_ahead(self, wanted: list[tuple[configuration.Target, UserData]]) -> None:
        """Launch the shared instances the collected tests will use, concurrently (at most each provider's
        ``parallel_boots`` at a time), so that each test waits only for its own instance."""
        if not wanted or self.boots.called_off:
            return
        self.signals.install()
        self.boots.start([(t, u) for t, u in wanted if (t.name, u.key) not in self.instances.shared])

    def release_all(self) -> None:
        """Finish every instance of this process: those booted ahead for no test, then the shared ones."""
        self.boots.stop(self.keeping.finish)
        self.instances.release_all()

    def end(self) -> None:
        """The end of the run in this process: finish its instances; the controller (or a lone process) also reaps
        what the run still holds and removes its directory; then the previous signal handlers come back."""
        self.release_all()
        if not self.is_worker:
            reap(self.run, reason="left at the end of the run")
            self.run.finish()
        self.signals.restore()
