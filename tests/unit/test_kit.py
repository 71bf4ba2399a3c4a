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

from cernvm_fixtures import interrupts, marks
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


def test_fields_without_this_keys_mark_are_not_ours(tmp_path, monkeypatch):
    """Issue 26.2: anyone who may tag can write our fields, but not our mark: invented, altered or another key's
    fields decode to nothing; the key is the state directory's own (0600) or the shared one in the environment."""
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(tmp_path / "state"))
    monkeypatch.delenv(marks.KEY_ENV, raising=False)
    resource = Resource(provider="gce", kind="instance", name="cvmfx-ab12cd34-gce-beef", run="ab12cd34")
    fields = kit.encode_fields(resource)
    assert kit.decode_fields(fields) is not None
    assert oct((tmp_path / "state" / marks.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert kit.decode_fields({k: v for k, v in fields.items() if k != "cvmfx-mark"}) is None, "invented"
    assert kit.decode_fields({**fields, "cvmfx-name": "their-database"}) is None, "renamed"
    assert kit.decode_fields({**fields, "cvmfx-run": "00000000"}) is None, "moved to another run"
    assert kit.decode_fields({**fields, "cvmfx-kept": "true"}) is not None, "kept and expiry change: not covered"
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(tmp_path / "another"))
    assert kit.decode_fields(fields) is None, "another state directory's key"
    monkeypatch.setenv(marks.KEY_ENV, "from the CI's secret store")
    shared = kit.encode_fields(resource)
    monkeypatch.setenv("CERNVM_FIXTURES_STATE", str(tmp_path / "state"))
    assert kit.decode_fields(shared) is not None, "the shared key works from any state directory"


def test_an_object_is_ours_only_under_the_name_its_entry_gives_it(caplog):
    resource = Resource(provider="azure", kind="security-group", name="cvmfx-ab12cd34-azure-beef", run="ab12cd34")
    assert kit.named_as(resource, "cvmfx-ab12cd34-azure-beef-nsg", "cvmfx-ab12cd34-azure-beef-nsg")
    assert not kit.named_as(resource, "their-firewall", "cvmfx-ab12cd34-azure-beef-nsg")
    assert "their-firewall" in caplog.text and "left alone" in caplog.text


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


def fake_provider(tmp_path, machine_class, *, creation_order=(), options=None):
    """A provider of ``machine_class`` machines on a run in ``tmp_path``, and the kinds it destroyed, in order."""
    from cernvm_fixtures.run import Run

    destroyed: list[str] = []

    class Fake(Provider):
        name = "fake"

        def machine(self, name):
            return machine_class(self, name)

        def launch(self, machine, context):
            raise NotImplementedError

        @classmethod
        def destroy_resource(cls, resource):
            destroyed.append(resource.kind)

    Fake.creation_order = creation_order

    class Target:
        name = "fake"

    Target.options = options
    return Fake(Target(), Run("r", state=tmp_path)), destroyed


# --- creation order -------------------------------------------------------------------------------


def test_machine_destroy_follows_the_declared_creation_order(tmp_path):

    class FakeMachine(Machine):
        def wait_running(self, deadline):
            pass

        def transport(self):
            raise NotImplementedError

        def login_command(self):
            return ""

    provider, destroyed = fake_provider(tmp_path, FakeMachine, creation_order=("network", "disk", "vm"))
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
        interrupts.interruptible("create", blocking_create, undo=lambda value: value == "domain-1" and undone.set())
    assert time.monotonic() - start < 1.0, "the interrupt waited for the blocking call"
    assert not undone.is_set() and interrupts.calls_in_flight() == 1
    release.set()
    assert undone.wait(5), "what the call created after the interrupt is destroyed as soon as it returns"
    deadline = time.monotonic() + 5
    while interrupts.calls_in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert interrupts.calls_in_flight() == 0


def test_interruptible_returns_and_raises_like_the_call():
    assert interrupts.interruptible("ok", lambda: 42) == 42
    with pytest.raises(ProviderError, match="engine says no"):
        interrupts.interruptible("fails", lambda: (_ for _ in ()).throw(ProviderError("engine says no")))


def test_a_signal_that_lands_in_a_finalizer_is_raised_at_the_next_checkpoint():
    """Python swallows an exception raised in ``__del__`` (libvirt frees domain objects there): a Ctrl-C arriving
    while one runs must not be lost."""

    class Freed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs at a bytecode boundary, here in the finalizer
                pass

    previous = signal.signal(signal.SIGINT, interrupts.interrupt)
    try:
        Freed()
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            interrupts.checkpoint()
        interrupts.checkpoint()  # raised once
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the SDK: imported lazily, its errors translated ---------------------------------------------------


class SdkError(Exception):
    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(text or code)
        self.code = code


SDK = kit.SdkErrors(
    lambda: (SdkError,),
    not_found=lambda e: e.code == "404",
    busy=lambda e: e.code == "409",
    message=lambda e: f"{e.code} {e}",
)


def test_a_missing_sdk_names_the_extra_to_install():
    from cernvm_fixtures.errors import ConfigError

    with pytest.raises(ConfigError, match=r"the gce provider needs no_such_sdk .*pip install 'cernvm-fixtures\[gce\]'"):
        kit.sdk("gce", "gce", "json", "no_such_sdk.compute")
    assert kit.sdk("gce", "gce", "json", "os.path").join("a", "b") == "a/b"


def test_sdk_errors_become_provider_errors_naming_the_step():
    def fails(code):
        raise SdkError(code, "the cloud says no")

    assert SDK.call("get server", lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ProviderError, match=r"^get server: 403 the cloud says no$") as raised:
        SDK.call("get server", fails, "403")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(ProviderError, match=r"^get server: not found: 404 the cloud says no$"):
        SDK.call("get server", fails, "404")
    assert SDK.call("get server", fails, "404", missing_ok=True) is None
    with pytest.raises(KeyError):  # not the SDK's: propagates as it is
        SDK.call("get server", {}.__getitem__, "x")


def test_a_delete_is_retried_while_busy_and_not_found_is_done():
    answers = iter(["409", "409", None])
    calls = []

    def delete():
        calls.append(1)
        code = next(answers)
        if code:
            raise SdkError(code, "port in use")

    SDK.delete_until_free("delete network", delete, timeout=5, interval=0)
    assert len(calls) == 3
    SDK.delete_until_free("delete network", lambda: (_ for _ in ()).throw(SdkError("404")), timeout=5, interval=0)
    with pytest.raises(ProviderError, match=r"^delete network: 403 forbidden$"):
        SDK.delete_until_free("delete network", lambda: (_ for _ in ()).throw(SdkError("403", "forbidden")), timeout=5)


def test_a_delete_still_busy_at_the_deadline_says_what_held_it():
    def busy():
        raise SdkError("409", "port p-1 in use")

    with pytest.raises(ProviderError, match=r"delete network: still in use after 0 s.*409 port p-1 in use"):
        SDK.delete_until_free("delete network", busy, timeout=0.1, interval=0.02)


def test_a_delete_waiting_for_a_busy_resource_is_called_off(tmp_path):
    import threading

    event = threading.Event()
    event.set()
    with interrupts.cancel_scope(event), pytest.raises(interrupts.Cancelled):
        SDK.delete_until_free("delete network", lambda: (_ for _ in ()).throw(SdkError("409")), timeout=60)


# --- base: forget, drop, keep on the platform, wait for "running" -------------------------------------------


def remote_provider(tmp_path, states, marked):
    from cernvm_fixtures.providers.base import PlatformState, RemoteMachine, RemoteOptions

    class FakeMachine(RemoteMachine):
        def __init__(self, provider, name):
            super().__init__(provider, name)
            self.options = provider.options

        def platform_address(self):
            return "127.0.0.1"

        @property
        def exists(self):
            return True

        def platform_state(self):
            found = next(states)
            return found if found is None else PlatformState(*found)

        def publish_lifetime(self):
            marked.append([r.kept for r in self.resources])
            raise ProviderError("tags are read-only today")

    return fake_provider(tmp_path, FakeMachine, options=RemoteOptions(poll_interval=0.01))


def test_forget_and_drop(tmp_path):
    provider, destroyed = remote_provider(tmp_path, iter(()), [])
    machine = provider.machine("m")
    refused = provider.record(machine, "image", "m")
    upload = provider.record(machine, "object", "m")
    provider.forget(machine, refused)
    provider.drop(machine, upload)
    assert destroyed == ["object"] and machine.resources == [] and provider.run.ledger.entries() == []


def test_remote_wait_running_follows_the_platform_state(tmp_path):
    states = iter([None, ("BUILD",), ("ACTIVE", True)])
    provider, _ = remote_provider(tmp_path, states, [])
    provider.machine("m").wait_running(time.monotonic() + 10)
    failing = iter([("BUILD",), ("ERROR", False, "No valid host was found")])
    provider, _ = remote_provider(tmp_path / "2", failing, [])
    with pytest.raises(PermanentError, match=r"^m is ERROR: No valid host was found$"):
        provider.machine("m").wait_running(time.monotonic() + 10)
    provider, _ = remote_provider(tmp_path / "3", iter(lambda: ("BUILD",), None), [])
    with pytest.raises(ProviderError, match=r"m running: not done by the deadline \(still BUILD\)"):
        provider.machine("m").wait_running(time.monotonic() + 0.05)


def test_keep_marks_the_ledger_then_the_platform_and_a_refusal_is_a_warning(tmp_path, caplog):
    marked: list[list[bool]] = []
    provider, _ = remote_provider(tmp_path, iter(()), marked)
    machine = provider.machine("m")
    provider.record(machine, "server", "m")
    machine.keep()
    assert marked == [[True]] and all(r.kept for r in provider.run.ledger.entries())
    assert "could not mark it kept on the fake platform: tags are read-only today" in caplog.text


def test_a_long_run_carries_its_new_expiry_to_the_platform(tmp_path, caplog):
    """Issue 26.5: a sweep elsewhere sees only the platform's fields; past half a lifetime the machine's entries get
    a new expiry in the ledger and on the platform (a refusal there is a warning), and not before."""
    from cernvm_fixtures.ledger import DEFAULT_LIFETIME

    marked: list[list[bool]] = []
    provider, _ = remote_provider(tmp_path, iter(()), marked)
    machine = provider.machine("m")
    entry = provider.record(machine, "server", "m")
    assert not machine.prolong(entry.created + DEFAULT_LIFETIME / 4) and marked == []
    later = entry.created + DEFAULT_LIFETIME * 0.6
    assert machine.prolong(later)
    assert marked == [[False]], "written to the platform, still not kept"
    assert [r.expires for r in provider.run.ledger.entries()] == [later + DEFAULT_LIFETIME]
    assert "could not carry the new expiry to the fake platform" in caplog.text
