"""Configuration: the targets of a run, declared in one file and validated on load.

Looked up in this order: an explicit path, ``cernvm.toml`` in the rootdir,
``[tool.cernvm]`` in the rootdir's ``pyproject.toml``, the built-in defaults
(the local targets booting the project's test appliance). A target's table holds
the generic keys below plus its provider's own keys::

    [targets.kvm]
    provider = "kvm"
    image = "/srv/images/ucernvm-prod.2021.05-1.cernvm.x86_64.iso"
    profile = "cernvm4"
    domain_type = "auto"

A target may instead list several images (the nightly matrix), each becoming a target of its own named
``<target>-<label>`` (so ``-k kvm`` selects every KVM image, ``-k cernvm5`` every target's CernVM 5)::

    [targets.kvm.images]
    appliance = "appliance"
    cernvm5 = { image = "/srv/images/ucernvm-5.iso", profile = "cernvm5" }

Secrets never live here: each provider takes credentials from its ecosystem's chain.

Config sits below the providers (they read its ``Target``): it knows a provider only as :class:`ProviderRules`
and finds one through a :class:`Registry` passed in (by default the installed ones, :mod:`.registry`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import profile as profiles
from . import registry
from .download import redact
from .errors import ConfigError
from .images import APPLIANCE, appliance_variant, check_image

NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
LABEL = re.compile(r"^[a-z0-9]+$")
"""An image label of a target's ``images``: lowercase letters and digits (the target name ends at its last '-')."""
VERIFICATION = Literal["real engine", "emulator", "stand-in"]


class ProviderRules(Protocol):
    """What config asks of a target's provider (a provider class is one): its name, its own target keys, whether
    it shares host folders, and its load-time checks of an image name and of a profile (ConfigError to refuse)."""

    @property
    def name(self) -> str: ...
    @property
    def Options(self) -> type[BaseModel]: ...  # noqa: N802 - the provider class attribute's name
    @property
    def shares_folders(self) -> bool: ...
    def check_image_name(self, target: Target) -> None: ...
    def check_profile(self, target: Target, profile: profiles.Profile) -> None: ...


class Registry(Protocol):
    """Where config finds a provider by name: :mod:`cernvm_fixtures.registry` (the installed providers) is one."""

    def names(self) -> list[str]: ...
    def get(self, name: str) -> ProviderRules: ...


class Deadlines(BaseModel):
    """Seconds allowed for each readiness step, before the provider's slowdown factor is applied."""

    model_config = ConfigDict(extra="forbid")
    running: float = Field(60, gt=0)
    reachable: float = Field(30, gt=0)
    login: float = Field(30, gt=0)
    ready: float = Field(30, gt=0)


def effective_deadlines(target: Deadlines, profile: Any) -> Deadlines:
    """The deadlines of one boot: built-in defaults, then the profile's (``boot.deadlines``, sized for the image's
    first boot), then the keys the target sets itself."""
    values = {k: v for k, v in profile.boot.deadlines.model_dump().items() if v is not None}
    values.update({k: getattr(target, k) for k in target.model_fields_set})
    return Deadlines(**values)


class TargetKeys(BaseModel):
    """Keys every target has, whatever its provider."""

    model_config = ConfigDict(extra="forbid")
    provider: str
    image: str = APPLIANCE
    profile: str | None = None
    enabled: bool = True
    shared_folders: dict[str, str] = {}
    deadlines: Deadlines = Deadlines()
    command_timeout: float | None = Field(120, gt=0)
    """Seconds a command may run when the caller gives no timeout (``Instance.run``, testinfra); none: no limit."""
    host_key: Literal["context", "console", "trust-first"] = "context"
    """How the SSH host key is checked: ``context`` (default): the harness makes the instance's host key and hands
    it over in the cloud-config ``ssh_keys`` (cloud-init installs it), then accepts only that key, whether or not
    the console can be read; ``console``: against the key block the image prints on its (serial) console;
    ``trust-first``: trusted on first use (then pinned, and reported), for images that do neither."""
    verification: VERIFICATION = "real engine"
    """What the target really runs on, for the reports: the platform itself, an emulator of its API, or an
    emulator whose machines are stand-ins (e.g. moto's EC2 answered by a KVM guest)."""


