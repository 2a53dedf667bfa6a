"""Shared fixtures. Real data: `ELUE_DATA_DIR` (default ../shared/data from the repo root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    path = Path(os.environ.get("ELUE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    return path if (path / "sst-2").is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real ELUE-layout data (../shared/data or $ELUE_DATA_DIR); skips when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real ELUE data not found: set ELUE_DATA_DIR")
    return path
