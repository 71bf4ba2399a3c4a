"""The provider contract suite: the tests every provider passes against its engine or emulator.

A provider's test module subclasses :class:`ProviderContract` (under a ``Test...`` name, so pytest collects
it) and fills in three fixtures; pytest then runs every contract test on that provider::

    class TestContract(ProviderContract):
        @pytest.fixture(scope="class")
        @classmethod
        def contract_target(cls) -> Target:
            return config.parse_target("contract", {"provider": "myprovider", ...}, "contract")

        @pytest.fixture(scope="class")
        @classmethod
        def contract_objects(cls) -> Callable[[Run], set[str]]:
            return lambda run: {...}  # the engine's objects that belong to ``run``, by name

        @pytest.fixture
        def contract_intercept(self) -> Callable[[Callable[[], None]], ContextManager[None]]:
            ...  # a context manager calling its argument right before each create call reaches the engine

Optional: ``contract_run`` (how a run is made from its state directory, e.g. one whose endpoint maps a cloud
emulator's addresses to a stand-in), ``contract_child`` (config text and environment for a child pytest:
SIGKILL then ``sweep``) and ``contract_skips`` (test name -> why it cannot apply to the platform).
Every test ends by checking that the run left nothing: no engine object, no ledger entry.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .. import marks
from ..config import Config, Target
from ..context import UserData
from ..errors import CommandTimeout, Unsupported
from ..harness import Harness
from ..instance import Instance, launch
from ..interrupts import interrupt
from ..providers import get as get_provider
from ..run import Keep, Run

Objects = Callable[[Run], set[str]]
"""The engine's objects (containers, domains, instances, volumes...) that belong to a run, by name."""
Intercept = Callable[[Callable[[], None]], AbstractContextManager[None]]
"""A context manager factory: while active, calls its argument right before each create call of the engine."""

STEPS = ["running", "reachable", "login", "ready"]
OUTPUTS = {
    "empty": ("true", b"", b"", 0),
    "no-newline": ("printf abc", b"abc", b"", 0),
    "stderr-only": ("printf err >&2", b"", b"err", 0),
    "both-streams": ("printf out; printf err >&2; exit 3", b"out", b"err", 3),
    "status-255": ("exit 255", b"", b"", 255),
    "binary": ("printf '\\000\\001\\377\\n\\r'", b"\x00\x01\xff\n\r", b"", 0),
    "marker-like": (
        "printf '\\n%s 0\\n' deadbeef; printf '\\n%s\\n' deadbeef >&2",
        b"\ndeadbeef 0\n",
        b"\ndeadbeef\n",
        0,
    ),
    "quotes": ("""printf '%s' "it's \\"quoted\\" \\$HOME" """, b'it\'s "quoted" $HOME', b"", 0),
    "unbalanced-paren": ("echo ')'", b")\n", b"", 0),
    "syntax-error-then-ok": ("if then", None, None, 2),
}


