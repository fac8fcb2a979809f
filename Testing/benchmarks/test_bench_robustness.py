"""``obmd bench robustness``'s cases, each run as a user would (a child ``obmd analyze``): refused, or no
category, or (the control) a backed category; never a traceback, a changed input or a mixed output."""

from __future__ import annotations

from pathlib import Path

import pytest

from OpportunisticBMDLib.benchmarks._bad_inputs import CASES, Shared
from OpportunisticBMDLib.benchmarks.robustness import MAX_REFUSAL_S, run_case


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_case(name: str, shared_data: Path, tmp_path: Path) -> None:
    row = run_case(CASES[name], tmp_path, Shared(shared_data))
    assert not row.traceback, row
    assert not row.inputs_changed, row
    assert not row.mixed_outputs, row
    assert row.expectation_met, row
    if CASES[name].expect.outcome != "category":
        assert not row.category_reported, row
    if CASES[name].expect.outcome == "refused" and CASES[name].expect.before_model:  # before any heavy work
        assert row.seconds <= MAX_REFUSAL_S, row
