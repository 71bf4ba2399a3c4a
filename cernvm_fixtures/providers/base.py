"""The provider contract every platform implements (pycloudlib-style: one small, shared shape).

A provider creates machines for a target. Everything it creates is recorded in
the run's ledger *before* the create call, so it can be destroyed later from the
ledger alone, by this process, the plugin's end-of-run check, or ``sweep``.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from ..errors import PermanentError, ProviderError, ScreenUnavailable, Unsupported
from ..ledger import DEFAULT_LIFETIME, Resource
from ..transport.base import Login

if TYPE_CHECKING:
    from ..config import Target
    from ..context import Context
    from ..doctor import Check
    from ..profile import Profile
    from ..run import Run
    from ..transport.base import Transport
    from ..transport.ssh import JumpHost, SSHTransport

log = logging.getLogger(__name__)

KEYS_BLOCK = re.compile(
    r"^-----BEGIN SSH HOST KEY KEYS-----\r?\n(.*?)^-----END SSH HOST KEY KEYS-----\r?$", re.S | re.M
)
"""The block of host public keys cloud-init (and the test appliance) print on the console."""
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|c)")


def console_text(text: str) -> str:
    """Console output as plain text: terminal escape sequences dropped, CRLF as LF."""
    return ANSI.sub("", text).replace("\r\n", "\n")


def console_file_text(path: Path) -> str:
    """A serial console the hypervisor writes to a file, as plain text (empty before the file exists)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return ""
    return console_text(raw.decode("utf-8", "replace"))


class ProviderOptions(BaseModel):
    """Provider-specific target keys; subclasses add fields, unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


def _jump_host(value: str | None) -> str | None:
    from .kit import JUMP

    if value is not None:
        match = JUMP.match(value)
        if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
            raise ValueError("[user@]host[:port]")
    return value


def _ssh_cidr(value: str, info: ValidationInfo) -> str:
    from ..netcheck import ssh_cidr

    return ssh_cidr(value, bool(info.data.get("allow_wide_ssh")))


SshCidr = Annotated[str, AfterValidator(_ssh_cidr)]
"""The runner's own address as a CIDR, which a cloud's firewall admits to tcp/22 alone: checked once for every cloud
(not broader than an IPv4 /24 or IPv6 /48 unless ``allow_wide_ssh``, which must be declared before it)."""


class RemoteOptions(ProviderOptions):
    """The keys of a machine reached over SSH at an address its cloud gives: login user and jump host."""

    user: str = "root"
    jump_host: Annotated[str | None, AfterValidator(_jump_host)] = None
    """``[user@]host[:port]`` of a bastion to reach the machine through (e.g. for a private address)."""
    jump_key: str | None = None
    """Private key file for the jump host; default: the SSH agent and ~/.ssh keys."""
    jump_known_hosts: str | None = None
    """known_hosts file holding the jump host's key (unknown keys are refused); default ~/.ssh/known_hosts."""
    connect_timeout: float = Field(10.0, gt=0)
    poll_interval: float = Field(5.0, gt=0)
    """Seconds between two questions to the cloud's API while waiting (running, an operation, a delete)."""
    allow_wide_ssh: bool = False
    """Accept an ``ssh_cidr`` broader than an IPv4 /24 or IPv6 /48 (the firewall then admits that many hosts)."""


OptionsT = TypeVar("OptionsT", bound=ProviderOptions)
MachineT = TypeVar("MachineT", bound="Machine")


def teardown_rank(order: tuple[str, ...], resource: Resource) -> tuple[int, float]:
    """Sort key for destroying: a kind later in ``order`` (or unknown) first, then the newest first (reverse=True)."""
    return (order.index(resource.kind) if resource.kind in order else len(order), resource.created)


