"""The provider contract suite on the local provider (fast tier): the suite itself is tested here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.run import Run
from cernvm_fixtures.testing.contract import Objects, ProviderContract
from cernvm_fixtures.testing.local import PROFILE, LocalProvider, machines_under

CONFIG = f"""
[targets.contract]
provider = "local"
profile = "{PROFILE}"
"""


class TestLocalContract(ProviderContract):
    @pytest.fixture(scope="class")
    @classmethod
    def contract_target(cls, local_site) -> config.Target:
        return config.parse_target("contract", {"provider": "local", "profile": PROFILE}, "local contract")

    @pytest.fixture(scope="class")
    @classmethod
    def contract_objects(cls) -> Objects:
        def objects(run: Run) -> set[str]:
            directories = {p.name for p in (run.directory / "machines").glob("*")}
            return set(machines_under(run.directory)) | directories

        return objects

    @pytest.fixture
    def contract_intercept(self) -> Callable[[Callable[[], None]], object]:
        @contextmanager
        def intercept(on_create: Callable[[], None]) -> Iterator[None]:
            original = LocalProvider.start

            def start(provider, *args, **kwargs):
                on_create()
                return original(provider, *args, **kwargs)

            LocalProvider.start = start
            try:
                yield
            finally:
                LocalProvider.start = original

        return intercept

    @pytest.fixture
    def contract_child(self, local_site) -> tuple[str, dict[str, str]]:
        return CONFIG, {}

    @pytest.mark.parametrize(
        "keep,failed,kept",
        [("never", True, False), ("always", False, True), ("never", False, False), ("always", True, True)],
    )
    def test_keep_policy_table(self, run, contract_target, contract_objects, keep, failed, kept):
        """The rest of the keep table (the contract boots one kept and one destroyed machine per provider)."""
        self.test_keep_policy(run, contract_target, contract_objects, keep, failed, kept)
