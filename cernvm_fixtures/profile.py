"""Profiles: what a correct instance of an image looks like, so scenarios never hard-code it.

A profile is a TOML file. Any expectation may vary with the instance's traits
(provider, instance type, NIC model, ...): instead of a plain value it is then a
list of rules, the first whose conditions all match wins::

    [network]
    driver = [
      { provider = "ec2", instance_type = ["t2.*"], expect = "vif" },
      { provider = "docker", expect = false, why = "containers share the host's network" },
      { expect = "virtio_net" },
    ]

``expect = false`` means "does not apply here": the scenario is skipped with ``why``.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .netcheck import interface_name

T = TypeVar("T")


class Rule(BaseModel, Generic[T]):
    """One case of a varying expectation: trait conditions (extra keys) plus the value."""

    model_config = ConfigDict(extra="allow")
    expect: T | bool
    why: str = ""

    def matches(self, traits: Mapping[str, str]) -> bool:
        for trait, patterns in (self.model_extra or {}).items():
            value = traits.get(trait)
            if value is None:
                return False
            patterns = patterns if isinstance(patterns, list) else [patterns]
            if not any(fnmatch.fnmatchcase(str(value), str(p)) for p in patterns):
                return False
        return True


@dataclass(frozen=True)
class Expectation(Generic[T]):
    """A resolved expectation: ``value`` is None when it does not apply (``why`` says why)."""

    value: T | None
    why: str = ""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = str | list[Rule[str]] | None
"""A text expectation, or rules choosing one by traits (every expectation key may vary)."""
Words = list[str] | list[Rule[list[str]]]
Seconds = float | list[Rule[float]] | None
Commands = dict[str, str] | list[Rule[dict[str, str]]] | None
YesNo = Literal["yes", "no"] | list[Rule[Literal["yes", "no"]]] | None


class Ready(_Section):
    command: Text = "true"


class BootDeadlines(_Section):
    """Seconds per readiness step a first boot of the image may take (before the provider's slowdown); a target's
    own ``deadlines`` win, key by key."""

    running: float | None = Field(None, gt=0)
    reachable: float | None = Field(None, gt=0)
    login: float | None = Field(None, gt=0)
    ready: float | None = Field(None, gt=0)


class Boot(_Section):
    """What the image needs from the platform to boot."""

    network: bool | list[Rule[bool]] = False
    """Whether the image loads its OS over the network at boot (µCernVM: from CernVM-FS servers; CernVM in
    Docker's parrot mode: the OS repository): the target's network must reach out (or, for the test appliance,
    reach the server the harness provides). May vary by traits."""
    deadlines: BootDeadlines = BootDeadlines()


class Kernel(_Section):
    release: Text = None
    cmdline: Words = []
    nvme: bool = True
    """Whether the kernel has an NVMe driver (EC2's Nitro instance types present every EBS disk as NVMe)."""


class Cvmfs(_Section):
    repositories: Words = []
    fstype: Text = None
    os_mount: Text = None
    probe: bool | list[Rule[bool]] = True
    """Whether ``cvmfs_config probe`` can see the repositories (not under parrot: no cvmfs2 mount there)."""


class Partitions(_Section):
    """µCernVM's partitioning of the scratch disk: with ``resize_rootfs=0`` and a disk larger than ``default_size``,
    partition 1 has that size and partition 2 the rest, else partition 1 spans the disk."""

    default_size: int = Field(gt=0)
    """MiB."""
    slack: int = Field(0, ge=0)
    """MiB partition 1 may lose to its start's alignment and the partitioner's rounding."""


class Scratch(_Section):
    mountpoint: Text = None
    label: Text = None
    fstype: Text = None
    version_file: Text = None
    version: Text = None
    files: Words = []
    partitions: Partitions | list[Rule[Partitions]] | None = None
    disk_sizes: dict[Literal["small", "large"], int] | list[Rule[dict[Literal["small", "large"], int]]] | None = None
    """GiB of the small and the large scratch disk the scratch size scenario boots."""


class Root(_Section):
    """The root file system: a union of a writable branch over the OS tree from the repository."""

    fstype: Text = None
    lower: Text = None
    upper: Text = None


class Shared(_Section):
    mechanism: Text = None
    path: Text = "/mnt/shared/{name}"


class Network(_Section):
    interface: Text = "eth0"
    driver: Text = None

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: Text) -> Text:
        """Scenarios put the name in a guest shell command, so it must be a plain interface name."""
        for rule in value if isinstance(value, list) else [value]:
            name = rule.expect if isinstance(rule, Rule) else rule
            if isinstance(name, str):
                interface_name(name)
        return value


class Context(_Section):
    source_file: Text = None
    user_data_file: Text = None
    source: Text = None
    ucontext_file: Text = None


class Errors(_Section):
    """The release checklist's "no error messages at boot": the boot and system logs, scanned for error lines."""

    logs: Commands = None
    """Log name -> a shell command printing that log's error lines (every line it prints counts as an error, so
    the command does the filtering: ``journalctl -b -p err``, a ``grep`` of the boot logs for error words)."""
    harmless: Words = []
    """Regular expressions (searched in each line) of error lines known to be harmless on this image."""


class Time(_Section):
    """The release checklist's "correct time / running ntpd"."""

    skew: Seconds = None
    """How many seconds the guest's clock may differ from the host's (measured around one ``date +%s``)."""
    daemon: Words = []
    """Process names (``/proc/<pid>/comm``) of the image's time daemon: one of them must be running."""


class Shm(_Section):
    """The release checklist's "check /dev/shm": POSIX shared memory is a writable file system of its own."""

    path: Text = "/dev/shm"
    fstype: Text = None


class Ssh(_Section):
    """The release checklist's "root should not be able to login" (with a password: keys are how one gets in)."""

    password_authentication: YesNo = None
    """Whether the SSH server offers password authentication at all ("yes": offered, e.g. for users the context
    creates with a password; "no": not even offered, as dropbear -s or OpenSSH's PasswordAuthentication no)."""
    root_passwords: Words = []
    """Passwords tried for root, every one of which must be refused (e.g. the one a debug boot sets)."""


class ContextUser(_Section):
    """A user the users scenario's context creates, and how the image must let it log in over SSH."""

    name: str
    group: str
    key: bool
    """Whether the run's key logs in (the context gave the user that key)."""
    password: bool
    """Whether the password the context gave logs in."""


class Users(_Section):
    """The release checklist's "login as repomgr": users created by the context."""

    created: list[ContextUser] | list[Rule[list[ContextUser]]] | None = None


class ProtectedContext(_Section):
    """The release checklist's "contextualize with a password protected context"."""

    supported: bool | list[Rule[bool]] | None = None
    """Whether the image has a mechanism of its own for it (CernVM's is the CernVM Online server's: false, why)."""


class Upgrade(_Section):
    """The release checklist's "upgrade from last production release"."""

    previous: Text = None
    """The image of the release before (booted first; then the target's own image on the same scratch disk)."""


class Power(_Section):
    """The release checklist's "test reaction to power button"."""

    button_deadline: Seconds = None
    """Seconds (before the provider's slowdown) from an ACPI power-button press until the instance has powered
    off by itself (a clean shutdown)."""


class Reboot(_Section):
    """The release checklist's "no error messages during after-init-reboot"."""

    deadline: Seconds = None
    """Seconds (before the provider's slowdown) the reboot after contextualization may take until the instance is
    ready again; it must come back on the same scratch disk with the same context (and boot without errors)."""


class Cable(_Section):
    """The release checklist's "pull the network cable and reboot: should take longer but should not hang"."""

    deadline: Seconds = None
    """Seconds (before the provider's slowdown) a boot with the network cable pulled may take until the screen shows
    ``ready_screen``; then the cable goes back in and the instance must be ready again."""
    ready_screen: Text = None
    """A regular expression the screen's text matches once a boot is complete (a login prompt, a ready line): the
    only thing a boot without network shows the harness (no SSH without the network)."""


class Workloads(_Section):
    """The release checklist's "experiment workloads": commands that must succeed on the instance."""

    commands: Commands = None
    """Workload name -> a shell command that must exit 0 (an experiment's setup script and a short job)."""
    timeout: float = Field(300, gt=0)
    """Seconds one workload may take (before the provider's slowdown)."""


class Profile(_Section):
    """A validated profile; sections the image does not have stay at their empty defaults."""

    name: str
    summary: str = ""
    ready: Ready = Ready()
    boot: Boot = Boot()
    kernel: Kernel = Kernel()
    cvmfs: Cvmfs = Cvmfs()
    scratch: Scratch = Scratch()
    root: Root = Root()
    shared: Shared = Shared()
    network: Network = Network()
    context: Context = Context()
    errors: Errors = Errors()
    time: Time = Time()
    shm: Shm = Shm()
    ssh: Ssh = Ssh()
    users: Users = Users()
    protected_context: ProtectedContext = ProtectedContext()
    upgrade: Upgrade = Upgrade()
    power: Power = Power()
    reboot: Reboot = Reboot()
    cable: Cable = Cable()
    workloads: Workloads = Workloads()
    origin: str = ""

    def boots_over_network(self, traits: Mapping[str, str]) -> bool:
        """``boot.network`` for an instance with these traits."""
        return bool(self.expect("boot.network", traits).value)

    def expect(self, dotted: str, traits: Mapping[str, str]) -> Expectation[Any]:
        """Resolve ``section.key`` for an instance with these traits."""
        section, key = dotted.split(".", 1)
        raw = getattr(getattr(self, section), key)
        if isinstance(raw, list) and raw and isinstance(raw[0], Rule):
            for rule in raw:
                if rule.matches(traits):
                    if rule.expect is False:
                        return Expectation(None, rule.why or f"profile {self.name!r} says {dotted} does not apply")
                    return Expectation(rule.expect, rule.why)
            shown = ", ".join(f"{k}={v}" for k, v in sorted(traits.items()))
            return Expectation(None, f"profile {self.name!r} has no rule for {dotted} matching {shown}")
        if raw is None or raw == [] or raw == {}:
            return Expectation(None, f"profile {self.name!r} sets no {dotted}")
        return Expectation(raw)


def shipped() -> list[str]:
    """Names of the profiles that come with the package."""
    folder = resources.files(__package__) / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a profile file by path; errors name the file and key."""
    if name_or_path in shipped():
        ref = resources.files(__package__) / "profiles" / f"{name_or_path}.toml"
        source, text = f"profile {name_or_path!r}", ref.read_text()
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"profile {name_or_path!r}: no such shipped profile or file; "
                f"shipped profiles are {', '.join(shipped())}, or give a path to a .toml file"
            )
        source, text = str(path), path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation(source, e)) from None
    return profile.model_copy(update={"origin": source})


_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "constrained-str"}


def format_validation(
    source: str, error: ValidationError, prefix: str = "", valid_keys: list[str] | None = None
) -> str:
    """Turn a pydantic error into lines naming the file, the dotted key, the bad value and what is valid."""
    found: dict[str, list[str]] = {}
    for err in error.errors():
        parts = [str(p) for p in err["loc"] if str(p) not in _BRANCHES and "[" not in str(p)]
        key = prefix + ".".join(parts)
        if err["type"] == "extra_forbidden":
            hint = f"; valid keys are {', '.join(valid_keys)}" if valid_keys else ""
            found.setdefault(key, []).append(f"unknown key{hint}")
        elif err["type"] == "missing":
            found.setdefault(key, []).append("required key is missing")
        else:
            msg = err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            found.setdefault(key, []).append(f"expected {msg} (got {err['input']!r})")
    lines: list[str] = []
    for key, messages in found.items():
        messages = list(dict.fromkeys(messages))
        if len(messages) > 1 and all(m.startswith("expected ") for m in messages):
            got = messages[0][messages[0].rindex(" (got ") :]
            messages = ["expected " + " or ".join(m[9 : m.rindex(" (got ")] for m in messages) + got]
        lines.extend(f"{source}: {key}: {m}" for m in messages)
    return "\n".join(lines)