@dataclass(frozen=True)
class Target:
    """A named, validated use of a provider."""

    name: str
    provider: str
    image: str
    profile: str
    options: Any
    enabled: bool = True
    shared_folders: Mapping[str, str] = field(default_factory=dict)
    deadlines: Deadlines = field(default_factory=Deadlines)
    command_timeout: float | None = 120
    host_key: str = "context"
    origin: str = "built-in defaults"
    verification: str = "real engine"
    table: str = ""
    """The ``[targets.<table>]`` this target was declared in (its own name unless expanded from ``images``)."""
    image_label: str | None = None
    """The label under ``images`` this target was expanded from, if any."""
    overrides: Mapping[str, str] = field(default_factory=dict)
    """Keys given on the command line (or in the ini file) instead of the config, each with the option that set it
    (``--cernvm-image docker=appliance:no-cvmfs``): messages about the key start with that, not the config's."""

    def with_overrides(
        self,
        image: str | None = None,
        profile: str | None = None,
        *,
        image_from: str | None = None,
        profile_from: str | None = None,
        providers: Registry = registry,
    ) -> Target:
        """The same target with a command-line image/profile, checked here as the config file's are at load (the
        profile follows the image if not given); ``image_from``/``profile_from`` name the option and value that
        set them, for every message about them (default: ``--cernvm-image IMAGE (target NAME)``)."""
        if image is None and profile is None:
            return self
        overrides = dict(self.overrides)
        if image is not None:
            overrides["image"] = image_from or f"--cernvm-image {redact(image)} (target {self.name})"
        if profile is not None:
            overrides["profile"] = profile_from or f"--cernvm-profile {profile} (target {self.name})"
        image = image or self.image
        if profile is None:
            profile = default_profile(image, self.name, overrides["image"])
            overrides["profile"] = overrides["image"]
        target = replace(self, image=image, profile=profile, overrides=overrides)
        check_image(image, target.where("image"))
        providers.get(self.provider).check_image_name(target)
        return target

    def load_profile(self, providers: Registry = registry) -> profiles.Profile:
        """The target's profile, checked against the provider's options (e.g. a kernel the machine type cannot boot)."""
        try:
            profile = profiles.load(self.profile)
        except ConfigError as e:
            raise ConfigError(f"{self.where('profile')}: {e}") from None
        providers.get(self.provider).check_profile(self, profile)
        return profile

    @property
    def declared(self) -> str:
        """The name of the table declaring the target (``kvm`` for the image cell ``kvm-cernvm5``)."""
        return self.table or self.name

    def where(self, key: str = "") -> str:
        """Where a key of this target is declared (or the option that overrode it), to start an error message with."""
        if key in self.overrides:
            return self.overrides[key]
        if self.image_label is not None and key in ("image", "profile"):
            return f"{self.origin}: targets.{self.declared}.images.{self.image_label}.{key}"
        return f"{self.origin}: targets.{self.declared}" + (f".{key}" if key else "")


@dataclass(frozen=True)
class Config:
    """All declared targets, in declaration order."""

    targets: Mapping[str, Target]
    origin: str = "built-in defaults"

    @property
    def enabled(self) -> list[str]:
        return [n for n, t in self.targets.items() if t.enabled]

    def aliases(self) -> dict[str, list[str]]:
        """Every name a user may select by: each target's own, and each table's (standing for its images)."""
        found: dict[str, list[str]] = {}
        for name, target in self.targets.items():
            found.setdefault(target.declared, []).append(name)
            found.setdefault(name, [name])
        return found


