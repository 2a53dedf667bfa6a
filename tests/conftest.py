"""Shared fixtures. Real data: `ELUE_DATA_DIR` (default ../shared/data from the repo root)."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_paths import REPO_ROOT, shared_data_dir  # noqa: F401  (re-exported for old imports)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real ELUE-layout data (../shared/data or $ELUE_DATA_DIR); skips when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real ELUE data not found: set ELUE_DATA_DIR")
    return path


@pytest.fixture
def priced_once(monkeypatch):
    """Submissions evaluated in this test price each distinct model.py and calls once per session (the real
    sandbox worker the first time): for tests about what follows pricing, not about the sandbox."""
    from toolkit_fixtures import memo_price_model

    import elue.submission

    monkeypatch.setattr(elue.submission, "price_model", memo_price_model(elue.submission.price_model))
