"""Settings of one leaderboard deployment: where the database, the uploads and the answer keys live,
and the limits it enforces. Read from arguments first, then `ELUE_*` environment variables."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def default_state_dir() -> Path:
    """Where `elue serve` keeps its SQLite file and uploads: $ELUE_HOME or ./.elue (git-ignored)."""
    return Path(os.environ.get("ELUE_HOME", ".elue")).resolve()


def default_data_dir() -> Path | None:
    """The task data and answer keys: $ELUE_DATA_DIR, else ../shared/data (beside the working folder or
    the source checkout) if present."""
    env = os.environ.get("ELUE_DATA_DIR")
    if env:
        return Path(env).resolve()
    for candidate in (Path.cwd().parent / "shared" / "data", REPO_SHARED_DATA):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"${name}={raw!r} must be a positive number of seconds")
    return value


DEFAULT_EVALUATOR = "elue.submission:evaluate_submission"


def _env_flag(name: str) -> bool:
    """A 1/0 switch; anything else is refused (ELUE_TRUST_MODEL_CODE=true read as off without a word: a host without
    bubblewrap then failed every upload, each counted against its owner's limits)."""
    raw = os.environ.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"${name}={raw!r} must be 1 or 0")
    return raw == "1"


def _env_count(name: str, default: int, least: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a whole number") from None
    if value < least:
        raise ValueError(f"${name}={raw!r} must be at least {least}")
    return value


@dataclass
class Settings:
    state_dir: Path = field(default_factory=default_state_dir)
    database_url: str | None = None  # default: sqlite:///<state_dir>/elue.db
    data_dir: Path | None = field(default_factory=default_data_dir)  # task files + test_labels.tsv
    secret_key: str | None = None  # default: $ELUE_SECRET_KEY, else generated once and kept in the DB
    # uploads
    max_upload_bytes: int = 64 * 1024 * 1024  # compressed zip
    # any other request body (JSON, forms; a reported entry is a few KB): parsed whole before the route sees who
    # sent it, so it must stay small
    max_body_bytes: int = 1024 * 1024
    max_extracted_bytes: int = 512 * 1024 * 1024
    max_files: int = 200
    # operating points (test files) per task in one upload: each point's score is shown to its owner, so n
    # points that differ in one row each tell n - 1 answers; the limits below bound how fast a key leaks
    max_points: int = 20
    # uncompressed / compressed over the whole archive, checked once it unpacks to more than ratio_min_bytes
    # (test files' traces compress well, so small archives may exceed the ratio honestly)
    max_ratio: float = 200.0
    ratio_min_bytes: int = 32 * 1024 * 1024
    # per-user submission limits (admins are exempt)
    daily_limit: int = field(default_factory=lambda: _env_count("ELUE_DAILY_LIMIT", 5, 1))
    monthly_limit: int = field(default_factory=lambda: _env_count("ELUE_MONTHLY_LIMIT", 30, 1))
    # accounts one client address may create per 24 h (0: no limit); without it the per-user limits above could
    # be multiplied by signing up again
    signup_limit: int = field(default_factory=lambda: _env_count("ELUE_SIGNUP_LIMIT", 10, 0))
    # worker
    evaluator: str = DEFAULT_EVALUATOR  # "module:function"
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.5
    max_attempts: int = 3
    # scoring limits the server imposes, shorter than the toolkit's defaults: one hostile model.py (e.g.
    # one that sleeps; sleeping costs no CPU) must not hold a worker for long. sandbox_wall_s goes to the
    # toolkit's sandbox (wall clock and CPU seconds of model.py); scoring_timeout_s bounds the whole job,
    # after which the worker kills the scoring process ($ELUE_SANDBOX_WALL_S, $ELUE_SCORING_TIMEOUT_S)
    sandbox_wall_s: float = field(default_factory=lambda: _env_seconds("ELUE_SANDBOX_WALL_S", 120.0))
    scoring_timeout_s: float = field(default_factory=lambda: _env_seconds("ELUE_SCORING_TIMEOUT_S", 300.0))
    # run uploaded model.py without bubblewrap: only for a private deployment on a host without it, whose
    # uploads come from people you trust ($ELUE_TRUST_MODEL_CODE=1)
    trust_model_code: bool = field(default_factory=lambda: _env_flag("ELUE_TRUST_MODEL_CODE"))
    # the address users reach the site at, shown in the guide's `elue submit --server ...` line; from
    # settings, never from a request's Host header (the guide is cached for every visitor)
    public_url: str = field(
        default_factory=lambda: os.environ.get("ELUE_PUBLIC_URL") or "http://127.0.0.1:8000"
    )
    # session cookies only over https: None follows $ELUE_SECURE_COOKIES (1 or 0), else whether public_url
    # is https (a site behind a TLS proxy is served over http but reached over https)
    secure_cookies: bool | None = None
    cache_seconds: float = 0.5  # how often a web process checks the database for changed results (0: always)
    page_cache_seconds: float = 30.0  # longest an unchanged anonymous page is served from memory

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if self.database_url is None:
            self.database_url = (
                os.environ.get("ELUE_DATABASE_URL") or f"sqlite:///{self.state_dir / 'elue.db'}"
            )
        if self.secret_key is None:
            self.secret_key = os.environ.get("ELUE_SECRET_KEY")
        self.evaluator = os.environ.get("ELUE_EVALUATOR", self.evaluator)
        self.public_url = str(self.public_url).rstrip("/")
        if self.secure_cookies is None:
            raw = os.environ.get("ELUE_SECURE_COOKIES", "").strip()
            if raw not in ("", "0", "1"):
                raise ValueError(f"$ELUE_SECURE_COOKIES={raw!r} must be 1 or 0")
            self.secure_cookies = raw == "1" if raw else self.public_url.lower().startswith("https://")
        for name in ("sandbox_wall_s", "scoring_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")

    @property
    def upload_dir(self) -> Path:
        return self.state_dir / "uploads"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "uploads" / ".staging"

    @property
    def scoring_dir(self) -> Path:
        """The worker's temporary files (the sandbox's copy of model.py), per job: uploads/.scoring/<key>/."""
        return self.upload_dir / ".scoring"

    def ensure_dirs(self) -> None:
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def to_env(self) -> dict[str, str]:
        """What a worker process needs to see the same deployment."""
        env = {
            "ELUE_HOME": str(self.state_dir),
            "ELUE_DATABASE_URL": str(self.database_url),
            "ELUE_SANDBOX_WALL_S": str(self.sandbox_wall_s),
            "ELUE_SCORING_TIMEOUT_S": str(self.scoring_timeout_s),
            "ELUE_PUBLIC_URL": self.public_url,
            "ELUE_SECURE_COOKIES": "1" if self.secure_cookies else "0",
            "ELUE_DAILY_LIMIT": str(self.daily_limit),
            "ELUE_MONTHLY_LIMIT": str(self.monthly_limit),
            "ELUE_SIGNUP_LIMIT": str(self.signup_limit),
        }
        if self.data_dir is not None:
            env["ELUE_DATA_DIR"] = str(self.data_dir)
        return env
