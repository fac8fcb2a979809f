"""Shared fixtures: paths to the real CT in ../shared/data (read, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalseg-example"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ct.nii.gz").exists():
        pytest.fail(f"shared test data missing: {SHARED_DATA} (CI clones with ../shared beside the repo)")
    return SHARED_DATA
