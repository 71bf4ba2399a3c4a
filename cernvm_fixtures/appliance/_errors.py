"""The one exception type of the appliance builder."""

from ..errors import CernvmError


class ApplianceError(CernvmError):
    """The appliance cannot be built; the message says what to do about it."""