DEFAULT_TARGETS: dict[str, dict[str, Any]] = {
    "kvm": {"provider": "kvm", "image": APPLIANCE, "shared_folders": {"data": ""}},
    # CernVM in Docker, both documented ways: parrot inside the container, or the host's
    # /cvmfs bind-mounted ("" = a copy of the appliance's repository standing in for it).
    "docker": {"provider": "docker", "image": APPLIANCE, "mode": "parrot", "shared_folders": {"data": ""}},
    "docker-bindmount": {
        "provider": "docker",
        "image": APPLIANCE,
        "mode": "bindmount",
        "repositories": {"cernvm-prod.cern.ch": ""},
        "shared_folders": {"data": ""},
    },
}


def default_profile(image: str, target: str, where: str) -> str:
    """The appliance knows its profile, a CernVM release (µCernVM with the CernVM 4 OS) is ``cernvm4``; any other
    image must name one."""
    if appliance_variant(image) is not None:
        return APPLIANCE
    if image.startswith("release:"):
        return "cernvm4"
    raise ConfigError(
        f"{where}: target {target!r} boots image {redact(image)!r}, so it needs a profile "
        f"(shipped: {', '.join(profiles.shipped())}, or a path to a .toml file)"
    )


def parse_table(name: str, raw: Mapping[str, Any], origin: str, providers: Registry = registry) -> list[Target]:
    """One ``[targets.<name>]`` table: one target, or one per entry of its ``images`` (``<name>-<label>``)."""
    images = raw.get("images") if isinstance(raw, Mapping) else None
    if images is None:
        return [parse_target(name, raw, origin, providers=providers)]
    where = f"{origin}: targets.{name}"
    example = 'e.g. images = { appliance = "appliance", cernvm5 = { image = "/srv/u5.iso", profile = "cernvm5" } }'
    if not isinstance(images, Mapping) or not images:
        raise ConfigError(f"{where}.images: a table of label = image or label = {{ image, profile }}; {example}")
    both = [k for k in ("image", "profile") if k in raw]
    if both:
        raise ConfigError(f"{where}.{both[0]}: give either image (and profile) or images, not both; {example}")
    rest = {k: v for k, v in raw.items() if k != "images"}
    cells = []
    for label, entry in images.items():
        here = f"{where}.images.{label}"
        if not LABEL.match(label) or len(name) + 1 + len(label) > 24:
            raise ConfigError(
                f"{here}: invalid image label; use lowercase letters and digits, at most {23 - len(name)} of "
                f"them (target name, '-' and label within 24 characters)"
            )
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, Mapping) or "image" not in entry or set(entry) - {"image", "profile"}:
            raise ConfigError(f"{here}: an image (a string) or a table with image and, optionally, profile")
        entry = {**rest, **entry}
        cells.append(parse_target(f"{name}-{label}", entry, origin, table=name, image_label=label, providers=providers))
    return cells


