"""The run's pytest options and ini keys, read and checked once, when pytest starts: which targets (with a
command-line image or profile), the keep policy, where screenshots go.

A bad value stops the run with one error naming it as given, before anything is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from .. import config as configuration
from ..download import is_url, redact
from ..run import Keep


@dataclass(frozen=True)
class Selection:
    """What the options and ini keys select: the config, its targets (overrides applied), the keep policy."""

    config: configuration.Config
    targets: dict[str, configuration.Target]
    selected: list[str]
    """The selected targets' names, in the config's order."""
    refused: dict[str, str]
    """Targets that cannot take a value given for every target, and why (stops the run if their tests run)."""
    keep: Keep
    screens: Path | None
    """Where screenshots of failing instances go (None: the state directory's)."""


def read(config: pytest.Config) -> Selection:
    """The options and ini keys of this pytest run, checked (ConfigError naming the option or key)."""
    option = config.option
    path = getattr(option, "cernvm_config", None) or config.getini("cernvm_config") or None
    loaded = configuration.load(Path(path) if path else None, config.rootpath)
    ini = str(config.inipath.name) if config.inipath else "ini"
    asked = [n for arg in (getattr(option, "cernvm_targets", None) or []) for n in arg.split(",") if n]
    asked_by = "--cernvm-target"
    if not asked and config.getini("cernvm_targets"):
        asked, asked_by = config.getini("cernvm_targets"), f"{ini}: cernvm_targets"
    asked = asked or loaded.enabled
    aliases = loaded.aliases()
    unknown = [n for n in asked if n not in aliases]
    if unknown:
        raise configuration.ConfigError(
            f"{asked_by}: unknown target(s) {', '.join(unknown)}; {loaded.origin} declares {', '.join(aliases)}"
        )
    wanted = list(dict.fromkeys(cell for name in asked for cell in aliases[name]))
    aliases = {name: [c for c in cells if c in wanted] for name, cells in aliases.items()}
    releases = per_target(getattr(option, "cernvm_releases", None), "", aliases, "--cernvm-release", ini)
    images = {name: given._replace(value=f"release:{given.value}") for name, given in releases.items()}
    images.update(
        per_target(
            getattr(option, "cernvm_images", None), config.getini("cernvm_image"), aliases, "--cernvm-image", ini
        )
    )
    profiles = per_target(
        getattr(option, "cernvm_profiles", None), config.getini("cernvm_profile"), aliases, "--cernvm-profile", ini
    )
    targets, refused = {}, {}
    for name in wanted:
        image, profile = images.get(name), profiles.get(name)
        try:
            targets[name] = loaded.targets[name].with_overrides(
                image.value if image else None,
                profile.value if profile else None,
                image_from=image.origin if image else None,
                profile_from=profile.origin if profile else None,
            )
            targets[name].load_profile()
        except configuration.ConfigError as e:
            given = [o for o in (image, profile) if o is not None]
            if not given or not all(o.every for o in given):
                raise
            # A value for every target that this one cannot take (an appliance variant on docker): it stops the
            # run once its tests are collected, unless -k/-m deselected them (pytest -k kvm --cernvm-image ...).
            refused[name] = str(e)
            targets[name] = loaded.targets[name]
    if refused and (getattr(config, "workerinput", None) or getattr(option, "numprocesses", None)):
        raise configuration.ConfigError(  # xdist: -k/-m select on the workers, after they collected
            "\n".join(refused.values()) + "\n(with pytest-xdist the selection is not known when the options are "
            "checked: give the value to the targets that take it, --cernvm-image TARGET=IMAGE, or select those "
            "with --cernvm-target)"
        )
    keep = _keep(getattr(option, "cernvm_keep", None), config.getini("cernvm_keep"), ini)
    _check_image_base(getattr(option, "cernvm_image_base", None))
    _check_screens(config, ini)
    check_workers(config)
    return Selection(loaded, targets, wanted, refused, keep, _screens(config))


def _keep(option: str | None, ini_value: str, ini: str) -> Keep:
    """The keep policy: the option (argparse checked its choices), else the ini key, checked here."""
    try:
        return Keep(option or ini_value or "never")
    except ValueError:
        raise configuration.ConfigError(
            f"{ini}: cernvm_keep = {ini_value!r}: expected one of {', '.join(k.value for k in Keep)}"
        ) from None


def _check_image_base(base: str | None) -> None:
    """``--cernvm-image-base`` is where release files are published: a URL, checked before any test needs it."""
    if base and not is_url(base):
        raise configuration.ConfigError(
            f"--cernvm-image-base {redact(base)}: expected an http:// or https:// URL (where the release files are "
            "published, e.g. https://cernvm.cern.ch/releases/)"
        )


def _check_screens(config: pytest.Config, ini: str) -> None:
    """The screenshot directory must be one (or not exist yet): found at load, not when the first test fails."""
    option = getattr(config.option, "cernvm_screens", None)
    chosen = option or config.getini("cernvm_screens")
    if chosen and Path(chosen).exists() and not Path(chosen).is_dir():
        origin = "--cernvm-screens" if option else f"{ini}: cernvm_screens ="
        raise configuration.ConfigError(f"{origin} {chosen}: exists and is not a directory")


def _screens(config: pytest.Config) -> Path | None:
    """Where failure screenshots go: the option or ini key, else beside the JUnit file (a CI job's artifacts)."""
    chosen = getattr(config.option, "cernvm_screens", None) or config.getini("cernvm_screens")
    if chosen:
        return Path(chosen).resolve()
    junit = getattr(config.option, "xmlpath", None)
    return Path(junit).resolve().parent / "cernvm-screens" if junit else None


class Override(NamedTuple):
    """A value the command line (or the ini file) gives one target instead of its config's."""

    value: str
    origin: str
    """The option and the value as given, for messages: ``--cernvm-image kvm=x.iso``, ``--cernvm-image x.iso
    (target kvm)``, ``pytest.ini: cernvm_image = x.iso (target kvm)``."""
    every: bool = False
    """Given for every selected target (no ``TARGET=``)."""


def per_target(
    values: list[str] | None, ini_value: str, aliases: dict[str, list[str]], option: str, ini: str = "ini"
) -> dict[str, Override]:
    """Parse repeated ``[TARGET=]VALUE`` options into one :class:`Override` per target (a table name standing for
    its images); the last value for a target wins, the ini key's first."""
    found: dict[str, Override] = {}
    selected = [name for name, cells in aliases.items() if cells]
    given = [(f"{ini}: {option.removeprefix('--').replace('-', '_')} =", ini_value)] if ini_value else []
    for source, value in given + [(option, v) for v in values or []]:
        name, sep, rest = value.partition("=")
        if sep and configuration.NAME.match(name) and "/" not in name:
            origin = f"{source} {name}={redact(rest)}"
            if not aliases.get(name):
                raise configuration.ConfigError(f"{origin}: {name!r} is not a selected target ({', '.join(selected)})")
            found.update(dict.fromkeys(aliases[name], Override(rest, origin)))
        else:
            for cell in (c for cells in aliases.values() for c in cells):
                found[cell] = Override(value, f"{source} {redact(value)} (target {cell})", every=True)
    return found


WORKERS_OPTION = "--cernvm-workers"


def auto_workers(early: pytest.Config) -> int:
    """How many pytest-xdist workers a run of several targets gets by default: one per selected target (or image
    cell), at most one per core, so targets' tests overlap and not only their boots. 0 (no workers) with one
    target or core, without pytest-xdist, on a worker, when the user chose ``-n``/``--dist`` or ``-p no:xdist``,
    or with ``--cernvm-workers=0`` (ini ``cernvm_workers = 0``). A config this cannot read gets none: its error is
    reported when the run configures."""
    known = early.known_args_namespace
    if os.environ.get("PYTEST_XDIST_WORKER") or not early.pluginmanager.hasplugin("xdist"):
        return 0
    if getattr(known, "numprocesses", None) is not None or getattr(known, "dist", "no") != "no":
        return 0
    if getattr(known, "collectonly", False) or getattr(known, "help", False) or getattr(known, "version", False):
        return 0
    chosen = getattr(known, "cernvm_workers", None) or early.getini("cernvm_workers") or "auto"
    cores = len(os.sched_getaffinity(0))
    if chosen != "auto":
        try:
            return max(0, int(chosen))
        except ValueError:
            return 0  # refused with its name when the run configures (check_workers)
    try:
        path = getattr(known, "cernvm_config", None) or early.getini("cernvm_config") or None
        loaded = configuration.load(Path(path) if path else None, early.rootpath)
    except Exception:  # noqa: BLE001 - reported by the run's own configuration, with its name
        return 0
    asked = [n for arg in (getattr(known, "cernvm_targets", None) or []) for n in arg.split(",") if n]
    asked = asked or list(early.getini("cernvm_targets")) or loaded.enabled
    aliases = loaded.aliases()
    cells = {cell for name in asked for cell in aliases.get(name, [])}
    return min(cores, len(cells)) if len(cells) >= 2 and cores >= 2 else 0


def check_workers(config: pytest.Config) -> None:
    """``--cernvm-workers`` / ini ``cernvm_workers``: ``auto`` or a number of workers, else an error naming it."""
    option = getattr(config.option, "cernvm_workers", None)
    chosen = option or config.getini("cernvm_workers")
    if chosen and chosen != "auto" and not (chosen.isdigit()):
        origin = WORKERS_OPTION if option else "ini: cernvm_workers ="
        raise configuration.ConfigError(f"{origin} {chosen!r}: expected auto or a number of workers (0: none)")
