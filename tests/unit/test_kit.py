"""The provider kit without any engine: the field codec within every platform's limits, waits, caches, paths."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cernvm_fixtures.errors import PermanentError, ProviderError
from cernvm_fixtures.ledger import Owner, Resource
from cernvm_fixtures.providers import kit
from cernvm_fixtures.providers.base import Machine, Provider, teardown_rank

GCE_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
GCE_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
AZURE_FORBIDDEN = set("<>%&\\?/")

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
"""Run ids, machine names, kinds and targets are plain names; instance names are at most 56 characters."""
hosts = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64)
"""Any printable ASCII hostname up to Linux's HOST_NAME_MAX."""
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@st.composite
def resources(draw) -> Resource:
    created = draw(times)
    return Resource(
        provider=draw(st.sampled_from(["kvm", "docker", "ec2", "gce"])),
        kind=draw(names),
        name=draw(names),
        run=draw(names),
        target=draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=24)),
        owner=Owner(draw(hosts), draw(st.integers(0, 2**22)), draw(st.none() | st.text("0123456789", max_size=20))),
        created=created,
        expires=created + draw(st.floats(min_value=1, max_value=1e6)),
        kept=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(resources())
def test_decode_of_encode_round_trips_what_sweep_needs(resource):
    fields = kit.encode_fields(resource)
    back = kit.decode_fields(fields)
    assert back is not None
    for name in ("provider", "kind", "name", "run", "target", "owner", "kept"):
        assert getattr(back, name) == getattr(resource, name), name
    assert abs(back.created - resource.created) <= 1e-6 and abs(back.expires - resource.expires) <= 1e-6


@settings(max_examples=300, deadline=None)
@given(resources(), st.text(max_size=60))
def test_fields_are_within_the_strictest_platform_limits(resource, extra):
    fields = kit.encode_fields(resource, state=extra)
    assert len(fields) <= kit.FIELD_BUDGET <= 50 - 1, "EC2 and Azure: 50 tags per resource, Name is one"
    for key, value in fields.items():
        assert GCE_KEY.match(key), f"GCE label key {key!r}"
        assert GCE_VALUE.match(value), f"GCE label value {value!r}"
        assert not AZURE_FORBIDDEN & set(key), f"Azure tag name {key!r}"
        assert len(f"{key}={value}") <= 255, "OpenStack server tag"
        assert len(key) <= 128 and len(value) <= 256, "EC2 tag"
    assert kit.field(fields, "state") == extra


def test_the_budget_is_enforced_with_a_message():
    resource = Resource(provider="kvm", kind="domain", name="n", run="r")
    with pytest.raises(ProviderError, match="at most 20"):
        kit.encode_fields(resource, blob="/" * 400)


@given(st.text())
def test_escape_round_trips_and_uses_label_characters(text):
    escaped = kit.escape(text)
    assert set(escaped) <= kit.SAFE | set("_abcdef0123456789")
    assert kit.unescape(escaped) == text


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"Name": "someone-elses"},
        {"cvmfx-provider": "kvm", "cvmfx-name": "x"},
        {**kit.encode_fields(Resource(provider="kvm", kind="d", name="n", run="r")), "cvmfx-owner-pid": "??"},
        {**kit.encode_fields(Resource(provider="kvm", kind="d", name="n", run="r")), "cvmfx-name": "_zz"},
    ],
)
def test_fields_that_are_not_a_whole_entry_are_not_ours(fields):
    assert kit.decode_fields(fields) is None


# --- wait_until -----------------------------------------------------------------------------------


def test_wait_until_returns_the_first_value():
    answers = iter([None, None, "up"])
    assert kit.wait_until("boot", lambda: next(answers), time.monotonic() + 5, 0) == "up"


def test_wait_until_names_the_step_and_what_it_saw_at_the_deadline():
    start = time.monotonic()
    with pytest.raises(ProviderError, match=r"^domain running: not done by the deadline \(state 3\)$"):
        kit.wait_until("domain running", lambda: None, start + 0.2, 0.05, status=lambda: "state 3")
    assert time.monotonic() - start < 1


def test_a_permanent_error_ends_the_wait_at_once():
    calls = []

    def check():
        calls.append(1)
        raise PermanentError("terminated")

    with pytest.raises(PermanentError, match="terminated"):
        kit.wait_until("running", check, time.monotonic() + 60, 0.01)
    assert len(calls) == 1


# --- client cache ---------------------------------------------------------------------------------


def test_client_cache_makes_one_per_key_and_replaces_dead_ones():
    made, closed = [], []

    class Client:
        def __init__(self, key):
            self.key, self.alive = key, True
            made.append(key)

    cache = kit.ClientCache(Client, alive=lambda c: c.alive, close=closed.append)
    a = cache.get("a")
    assert cache.get("a") is a and made == ["a"]
    a.alive = False
    assert cache.get("a") is not a and made == ["a", "a"]
    cache.get("b")
    cache.clear()
    assert sorted(c.key for c in closed) == ["a", "b"]


