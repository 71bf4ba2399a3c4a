"""The power button in the provider contract: KVM presses libvirt's ACPI button and sees the domain end; every
other provider says why it has none, and the default Machine refuses with that reason."""

from __future__ import annotations

import libvirt
import pytest

from cernvm_fixtures import providers
from cernvm_fixtures.errors import ProviderError, Unsupported
from cernvm_fixtures.providers.kvm import KvmMachine


class Gone(libvirt.libvirtError):
    def __init__(self, code: int) -> None:
        Exception.__init__(self, "gone")
        self.code = code

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return f"error {self.code}"


class Domain:
    def __init__(self) -> None:
        self.pressed: list[int] = []
        self.state: bool | Exception = True

    def shutdownFlags(self, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.pressed.append(flags)

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        if isinstance(self.state, Exception):
            raise self.state
        return self.state


def machine(domain: Domain | None) -> KvmMachine:
    found = KvmMachine.__new__(KvmMachine)
    found.name, found.domain = "cvmfx-test", domain
    return found


def test_kvm_presses_the_acpi_button_and_sees_the_domain_end():
    domain = Domain()
    m = machine(domain)
    m.press_power_button()
    assert domain.pressed == [libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN]
    assert m.is_running()
    domain.state = False
    assert not m.is_running()
    domain.state = Gone(libvirt.VIR_ERR_NO_DOMAIN)  # a transient domain is gone once the guest powered off
    assert not m.is_running()
    domain.state = Gone(libvirt.VIR_ERR_INTERNAL_ERROR)
    with pytest.raises(ProviderError, match="cvmfx-test"):
        m.is_running()
    with pytest.raises(ProviderError, match="not started"):
        machine(None).press_power_button()


def test_every_provider_says_whether_it_has_a_power_button():
    assert providers.get("kvm").no_power_button is None and providers.get("virtualbox").no_power_button is None
    assert "container" in (providers.get("docker").no_power_button or "")
    for name in ("ec2", "gce", "azure", "openstack"):
        reason = providers.get(name).no_power_button
        assert reason and reason.startswith("not implemented"), (name, reason)


def test_a_machine_without_a_power_button_refuses_with_the_reason():
    from cernvm_fixtures.testing.local import LocalMachine

    m = LocalMachine.__new__(LocalMachine)
    m.name = "local-1"
    m.provider = type("P", (), {})()  # only its type's attributes are read
    type(m.provider).name = "local"
    type(m.provider).no_power_button = "a process tree has no ACPI"
    with pytest.raises(Unsupported, match="local: a process tree has no ACPI"):
        m.press_power_button()
    from cernvm_fixtures.providers.base import Machine

    with pytest.raises(Unsupported):
        Machine.is_running(m)  # the default: a provider that cannot tell says so