class Provider(ABC, Generic[OptionsT, MachineT]):
    """Knows one platform: launches machines for a target and destroys what it recorded."""

    name: ClassVar[str]
    Options: ClassVar[type[ProviderOptions]] = ProviderOptions
    shares_folders: ClassVar[bool] = False
    """Whether the provider can hand host folders to instances (target key ``shared_folders``)."""
    parallel_boots: ClassVar[int] = 4
    """How many machines of this provider boot-ahead launches at a time (API rate limits, quotas, cores)."""
    no_screen: ClassVar[str | None] = None
    """Why this platform gives no screenshot of a machine, as a sentence (None: its machines say per call)."""
    no_power_button: ClassVar[str | None] = "the provider has no ACPI power button call"
    """Why this platform's machines have no power button the harness can press, as a sentence; None: they have one
    (:meth:`Machine.press_power_button`). Scenarios read it before booting a machine for the power button."""
    no_cable: ClassVar[str | None] = "the platform has no network cable the harness can pull (no link-state call)"
    """Why this platform's machines have no network cable the harness can pull, as a sentence; None: they have one
    (:meth:`Machine.set_link`). Scenarios read it before booting a machine for the cable."""
    no_upgrade: ClassVar[str | None] = "the provider cannot boot another image on a machine's scratch disk"
    """Why this platform's machines cannot boot another image on the same scratch disk (an upgrade: the new ISO in
    the CD drive), as a sentence; None: they can (:meth:`Machine.change_image`)."""
    creation_order: ClassVar[tuple[str, ...]] = ()
    """Resource kinds in the order they depend on each other; teardown and sweep go the other way."""
    instance_kind: ClassVar[str] = "vm"
    """What this provider's instances are, their trait ``kind``: ``vm``, ``container``, ``process``."""

    def __init__(self, target: Target, run: Run) -> None:
        self.target = target
        self.run = run
        self.options: OptionsT = target.options

    @abstractmethod
    def machine(self, name: str) -> MachineT:
        """A machine object for ``name``, with nothing created yet (so a failed launch can still be cleaned up)."""

    @abstractmethod
    def launch(self, machine: MachineT, context: Context) -> None:
        """Record, then create the machine booted with this context; returns once it was started."""

    @classmethod
    @abstractmethod
    def destroy_resource(cls, resource: Resource) -> None:
        """Destroy one recorded resource from its ledger data alone; a resource already gone is fine."""

    @classmethod
    def owned_by_caller(cls, resource: Resource) -> bool:
        """Whether whoever runs this process made the resource (``sweep --include-kept`` touches only those):
        by default, a process on this host; a cloud compares its own account principal."""
        return resource.owner.host == socket.gethostname()

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """A PNG of the screen of the machine a recorded resource is, from its ledger data alone (``cernvm-fixtures
        screen`` on a kept instance); raises ScreenUnavailable where the platform has none.

        Args:
            resource: a ledger entry of this provider (any kind: the provider picks the machine's own).
            path: where to write the PNG.

        Returns:
            ``path``.
        """
        raise ScreenUnavailable(cls.no_screen or f"the {cls.name} provider cannot take a screenshot of {resource.name}")

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources found on the target's platform by name or tag whose names are not in ``recorded``."""
        return []

    @classmethod
    def check_image_name(cls, target: Target) -> None:
        """Refuse (ConfigError, starting with ``target.where("image")``) an image this target cannot boot, judged
        from its name and the target's options alone (no download, no engine): at load, for the config file's
        images and the command line's alike, instead of failing every test at setup."""

    @classmethod
    def target_traits(cls, target: Target) -> dict[str, str]:
        """The traits every instance of ``target`` has, known before one boots: a scenario reads the profile with
        them to skip before it boots a fresh instance for nothing."""
        return {"provider": cls.name, "target": target.name, "kind": cls.instance_kind}

    @classmethod
    def check_profile(cls, target: Target, profile: Profile) -> None:
        """Refuse (ConfigError) a profile this target's options cannot boot, before anything is created."""

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """This host's prerequisites for ``target`` (``cernvm-fixtures doctor``); cheap, and never changes the host."""
        return []

    def record(self, machine: Machine, kind: str, name: str, **data: Any) -> Resource:
        """Write a ledger entry for something about to be created and attach it to the machine."""
        resource = Resource(
            provider=self.name, kind=kind, name=name, run=self.run.id, target=self.target.name, data=data
        )
        self.run.ledger.record(resource)
        machine.resources.append(resource)
        return resource

    def record_directory(self, machine: Machine, directory: Path) -> Resource:
        """Create the machine's own directory exclusively, then record it: a name that collides with another
        machine's fails here, before anything of the other machine could be recorded as ours and deleted."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir()
        except FileExistsError:
            raise ProviderError(f"{machine.name}: {directory} exists already (a name collision)") from None
        return self.record(machine, "directory", machine.name, path=str(directory))

    def created(self, resource: Resource, **data: Any) -> None:
        """Add what the platform returned (its id...) to a recorded entry, durably."""
        resource.data.update(data)
        self.run.ledger.update(resource)

    def forget(self, machine: Machine, resource: Resource) -> None:
        """Drop a ledger entry without destroying anything: the platform refused to create it, or it went away
        with another resource (nothing of ours is left to destroy)."""
        self.run.ledger.forget(resource)
        if resource in machine.resources:
            machine.resources.remove(resource)

    def drop(self, machine: Machine, resource: Resource) -> None:
        """Destroy one resource now (e.g. an upload once imported), then forget it."""
        type(self).destroy_resource(resource)
        self.forget(machine, resource)


class Machine(ABC):
    """One created machine or container, as its provider sees it."""

    slowdown: float = 1.0
    """Factor applied to readiness deadlines (e.g. software emulation is several times slower)."""
    context_host_keys: list[str] | None = None
    """Host public keys the harness handed over in the context (``host_key = "context"``); None: read the
    console."""

    def __init__(self, provider: Provider[Any, Any], name: str) -> None:
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
    def login_command(self) -> Login:
        """How a person gets a shell on the machine: argv and environment (``str()`` shows it as a command)."""

    @property
    def key_file(self) -> Path:
        """The private key SSH logs in with: the run's own, unless the target names another."""
        return self.provider.run.key_file

    def console_log(self) -> str:
        """The serial console (or closest equivalent) so far; empty if the platform has none."""
        return ""

    def screen_text(self) -> str | None:
        """The text on the guest's screen read from outside (where the platform can), None where it cannot."""
        return None

    def network(self) -> str:
        """What the machine's network lets it reach, for a readiness error (empty: nothing worth saying)."""
        return ""

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the guest's screen as it is now to ``path``.

        Args:
            path: where to write the PNG (its directory is created).

        Returns:
            ``path``.

        Raises:
            ScreenUnavailable: the platform has no display for this machine, or no way to read it (the reason).
        """
        provider = type(self.provider)
        raise ScreenUnavailable(
            provider.no_screen or f"the {provider.name} provider cannot take a screenshot of {self.name}"
        )

    def press_power_button(self) -> None:
        """Press the machine's ACPI power button: the platform asks the guest to shut down cleanly (what a person's
        press, ``virsh shutdown --mode acpi`` or ``VBoxManage controlvm acpipowerbutton`` does) and returns at once;
        the guest decides whether and when it powers off (:meth:`is_running`).

        Raises:
            Unsupported: the platform has no power button for this machine (the reason).
        """
        provider = type(self.provider)
        raise Unsupported(f"{provider.name}: {provider.no_power_button or 'no ACPI power button call'}")

    def change_image(self, target: Target) -> None:
        """Put ``target``'s image where the machine boots from (the CD drive), keeping its disks, so that the next
        boot (the guest's reboot) starts that image on the same scratch disk: an upgrade.

        Raises:
            Unsupported: the platform cannot (the provider's ``no_upgrade`` says why).
        """
        provider = type(self.provider)
        raise Unsupported(f"{provider.name}: {provider.no_upgrade or 'no way to boot another image on the machine'}")

    def set_link(self, up: bool) -> None:
        """Plug (``up``) or pull the network cable of the machine's first NIC: the guest sees its link go down or
        come back (``virsh domif-setlink``, ``VBoxManage controlvm setlinkstate1``), nothing else changes.

        Raises:
            Unsupported: the platform has no cable to pull (the provider's ``no_cable`` says why).
        """
        provider = type(self.provider)
        raise Unsupported(f"{provider.name}: {provider.no_cable or 'no network cable to pull'}")

    def is_running(self) -> bool:
        """Whether the platform still runs the machine (False once the guest powered off, or the machine is gone).

        Raises:
            Unsupported: the provider cannot tell (only providers with a power button must).
        """
        raise Unsupported(f"the {type(self.provider).name} provider cannot tell whether {self.name} still runs")

    def host_keys(self) -> list[str] | None:
        """The host keys the instance must present: those handed over in its context, else those of the first
        ``SSH HOST KEY KEYS`` block on the console, None if none was printed.

        The first block: anything printed later (a process writing to the console) cannot replace the keys the
        image announced at boot; the markers must start their lines.
        """
        if self.context_host_keys is not None:
            return list(self.context_host_keys)
        block = KEYS_BLOCK.search(self.console_log())
        if block is None:
            return None
        return [line.strip() for line in block.group(1).splitlines() if line.strip()]

    def make_shared_folders(self, directory: Path) -> None:
        """Host side of the target's shared folders: its directories, or fresh ones under ``directory``."""
        for folder, path in self.provider.target.shared_folders.items():
            host = Path(path).expanduser().resolve() if path else directory / "shared" / folder
            host.mkdir(parents=True, exist_ok=True)
            self.shared_folders[folder] = host

    def destroy(self) -> None:
        """Destroy every recorded resource in the reverse of the provider's ``creation_order``, newest first;
        idempotent, and keeps going past errors."""
        errors = []
        order = type(self.provider).creation_order
        for resource in sorted(self.resources, key=lambda r: teardown_rank(order, r), reverse=True):
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
        """Mark everything this machine owns as intentionally kept (sweep leaves it alone until it expires): in the
        ledger, then on the platform (:meth:`publish_lifetime`; a failure there is a warning, the ledger says so)."""
        login = self.login_command()
        for resource in self.resources:
            resource.kept = True
            resource.data.update(login.as_data() if isinstance(login, Login) else {"login": login})
            resource.expires = time.time() + 24 * 3600
            self.provider.run.ledger.update(resource)
        try:
            self.publish_lifetime()
        except ProviderError as e:
            log.warning("%s: could not mark it kept on the %s platform: %s", self.name, self.provider.name, e)

    def prolong(self, now: float | None = None) -> bool:
        """Move the expiry of this machine's entries a lifetime ahead once less than half of one is left: in the
        ledger, then on the platform (:meth:`publish_lifetime` writes the expiry with the kept mark), so a sweep
        elsewhere, which sees only the platform's fields, does not take a live run's resources after a lifetime. True
        if it did.
        """
        now = time.time() if now is None else now
        due = [r for r in self.resources if r.expires - now < DEFAULT_LIFETIME / 2]
        if not due:
            return False
        for resource in due:
            resource.expires = now + DEFAULT_LIFETIME
            self.provider.run.ledger.update(resource)
        try:
            self.publish_lifetime()
        except ProviderError as e:
            log.warning("%s: could not carry the new expiry to the %s platform: %s", self.name, self.provider.name, e)
        return True

    def publish_lifetime(self) -> None:  # noqa: B027 - a hook: a no-op where the platform stores no ledger fields
        """Write the kept mark and expiry of :attr:`resources` where the platform stores our ledger fields (tags,
        labels, metadata), so a sweep from the platform alone sees them as the ledger does (after :meth:`keep` and
        :meth:`prolong`); a no-op where it stores none.

        Raises:
            ProviderError: the platform refused (:meth:`keep` logs it).
        """


@dataclass(frozen=True)
class PlatformState:
    """What a cloud says of a machine, for :meth:`RemoteMachine.wait_running`."""

    status: str
    """The platform's own word (``ACTIVE``, ``RUNNING``, ``running``, ``Succeeded``...), shown while waiting."""
    running: bool = False
    """The machine runs (readiness goes on to the network and SSH)."""
    failure: str | None = None
    """The platform says it will never run, and why (waiting longer cannot help)."""


class RemoteMachine(Machine):
    """A machine reached over SSH at the address its cloud gives (optionally through a jump host): the transport,
    the login command, the wait for the platform's "running" and the jump host connection, written once for every
    cloud."""

    options: RemoteOptions

    def __init__(self, provider: Provider[Any, Any], name: str) -> None:
        super().__init__(provider, name)
        self._endpoint: tuple[str, int] | None = None
        self._jump: JumpHost | None = None
        self._console = ""

    def kept_console(self, read: Callable[[], str]) -> str:
        """The console text ``read`` gets from the platform now, remembered: when reading fails or the machine is
        gone, what was read last (diagnostics never fail, and a console stays readable after teardown)."""
        try:
            text = read()
        except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
            log.debug("%s: no console output: %s", self.name, e)
            return self._console
        if text:
            self._console = text
        return self._console

    @abstractmethod
    def platform_address(self) -> str:
        """The address the cloud gave the machine (the one its ``address`` option selects)."""

    @property
    @abstractmethod
    def exists(self) -> bool:
        """Whether the cloud has the machine (then its console counts for the host keys)."""

    def platform_state(self) -> PlatformState | None:
        """What the cloud says of the machine now (one API call); None while it does not list it yet."""
        raise NotImplementedError(f"{type(self).__name__} neither reads its platform state nor waits its own way")

    def wait_running(self, deadline: float) -> None:
        """Poll :meth:`platform_state` every ``poll_interval`` s until the machine runs; a failure ends the wait at
        once (PermanentError), the deadline with the last status seen (ProviderError); Ctrl-C reaches every poll."""
        from .kit import wait_until

        seen = "not listed yet"

        def running() -> bool | None:
            nonlocal seen
            state = self.platform_state()
            if state is None:
                return None
            seen = state.status
            if state.failure is not None:
                raise PermanentError(f"{self.name} is {state.status}: {state.failure}")
            return True if state.running else None

        wait_until(
            f"{self.name} running", running, deadline, self.options.poll_interval, status=lambda: f"still {seen}"
        )

    def transport(self) -> SSHTransport:
        from ..transport.ssh import JumpHost, SSHTransport
        from .kit import parse_jump

        host, port = self.provider.run.endpoint(self, self.platform_address(), 22)
        self._endpoint = (host, port)
        factory = None
        if self.options.jump_host:
            if self._jump is None:
                user, jhost, jport = parse_jump(self.options.jump_host)
                self._jump = JumpHost(
                    user or self.options.user,
                    jhost,
                    jport,
                    key_file=self.options.jump_key,
                    known_hosts=self.options.jump_known_hosts,
                    timeout=self.options.connect_timeout,
                    label=self.name,
                )
            factory = functools.partial(self._jump.channel, host, port)
        return SSHTransport(
            host,
            port,
            self.options.user,
            self.key_file,
            self.host_keys,
            connect_timeout=self.options.connect_timeout,
            sock_factory=factory,
        )

    def login_command(self) -> Login:
        return remote_login(self, lambda: self._endpoint or (self.platform_address(), 22), self.options, self.exists)

    def destroy(self) -> None:
        try:
            super().destroy()
        finally:
            if self._jump is not None:
                self._jump.close()


def remote_login(machine: Machine, address: Callable[[], tuple[str, int]], options: Any, announced: bool) -> Login:
    """The ``ssh`` command for a cloud machine: its address (or a placeholder while it has none), the host keys
    it announced (``announced``: it exists, so its console counts) and the target's jump host keys."""
    from ..transport.ssh import ssh_login
    from .kit import parse_jump

    try:
        host, port = address()
    except Exception:  # noqa: BLE001 - a login hint must not fail
        host, port = f"<{machine.name} address>", 22
    jump = None
    if getattr(options, "jump_host", None):
        user, jhost, jport = parse_jump(options.jump_host)
        jump = f"{user or options.user}@{jhost}:{jport}"
    jump_key, jump_known = getattr(options, "jump_key", None), getattr(options, "jump_known_hosts", None)
    return ssh_login(
        options.user,
        host,
        port,
        machine.key_file,
        (machine.host_keys() if announced else None) or [],
        machine.provider.run.machine_dir(machine.name),
        jump_host=jump,
        jump_key=Path(jump_key).expanduser() if jump_key else None,
        jump_known_hosts=Path(jump_known).expanduser() if jump_known else None,
    )