def test_a_failed_connect_is_not_cached():
    attempts = []

    def make(key):
        attempts.append(key)
        raise ProviderError("daemon down")

    cache = kit.ClientCache(make)
    for _ in range(2):
        with pytest.raises(ProviderError):
            cache.get("x")
    assert attempts == ["x", "x"]


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run,name,ok",
    [
        ("ab12", "cvmfx-ab12-kvm-1", True),
        ("..", "x", False),
        ("r", "../../etc", False),
        ("r", "a/b", False),
        ("r", "", False),
        ("R", "x", False),
    ],
)
def test_only_plain_names_make_a_machine_directory(tmp_path, run, name, ok):
    found = kit.machine_directory(tmp_path, run, name)
    assert (found is not None) == ok
    if ok:
        assert found == tmp_path / "runs" / run / "machines" / name


def test_owned_directory_is_the_runs_own_machine_directory():
    assert kit.owned_directory("/s/runs/r1/machines/m1", "r1", "m1")
    assert not kit.owned_directory("/home/user", "r1", "m1")
    assert not kit.owned_directory("/s/runs/r1/machines/m2", "r1", "m1"), "another machine's directory"
    assert not kit.owned_directory(Path("/s/runs/r1/machines/m1/../../../../etc"), "r1", "m1")


# --- creation order -------------------------------------------------------------------------------


def test_machine_destroy_follows_the_declared_creation_order(tmp_path):
    from cernvm_fixtures.run import Run

    destroyed = []

    class Fake(Provider):
        name = "fake"
        creation_order = ("network", "disk", "vm")

        def machine(self, name):
            return FakeMachine(self, name)

        def launch(self, machine, context):
            raise NotImplementedError

        @classmethod
        def destroy_resource(cls, resource):
            destroyed.append(resource.kind)

    class FakeMachine(Machine):
        def wait_running(self, deadline):
            pass

        def transport(self):
            raise NotImplementedError

        def login_command(self):
            return ""

    class Target:
        name = "fake"
        options = None

    provider = Fake(Target(), Run("r", state=tmp_path))
    machine = provider.machine("m")
    for kind in ("vm", "network", "disk", "mystery"):
        provider.record(machine, kind, "m")
    machine.destroy()
    assert destroyed == ["mystery", "vm", "disk", "network"]
    assert provider.run.ledger.entries() == []
    order = ("a", "b")
    assert teardown_rank(order, Resource("p", "b", "n", "r")) > teardown_rank(order, Resource("p", "a", "n", "r"))


# --- names and machine directories ------------------------------------------------------------------


def test_names_carry_64_random_bits_within_platform_limits(tmp_path):
    from cernvm_fixtures.run import Run

    run = Run(state=tmp_path)
    name = run.name("a" * 24)
    suffix = name.rsplit("-", 1)[1]
    assert len(suffix) == 16 and int(suffix, 16) >= 0, "16 hex digits: 64 bits"
    assert len(name) <= 63 and GCE_VALUE.match(name), "a GCE instance name / label value"
    assert len({run.name("kvm") for _ in range(1000)}) == 1000


def test_a_colliding_machine_directory_is_neither_recorded_nor_deleted(tmp_path):
    from cernvm_fixtures.run import Run

    class Fake(Provider):
        name = "fake"

        def machine(self, name):
            return None

        def launch(self, machine, context):
            raise NotImplementedError

        @classmethod
        def destroy_resource(cls, resource):
            raise AssertionError("nothing of the sibling may be destroyed")

    class Target:
        name = "fake"
        options = None

    class Owner_:
        name = "cvmfx-r-fake-1"
        resources: list = []

    run = Run("r", state=tmp_path)
    sibling = run.machine_dir(Owner_.name)
    sibling.mkdir(parents=True)
    (sibling / "disk").write_text("the live sibling's")
    provider = Fake(Target(), run)
    with pytest.raises(ProviderError, match="exists already"):
        provider.record_directory(Owner_(), sibling)
    assert run.ledger.entries() == [] and Owner_.resources == []
    assert (sibling / "disk").read_text() == "the live sibling's"


# --- interruptible blocking calls ---------------------------------------------------------------------


def test_ctrl_c_is_taken_at_once_and_a_late_result_is_undone(sigint_raises):
    import threading

    undone = threading.Event()
    release = threading.Event()

    def blocking_create():
        release.wait(10)  # an engine call that ignores signals, like libvirt's createXML
        return "domain-1"

    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        kit.interruptible("create", blocking_create, undo=lambda value: value == "domain-1" and undone.set())
    assert time.monotonic() - start < 1.0, "the interrupt waited for the blocking call"
    assert not undone.is_set() and kit.calls_in_flight() == 1
    release.set()
    assert undone.wait(5), "what the call created after the interrupt is destroyed as soon as it returns"
    deadline = time.monotonic() + 5
    while kit.calls_in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kit.calls_in_flight() == 0


def test_interruptible_returns_and_raises_like_the_call():
    assert kit.interruptible("ok", lambda: 42) == 42
    with pytest.raises(ProviderError, match="engine says no"):
        kit.interruptible("fails", lambda: (_ for _ in ()).throw(ProviderError("engine says no")))


def test_a_signal_that_lands_in_a_finalizer_is_raised_at_the_next_checkpoint():
    """Python swallows an exception raised in ``__del__`` (libvirt frees domain objects there): a Ctrl-C arriving
    while one runs must not be lost."""
    from cernvm_fixtures.providers import kit

    class Freed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs at a bytecode boundary, here in the finalizer
                pass

    previous = signal.signal(signal.SIGINT, kit.interrupt)
    try:
        Freed()
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            kit.checkpoint()
        kit.checkpoint()  # raised once
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
