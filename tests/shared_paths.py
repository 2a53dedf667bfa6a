"""Where tests find the real data. Import this module (not `conftest`: several conftest modules exist)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real ELUE-layout data: $ELUE_DATA_DIR or ../shared/data from the repo root; None if absent."""
    path = Path(os.environ.get("ELUE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    return path if (path / "sst-2").is_dir() else None
