"""The ELUE leaderboard website and submission service (FastAPI + SQLAlchemy + worker processes).

    from elue.server import create_app, Settings

(Imported lazily, so a scoring worker does not load the web stack.)
"""

from __future__ import annotations

__all__ = ["Settings", "create_app"]


def __getattr__(name: str):  # noqa: ANN202
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .config import Settings

        return Settings
    raise AttributeError(name)