class ProviderContract:
    """Base class of a provider's contract tests; subclasses provide the fixtures named in the module docstring."""

    contract_skips: ClassVar[dict[str, str]] = {}
    """Contract test name -> why it cannot apply to this platform (e.g. a container does not reboot)."""

    @pytest.fixture(autouse=True)
    def _sigint_raises(self) -> Iterator[None]:
        """Ctrl-C raises KeyboardInterrupt here even if pytest was started with SIGINT ignored (a background job
        of a non-interactive shell, nohup): the signal cases send it to this process."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @pytest.fixture(autouse=True)
    def _contract_skip(self, request: pytest.FixtureRequest) -> None:
        why = self.contract_skips.get(request.function.__name__)
        if why:
            pytest.skip(why)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls) -> Target:
        raise NotImplementedError("a provider's contract test must define the contract_target fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls) -> Objects:
        raise NotImplementedError("a provider's contract test must define the contract_objects fixture")

    @pytest.fixture
    def contract_intercept(self) -> Intercept:
        raise NotImplementedError("a provider's contract test must define the contract_intercept fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_run(cls) -> Callable[[Path], Run]:
        """A new run whose state lives in the given directory."""
        return lambda state: Run(state=state)

    @pytest.fixture
    def contract_child(self) -> tuple[str, dict[str, str]] | None:
        """(cernvm.toml text declaring target ``contract``, extra environment) for a child pytest, or None."""
        return None

    @pytest.fixture
    def run(self, tmp_path: Path, contract_run: Callable[[Path], Run], contract_objects: Objects) -> Iterator[Run]:
        """A run of its own per test, checked for leftovers at the end."""
        run = contract_run(tmp_path / "state")
        yield run
        end_of_run(run)
        assert_nothing_left(run, contract_objects)

    @pytest.fixture(scope="class")
    @classmethod
    def instance(
        cls,
        tmp_path_factory: pytest.TempPathFactory,
        contract_target: Target,
        contract_run: Callable[[Path], Run],
        contract_objects: Objects,
    ) -> Iterator[Instance]:
        """One instance shared by the read-only tests of the class, its fields marked with a key of the class's own
        (per-test state directories come and go around it)."""
        run = contract_run(tmp_path_factory.mktemp("state"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(marks.KEY_ENV, f"contract {run.id}")
            instance = launch(contract_target, run)
            try:
                yield instance
            finally:
                instance.destroy()
                end_of_run(run)
                assert_nothing_left(run, contract_objects)

    def test_readiness_steps_in_order(
        self, run: Run, contract_target: Target, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="cernvm_fixtures.instance"):
            instance = launch(contract_target, run)
        try:
            said = [r.getMessage() for r in caplog.records if r.name == "cernvm_fixtures.instance"]
            seen = [m.split()[1] for m in said if m.startswith(f"{instance.name}: ") and " after " in m]
            assert seen == STEPS, f"readiness steps logged {seen}, expected {STEPS}"
        finally:
            instance.destroy()

    @pytest.mark.parametrize("case", list(OUTPUTS))
    def test_output_is_framed_exactly(self, instance: Instance, case: str) -> None:
        command, stdout, stderr, status = OUTPUTS[case]
        result = instance.run(command, timeout=30)
        assert result.exit_status == status, f"{command!r}: exit {result.exit_status}, expected {status}"
        if stdout is not None:
            assert (result.stdout_bytes, result.stderr_bytes) == (stdout, stderr), command
        assert instance.run("echo next", timeout=30).stdout == "next\n", "the next command sees a clean session"

    def test_large_output(self, instance: Instance) -> None:
        size = 8 * 1024 * 1024
        result = instance.run(f"head -c {size} /dev/zero | tr '\\000' x; echo done >&2", timeout=120)
        assert len(result.stdout_bytes) == size and set(result.stdout_bytes) == {ord("x")}, len(result.stdout_bytes)
        assert result.stderr == "done\n"

    def test_timeout_kills_the_tree(self, instance: Instance) -> None:
        marker = f"/tmp/cvmfx-contract-{os.getpid()}-{time.monotonic_ns()}"
        with pytest.raises(CommandTimeout):
            instance.run(f"sleep 600 & echo $! > {marker}; sleep 600; wait", timeout=2)
        pid = instance.run(f"cat {marker}", timeout=30).check().stdout.strip()
        assert pid.isdigit(), pid
        deadline = time.monotonic() + 10
        alive = f"[ -r /proc/{pid}/stat ] && [ \"$(cut -d' ' -f3 /proc/{pid}/stat)\" != Z ]"  # a zombie is dead
        while instance.run(alive, timeout=30).succeeded:
            assert time.monotonic() < deadline, f"background process {pid} of the timed-out command still runs"
            time.sleep(0.2)
        instance.run(f"rm -f {marker}", timeout=30)

    def test_thread_pool(self, instance: Instance) -> None:
        problems: list[str] = []

        def work(n: int) -> None:
            for i in range(10):
                out = instance.run(f"echo {n}-{i}", timeout=60).stdout
                if out != f"{n}-{i}\n":
                    problems.append(f"thread {n} command {i} got {out!r}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert problems == []

    def test_reboot_gives_a_new_boot_id(self, run: Run, contract_target: Target) -> None:
        instance = launch(contract_target, run)
        try:
            before = instance.transport.boot_id
            instance.reboot()
            assert instance.transport.boot_id not in (None, before)
            assert instance.run("echo up", timeout=30).stdout == "up\n"
        finally:
            instance.destroy()

    @pytest.mark.parametrize(
        "keep,failed,kept",
        [("on-failure", True, True), ("on-failure", False, False)],
        ids=["on-failure-failed", "on-failure-passed"],
    )
    def test_keep_policy(
        self, run: Run, contract_target: Target, contract_objects: Objects, keep: str, failed: bool, kept: bool
    ) -> None:
        run.keep = Keep(keep)
        harness = self._harness(run, contract_target)
        instance = harness.fresh(contract_target, UserData())
        instance.failed = failed
        harness.finish(instance)
        entries = run.ledger.entries()
        try:
            if kept:
                assert entries and all(r.kept for r in entries), f"keep={keep}: ledger {entries}"
                assert contract_objects(run), f"keep={keep}: the kept instance is gone from the engine"
                assert [k["name"] for k in harness.keeping.kept] == [instance.name]
            else:
                assert entries == [], f"keep={keep}: ledger still holds {entries}"
                assert contract_objects(run) == set()
        finally:
            instance.machine.destroy()

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
    def test_signal_during_boot_destroys_everything(self, run: Run, contract_target: Target, signum: int) -> None:
        harness = self._harness(run, contract_target)
        stop = _signal_when(lambda: bool(run.ledger.entries()), signum)
        try:
            with pytest.raises(KeyboardInterrupt):
                harness.fresh(contract_target, UserData())
                time.sleep(30)  # ready before the signal came: it must still arrive
        finally:
            stop()
            _restore(harness)

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
    def test_signal_during_teardown_is_deferred_until_it_is_done(
        self, run: Run, contract_target: Target, contract_objects: Objects, signum: int
    ) -> None:
        harness = self._harness(run, contract_target)
        instance = harness.fresh(contract_target, UserData())
        machine = instance.machine
        destroy = machine.destroy
        go, sent = threading.Event(), threading.Event()

        def send() -> None:
            go.wait(60)
            os.kill(os.getpid(), signum)
            sent.set()

        threading.Thread(target=send, daemon=True).start()  # alive before the teardown, like xdist's execnet thread

        def destroy_under_signal() -> None:
            go.set()
            sent.wait(5)
            time.sleep(0.2)  # the handler has run (in the main thread, at the next bytecode)
            destroy()

        machine.destroy = destroy_under_signal  # type: ignore[method-assign]
        try:
            with pytest.raises(KeyboardInterrupt):
                harness.finish(instance)
            assert run.ledger.entries() == [], "the signal cut the teardown short"
            assert contract_objects(run) == set()
        finally:
            _restore(harness)
            destroy()

    def test_ledger_entry_precedes_every_create(
        self, run: Run, contract_target: Target, contract_intercept: Intercept
    ) -> None:
        counts: list[int] = []
        with contract_intercept(lambda: counts.append(len(run.ledger.entries()))), _stop_after_create(contract_target):
            with pytest.raises(_Created):
                launch(contract_target, run)  # the launch destroys what it created when _Created unwinds it
        assert counts, "the interceptor saw no create call"
        assert all(n >= i + 1 for i, n in enumerate(counts)), f"ledger entries at each create: {counts}"

    @pytest.mark.parametrize("nth", [1, 2], ids=["first-create", "second-create"])
    def test_error_halfway_through_create_leaves_nothing(
        self, run: Run, contract_target: Target, contract_intercept: Intercept, nth: int
    ) -> None:
        calls: list[int] = []

        def fail() -> None:
            calls.append(1)
            if len(calls) == nth:
                raise RuntimeError(f"injected failure of create call {nth}")

        with contract_intercept(fail), _stop_after_create(contract_target):
            try:
                launch(contract_target, run)
            except RuntimeError as e:
                assert f"create call {nth}" in str(e)
                return
            except _Created:
                pytest.skip(f"the provider makes {len(calls)} create call(s), fewer than {nth}")

    def test_reused_name_destroys_nothing_of_the_other(
        self, run: Run, contract_target: Target, instance: Instance, contract_objects: Objects
    ) -> None:
        """A second machine given the name of a running one (a forged or colliding name): whether the platform
        refuses it or not, destroying it must leave the running one and everything it owns alone."""
        before = contract_objects(instance.machine.provider.run)
        run.name = lambda target: instance.name  # type: ignore[method-assign]
        try:
            launch(contract_target, run).destroy()
        except Exception as e:  # noqa: BLE001 - refusing the name is fine; what matters is what is left
            logging.getLogger(__name__).info("a reused name was refused: %s", e)
        assert contract_objects(instance.machine.provider.run) == before, "the other machine's objects changed"
        assert instance.run("echo alive", timeout=60).stdout == "alive\n", "the other machine stopped answering"
        try:
            running = instance.is_running()
        except Unsupported:
            running = True  # the platform cannot tell; the command above answered
        assert running, "the platform no longer runs the other machine (its destroy reached it)"

    def test_fields_without_our_mark_are_not_swept(
        self, instance: Instance, contract_target: Target, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The platform holds the instance's ledger fields (tags, labels, metadata) for a sweep without the ledger:
        with this key they name the machine; to a sweep with another key (a forger, who may write tags but not the
        mark, or another state directory) they name nothing, so nothing of it would be deleted."""
        provider = get_provider(contract_target.provider)
        ours = {r.name for r in provider.leftovers(contract_target, set())}
        assert instance.name in ours, f"a sweep with the key does not find {instance.name} on the platform"
        monkeypatch.setenv(marks.KEY_ENV, "a key that wrote none of these fields")
        theirs = {r.name for r in provider.leftovers(contract_target, set())}
        assert instance.name not in theirs, f"fields without this key's mark were taken as {instance.name}'s"

    def test_sigkill_then_sweep(
        self, tmp_path: Path, contract_child: tuple[str, dict[str, str]] | None, contract_objects: Objects
    ) -> None:
        if contract_child is None:
            pytest.skip("the provider's contract test gives no contract_child (config for a child pytest)")
        text, extra = contract_child
        work = tmp_path / "work"
        work.mkdir()
        (work / "cernvm.toml").write_text(text)
        (work / "test_it.py").write_text(
            "import time\n\ndef test_wait(cernvm):\n    print('READY', flush=True)\n    time.sleep(600)\n"
        )
        state = tmp_path / "state"
        env = {**os.environ, **extra, "CERNVM_FIXTURES_STATE": str(state)}
        env.pop("PYTEST_ADDOPTS", None)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-s",
                "--allow-hosts=127.0.0.1,::1",
                "--allow-unix-socket",
                "test_it.py",
            ],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_default_sigint,
        )
        assert child.stdout is not None
        for line in child.stdout:
            if "READY" in line:
                break
        child.kill()
        child.wait(30)
        child.stdout.close()
        runs = [Run(p.name, state=state) for p in (state / "runs").iterdir()]
        assert [r.ledger.entries() for r in runs if r.ledger.entries()], "the killed run recorded nothing"
        sweep = subprocess.run(
            [sys.executable, "-m", "cernvm_fixtures.cli", "sweep"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert sweep.returncode == 0, sweep.stdout + sweep.stderr
        for left in runs:
            assert_nothing_left(left, contract_objects)

    @staticmethod
    def _harness(run: Run, target: Target) -> Harness:
        return Harness(
            run=run, config=Config({target.name: target}), targets={target.name: target}, selected=[target.name]
        )


class _Created(Exception):
    """Raised once the provider's launch returned: these cases are about creating, not booting."""


@contextmanager
def _stop_after_create(target: Target) -> Iterator[None]:
    """Make the provider's ``launch`` raise :class:`_Created` after it returns, so ``instance.launch`` destroys the
    machine at once instead of waiting for it to boot."""
    cls = get_provider(target.provider)
    original = cls.launch

    def launch_then_stop(self: Any, machine: Any, context: Any) -> None:
        original(self, machine, context)
        raise _Created(machine.name)

    cls.launch = launch_then_stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.launch = original  # type: ignore[method-assign]


def end_of_run(run: Run) -> None:
    """What the plugin does when a run ends: reap what the run still holds (e.g. an image its machines shared)."""
    for resource in reversed(run.ledger.entries()):
        if not resource.kept:
            get_provider(resource.provider).destroy_resource(resource)
            run.ledger.forget(resource)


def assert_nothing_left(run: Run, objects: Objects) -> None:
    """No engine object and no ledger entry of ``run`` remains."""
    left = objects(run)
    assert left == set(), f"run {run.id} left engine objects: {sorted(left)}"
    entries = run.ledger.entries()
    assert entries == [], f"run {run.id} left ledger entries: {[(r.kind, r.name) for r in entries]}"


def _default_sigint() -> None:
    """In a child: SIGINT at its default disposition, even if this process was started with it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_when(condition: Callable[[], bool], signum: int) -> Callable[[], None]:
    """Send ``signum`` to this process from a thread once ``condition`` holds; returns a function to stop waiting."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if condition():
                os.kill(os.getpid(), signum)
                return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return done.set


def _restore(harness: Harness) -> None:
    harness.signals.restore()


__all__ = ["Intercept", "Objects", "ProviderContract", "assert_nothing_left"]