def parse_target(
    name: str,
    raw: Mapping[str, Any],
    origin: str,
    *,
    table: str | None = None,
    image_label: str | None = None,
    providers: Registry = registry,
) -> Target:
    """Validate one target table: generic keys first, then the provider's own (found in ``providers``)."""
    where = f"{origin}: targets.{table or name}"
    image_where = f"{where}.images.{image_label}" if image_label else where
    if not NAME.match(name):
        raise ConfigError(
            f"{where}: invalid target name; use 1-24 lowercase letters, digits and '-', starting with a letter"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table, got {raw!r}")
    generic_names = list(TargetKeys.model_fields)
    if "provider" not in raw:
        raise ConfigError(
            f"{where}.provider: required key is missing; installed providers are {', '.join(providers.names())}"
        )
    try:
        provider = providers.get(str(raw["provider"]))
    except ConfigError as e:
        raise ConfigError(f"{where}.provider: {e}") from None
    option_names = list(provider.Options.model_fields)
    valid = sorted(generic_names + option_names + ["images"])
    generic = {k: v for k, v in raw.items() if k in generic_names}
    specific = {k: v for k, v in raw.items() if k not in generic_names}
    try:
        keys = TargetKeys.model_validate(generic)
        options = provider.Options.model_validate(specific)
    except ValidationError as e:
        raise ConfigError(profiles.format_validation(origin, e, f"targets.{table or name}.", valid)) from None
    if keys.shared_folders and not provider.shares_folders:
        raise ConfigError(f"{where}.shared_folders: provider {provider.name!r} cannot share host folders")
    for folder, path in keys.shared_folders.items():
        if not NAME.match(folder):
            raise ConfigError(
                f"{where}.shared_folders: invalid folder name {folder!r}; use lowercase letters, digits, '-'"
            )
        if path and not Path(path).expanduser().is_dir():
            raise ConfigError(f'{where}.shared_folders.{folder}: {path!r} is not a directory (use "" for a fresh one)')
    profile = keys.profile or default_profile(keys.image, name, image_where + ".profile")
    check_image(keys.image, image_where + ".image")
    target = Target(
        name=name,
        provider=provider.name,
        image=keys.image,
        profile=profile,
        options=options,
        enabled=keys.enabled,
        shared_folders=keys.shared_folders,
        deadlines=keys.deadlines,
        command_timeout=keys.command_timeout,
        host_key=keys.host_key,
        origin=origin,
        verification=keys.verification,
        table=table or name,
        image_label=image_label,
    )
    provider.check_image_name(target)
    return target


def parse(raw: Mapping[str, Any], origin: str, providers: Registry = registry) -> Config:
    """Validate a whole config mapping (the file's top level, or ``[tool.cernvm]``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin}: must be a table holding [targets.<name>] tables, got {raw!r}")
    unknown = sorted(set(raw) - {"targets"})
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)}; valid keys are: targets")
    targets = raw.get("targets")
    if not isinstance(targets, Mapping) or not targets:
        raise ConfigError(f"{origin}: no targets declared; add at least one [targets.<name>] table with a provider")
    cells = [target for name, table in targets.items() for target in parse_table(name, table, origin, providers)]
    found: dict[str, Target] = {}
    for target in cells:
        if target.name in found:
            raise ConfigError(
                f"{target.where()}: target {target.name!r} is declared twice "
                f"(as a table and as an image of targets.{found[target.name].declared or target.declared})"
            )
        found[target.name] = target
    return Config(found, origin)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _tool_table(raw: Mapping[str, Any], path: Path) -> Any:
    """``[tool.cernvm]`` of a pyproject.toml (None if absent); a ``tool`` that is not a table is an error."""
    tool = raw.get("tool", {})
    if not isinstance(tool, Mapping):
        raise ConfigError(f"{path}: tool: must be a table, got {tool!r}")
    return tool.get("cernvm")


def load(path: Path | None = None, rootdir: Path | None = None, providers: Registry = registry) -> Config:
    """Load the config from ``path``, else from the rootdir's files, else the defaults."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw = _read_toml(path)
        if path.name == "pyproject.toml":
            raw = _tool_table(raw, path)
            if raw is None:
                raise ConfigError(f"{path}: has no [tool.cernvm] table")
            return parse(raw, f"{path} [tool.cernvm]", providers)
        return parse(raw, str(path), providers)
    if rootdir is not None:
        candidate = rootdir / "cernvm.toml"
        if candidate.is_file():
            return parse(_read_toml(candidate), str(candidate), providers)
        pyproject = rootdir / "pyproject.toml"
        if pyproject.is_file():
            tool = _tool_table(_read_toml(pyproject), pyproject)
            if tool is not None:
                return parse(tool, f"{pyproject} [tool.cernvm]", providers)
    return parse({"targets": DEFAULT_TARGETS}, "built-in defaults", providers)
