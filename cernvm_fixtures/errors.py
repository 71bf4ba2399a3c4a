"""Errors a user can act on: each message names what is wrong and what would be valid."""

from __future__ import annotations

from typing import Protocol


class Capture(Protocol):
    """What a readiness error shows of the guest's screen (:class:`cernvm_fixtures.screen.Capture`); a protocol,
    so that this leaf module imports nothing of the package."""

    def describe(self) -> str: ...


class CernvmError(Exception):
    """Base class: the message is meant for a person, printed without a traceback."""


class ConfigError(CernvmError):
    """A config file, option or profile is invalid."""


class ProviderError(CernvmError):
    """A provider could not create, reach or destroy something."""


class PermanentError(ProviderError):
    """A failure no retry can fix (the machine was terminated, a forged host key): readiness stops at once."""


class ReadinessError(ProviderError):
    """An instance did not pass one readiness step before that step's deadline."""

    def __init__(
        self,
        instance: str,
        step: str,
        waited: float,
        detail: str,
        console_tail: str = "",
        network: str = "",
        screen: Capture | None = None,
    ) -> None:
        self.instance = instance
        self.step = step
        self.waited = waited
        self.detail = detail
        self.console_tail = console_tail
        self.network = network
        self.screen = screen
        """The guest's screen when the step failed: where its screenshot is (or why none), its text."""
        message = f"{instance}: not ready: step '{step}' failed after {waited:.1f} s: {detail}"
        if network:
            message += f"\nnetwork: {network}"
        if screen is not None:
            message += "\n" + screen.describe()
        if console_tail:
            message += f"\n--- console log (tail) ---\n{console_tail}\n--- end of console log ---"
        elif step != "running":
            message += (
                "\nthe serial console is empty (an image whose kernel line has no console=ttyS0, such as CernVM's "
                "ISO, prints its boot messages and errors only on the screen)"
            )
        super().__init__(message)


class ScreenUnavailable(CernvmError):
    """A machine's screen cannot be captured: the platform gives it no display, or offers no way to read it.

    The message is the reason, as a sentence ("a Docker container has no display").
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Unsupported(CernvmError):
    """The platform (or the instance's transport) cannot do what was asked; the message is the reason, as a
    sentence ("a Docker container has no ACPI power button")."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class CommandTimeout(CernvmError):
    """A command on an instance ran past its timeout and was stopped."""
