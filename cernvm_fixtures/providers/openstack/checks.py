"""The OpenStack provider's doctor checks: the SDK and the cloud's configuration as openstacksdk itself reads it
(clouds.yaml, OS_CLOUD, OS_* variables), without any API call; only the cloud's name and auth URL are printed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...doctor import Check
from ...download import redact
from ...errors import CernvmError

if TYPE_CHECKING:
    from ...config import Target


def openstack_checks(target: Target) -> list[Check]:
    """Each OpenStack prerequisite of ``target`` that this host can show without calling the API."""
    from .api import openstacksdk

    cloud = target.options.cloud
    where = f"cloud {cloud!r}" if cloud else "OS_CLOUD / OS_* variables"
    try:
        openstack = openstacksdk()
        region = openstack.config.OpenStackConfig().get_one(cloud=cloud) if cloud else None
        if region is None:
            region = openstack.config.OpenStackConfig().get_one()
    except CernvmError as e:
        return [Check.problem("openstacksdk", str(e), "pip install 'cernvm-fixtures[openstack]'")]
    except Exception as e:  # noqa: BLE001 - openstacksdk's config errors: the message names the missing piece
        fix = f"a clouds.yaml entry for {cloud!r}" if cloud else "OS_CLOUD, or OS_AUTH_URL and the other OS_* variables"
        return [Check.problem("cloud configuration", f"openstacksdk cannot configure {where}: {e}", fix)]
    auth_url = (region.config.get("auth") or {}).get("auth_url")
    if not auth_url:
        fix = f"auth_url in the clouds.yaml entry for {cloud!r}" if cloud else "OS_AUTH_URL"
        return [Check.problem("cloud configuration", f"{where}: no auth URL", fix)]
    return [Check.ok("cloud configuration", f"{where} ({region.name or 'unnamed'}): auth at {redact(auth_url)}")]
