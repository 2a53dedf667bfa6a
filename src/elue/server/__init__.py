"""The ELUE leaderboard website and submission service (FastAPI + SQLAlchemy + a worker process).

from elue.server import create_app, Settings
"""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
