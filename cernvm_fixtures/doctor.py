"""The doctor: every prerequisite a target needs on this host, checked, one line each with the exact fix.

``cernvm-fixtures doctor [TARGET...]`` prints the checks; the plugin runs the same
checks for the targets a session uses and stops with their message when one
cannot work, instead of failing every test the same way. Nothing here changes
the host: the fixes are for a person (or ``./dev setup``) to apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .config import Target

Severity = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Check:
    """One prerequisite: what was checked, what was found, and the exact fix when it is not met.

    ``warning``: the target works, but slower or degraded; ``problem``: the target cannot work.
    """

    what: str
    found: str
    severity: Severity = "ok"
    fix: str = ""

    @classmethod
    def ok(cls, what: str, found: str) -> Check:
        return cls(what, found)

    @classmethod
    def warning(cls, what: str, found: str, fix: str) -> Check:
        return cls(what, found, "warning", fix)

    @classmethod
    def problem(cls, what: str, found: str, fix: str) -> Check:
        return cls(what, found, "problem", fix)

    def line(self, target: str, width: int = 0) -> str:
        """``target  status  what: found[; fix: ...]``, the doctor's output format."""
        text = f"{target:<{width}}  {self.severity:<7}  {self.what}: {self.found}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


def running(*names: str) -> str | None:
    """The first of ``names`` that is the command name of a process on this host (as ``pgrep -x``), else None."""
    wanted = set(names)
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in wanted:
            return name
    return None


def device_access(path: Path, group: str) -> tuple[str, bool]:
    """``owner:group mode`` of a device, and whether ``group`` (or everyone) may read and write it."""
    import grp
    import pwd

    st = path.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        owner_group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        owner_group = str(st.st_gid)
    mode = st.st_mode & 0o777
    usable = (owner_group == group and mode & 0o060 == 0o060) or mode & 0o006 == 0o006
    return f"{owner}:{owner_group} {mode:04o}", usable


def checks(target: Target) -> list[Check]:
    """The checks of one target: its provider's own (``Provider.checks``), each failure turned into a problem."""
    from . import registry
    from .errors import CernvmError

    try:
        provider = registry.get(target.provider)
    except CernvmError as e:
        return [Check.problem("provider", str(e), f"pip install the package providing {target.provider!r}")]
    try:
        found = list(provider.checks(target))
    except CernvmError as e:
        found = [Check.problem("checks", str(e), "fix the error above, then run cernvm-fixtures doctor again")]
    return found


def report(targets: Iterable[Target]) -> tuple[list[str], bool]:
    """Lines for every check of every target, and whether any target cannot work (a ``problem``)."""
    targets = list(targets)
    width = max((len(t.name) for t in targets), default=0)
    lines, broken = [], False
    for target in targets:
        for check in checks(target):
            lines.append(check.line(target.name, width))
            broken = broken or check.severity == "problem"
    return lines, broken


def blocking(targets: Iterable[Target]) -> tuple[str, list[str]]:
    """For the plugin: the message stopping the session (empty if every target can work) and the warnings."""
    stop, warnings = [], []
    for target in targets:
        for check in checks(target):
            if check.severity == "problem":
                stop.append(check.line(target.name))
            elif check.severity == "warning":
                warnings.append(check.line(target.name))
    if not stop:
        return "", warnings
    head = "cernvm-fixtures doctor: these targets cannot work on this host (`cernvm-fixtures doctor` shows all checks):"
    return "\n".join([head, *stop]), warnings
