"""The Azure provider's doctor checks: the SDK, the subscription, and a management token from DefaultAzureCredential
(the only source of credentials); nothing secret printed, only which credential of the chain answered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...doctor import Check
from ...errors import CernvmError

if TYPE_CHECKING:
    from ...config import Target

CHAIN = "AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH, `az login`, or a managed identity"


def azure_checks(target: Target) -> list[Check]:
    """Each Azure prerequisite of ``target``: the subscription, then whether the credential chain gives a token."""
    from .clients import MANAGEMENT_SCOPE, credential, subscription_id

    try:
        subscription = subscription_id(target)
    except CernvmError as e:
        return [Check.problem("subscription", str(e), f'subscription = "<id>" in targets.{target.name}')]
    found = [Check.ok("subscription", subscription)]
    try:
        chain = credential(target.options.instance_discovery)
        chain.get_token(MANAGEMENT_SCOPE)
    except CernvmError as e:
        return [*found, Check.problem("azure-identity", str(e), "pip install 'cernvm-fixtures[azure]'")]
    except Exception as e:  # noqa: BLE001 - azure-identity's errors say which credentials it tried and why each failed
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [*found, Check.problem("credentials", f"DefaultAzureCredential got no token: {reason}", CHAIN)]
    answered = getattr(chain, "_successful_credential", None)
    source = type(answered).__name__ if answered is not None else "DefaultAzureCredential"
    return [*found, Check.ok("credentials", f"a management token from {source}")]
