"""The project's own tests (``tests/``): the plugins they use, the markers their directories give, and the network
rule they run under. The scenario suite needs none of it (the cernvm plugin registers itself); a run of the
scenarios from this checkout only loads the test plugins' modules, which import no SDK until a fixture is used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent / "tests"

pytest_plugins = [
    "pytester",
    "tests.fakes.moto_server",
    "tests.fakes.openstack.fixtures",
    "tests.fakes.gce.fixtures",
    "tests.fakes.azure.fixtures",
    "tests.attack_matrix",
]
"""The emulators' and fakes' fixtures (``moto``, ``openstack_cloud``, ``gce``, ``azure_cloud``, ...) for every
test that asks for them, and pytest's own ``pytester``."""

DIRECTORY_MARKERS = {
    "integration": ("integration",),
    "appliance": ("appliance", "integration"),
    "live": ("live",),
}
"""The markers every test under ``tests/<directory>`` carries: ``-m "not integration and not slow"`` is the fast
tier (``./dev test``, ``tox -e unit``), ``-m "integration or slow"`` the real engines."""


@pytest.hookimpl(tryfirst=True)  # before pytest-socket's pytest_configure reads its options
def pytest_configure(config: pytest.Config) -> None:
    """A run of anything under ``tests/`` follows the network rule (tests/network_rule.py)."""
    where = config.invocation_params.dir
    paths = [(where / arg.split("::")[0]).resolve() for arg in config.args]
    if any(path == TESTS or TESTS in path.parents for path in paths):
        config.pluginmanager.import_plugin("tests.network_rule")


def pytest_itemcollected(item: pytest.Item) -> None:
    if TESTS in item.path.parents:
        for marker in DIRECTORY_MARKERS.get(item.path.relative_to(TESTS).parts[0], ()):
            item.add_marker(marker)


LONG_FIRST = (
    "integration/test_kvm_suite.py",
    "integration/test_kvm_checklist.py",
    "integration/test_validate.py",
    "integration/test_virtualbox.py",
    "integration/test_docker_suite.py",
    "integration/test_cloudinit.py",
    "integration/test_real_image_behaviour.py",
)
"""Modules whose tests each run a scenario suite (minutes of TCG boots): collected first, so that under
``--dist loadscope`` they start at once and the many short modules fill the other worker, instead of ending the
run with one worker busy and the other idle."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        relative = item.path.relative_to(TESTS).as_posix() if TESTS in item.path.parents else ""
        return LONG_FIRST.index(relative) if relative in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order
