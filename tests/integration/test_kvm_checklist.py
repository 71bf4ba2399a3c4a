"""The release checklist's negative side on KVM: each checklist variant of the appliance fails exactly its line.

A module of its own (the rows and the runner are test_kvm_suite.py's), so that under ``--dist loadscope`` it runs on
one worker while the KVM suite runs on the other: each is a quarter of an hour of TCG boots.
"""

from __future__ import annotations

from .test_kvm_suite import CHECKLIST_NEGATIVE, run_negative


def test_each_checklist_variant_fails_exactly_its_line(tmp_path):
    result, found = run_negative(tmp_path, CHECKLIST_NEGATIVE)
    expected = {f"{name}[kvm-b{i}]" for i, (_, _, failing, _) in enumerate(CHECKLIST_NEGATIVE, 1) for name in failing}
    assert {name for name, status in found.items() if status == "FAILED"} == expected, result.output[-8000:]
    assert {status for name, status in found.items() if name not in expected} == {"PASSED"}, found
    assert result.returncode == 1
