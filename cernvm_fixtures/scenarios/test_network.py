"""The network driver: the NIC is driven by the driver this platform should give it."""

import posixpath

from cernvm_fixtures import expect


def test_network_driver(cernvm):
    expected = expect(cernvm, "network.driver")
    interface = cernvm.expected("network.interface") or "eth0"
    result = cernvm.run(f"readlink /sys/class/net/{interface}/device/driver")
    assert result.succeeded, f"interface {interface} has no device driver: {result.stderr.strip()}"
    driver = posixpath.basename(result.stdout.strip())
    traits = ", ".join(f"{k}={v}" for k, v in sorted(cernvm.traits.items()))
    assert driver == expected, f"{interface} is driven by {driver}, expected {expected} ({traits})"
