"""The GCE provider's doctor checks: the SDK, Application Default Credentials and the project, resolved by google.auth
itself (the only source of credentials) without any API call; nothing secret printed, only the kind of credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...doctor import Check
from ...errors import CernvmError

if TYPE_CHECKING:
    from ...config import Target


def gce_checks(target: Target) -> list[Check]:
    """Each GCE prerequisite of ``target`` that this host can show without calling the API."""
    from .api import credentials

    try:
        creds, project = credentials()
    except CernvmError as e:
        return [Check.problem("credentials", str(e), "pip install 'cernvm-fixtures[gce]' and set up ADC")]
    found = [Check.ok("credentials", f"Application Default Credentials ({type(creds).__name__})")]
    chosen = target.options.project or project
    if chosen:
        source = "the target's project" if target.options.project else "the credentials' project"
        found.append(Check.ok("project", f"{chosen} ({source})"))
    else:
        found.append(
            Check.problem(
                "project",
                "not set, and the Application Default Credentials name none",
                f'project = "my-project" in targets.{target.name}, or GOOGLE_CLOUD_PROJECT',
            )
        )
    return found
