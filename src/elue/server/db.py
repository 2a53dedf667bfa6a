"""The leaderboard's tables (SQLAlchemy 2) and how to open the database.

The schema is owned by the Alembic migrations in `migrations/`; `open_database` runs them to head, so
a fresh SQLite file or an empty PostgreSQL database is ready after one call.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

# submission states
QUEUED, RUNNING, SCORED, FAILED = "queued", "running", "scored", "failed"
# a deleted submission stays as a tombstone row (files, results and texts gone): its id is never
# reused (SQLite would hand out max(id)+1 again) and it still counts toward the owner's upload limits
DELETED = "deleted"
# origins (spec §5)
MEASURED, REPORTED = "measured", "reported"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the client address of the sign-up (None: made by the admin or the CLI): the sign-up limit counts these
    signup_address: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    # Sessions are signed cookies; a cookie counts only while it carries the user's current epoch, so
    # log-out (which bumps it) revokes every copy of the cookie, not just the browser's own.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown to the user to tell tokens apart
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship(back_populates="tokens")


class Submission(Base):
    """One leaderboard entry: a measured upload (queued -> running -> scored/failed) or a reported one."""

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(16), default=MEASURED)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)  # by an admin
    paper_url: Mapped[str] = mapped_column(String(500), default="")
    code_url: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    params_m: Mapped[float | None] = mapped_column(Float, nullable=True)  # largest over its points
    storage_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # uploads/<key>/
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # the queue: who holds the job and until when (a dead worker's lease runs out; the job is retaken)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[User | None] = relationship()
    tasks: Mapped[list[TaskResult]] = relationship(
        back_populates="submission", cascade="all, delete-orphan", order_by="TaskResult.task"
    )


class TaskResult(Base):
    """A submission's result on one dataset; `reported_score` only for reported entries that give one."""

    __tablename__ = "task_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(32), index=True)
    params_m: Mapped[float | None] = mapped_column(Float, nullable=True)
    reported_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    submission: Mapped[Submission] = relationship(back_populates="tasks")
    points: Mapped[list[Point]] = relationship(
        back_populates="task_result", cascade="all, delete-orphan", order_by="Point.mflops"
    )


class Point(Base):
    """One operating point: a test file's performance and mean MFLOPs."""

    __tablename__ = "points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_result_id: Mapped[int] = mapped_column(ForeignKey("task_results.id", ondelete="CASCADE"), index=True)
    file: Mapped[str] = mapped_column(String(300), default="")
    mflops: Mapped[float] = mapped_column(Float)
    performance: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    examples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    task_result: Mapped[TaskResult] = relationship(back_populates="points")


class Baseline(Base):
    """The admin's choice of baseline entry for each dataset (spec §4: the baseline is data)."""

    __tablename__ = "baselines"
    task: Mapped[str] = mapped_column(String(32), primary_key=True)
    submission_id: Mapped[int | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="SET NULL"), nullable=True
    )


class Meta(Base):
    """Small key/value facts of the deployment (secret key, seed marker)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LoginFailure(Base):
    """One failed (or still running) log-in attempt per row, keyed by user name and client address: the
    log-in throttle's memory, in the database so that every web process counts the same attempts."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(320), index=True)
    # unix time: the same in every process, unlike a monotonic clock
    at: Mapped[float] = mapped_column(Float, index=True)


BOARD_VERSION = "board_version"


def bump_board_version(session) -> None:  # noqa: ANN001
    """Mark the public results as changed (within the caller's transaction): every web process
    rebuilds its cached board when it sees a new value."""
    import uuid

    session.merge(Meta(key=BOARD_VERSION, value=uuid.uuid4().hex))


def read_board_version(session) -> str | None:  # noqa: ANN001
    return session.execute(select(Meta.value).where(Meta.key == BOARD_VERSION)).scalar()


WORKER_SEEN = (
    "worker_seen"  # unix time a scoring worker last looked for work (written every WORKER_SEEN_EVERY_S)
)
WORKER_SEEN_EVERY_S = 30.0


def note_worker_seen(session) -> None:  # noqa: ANN001
    now = repr(time.time())
    if session.execute(update(Meta).where(Meta.key == WORKER_SEEN).values(value=now)).rowcount == 0:
        session.add(Meta(key=WORKER_SEEN, value=now))
    try:
        session.commit()
    except IntegrityError:  # another worker made the row at the same moment: it says the same
        session.rollback()


def scoring_is_stalled(session) -> bool:  # noqa: ANN001
    """No scoring worker has looked for work lately (none runs: `--workers 0` and no `elue worker`, or all lack
    the answer keys) and none holds a job: queued submissions wait."""
    raw = session.execute(select(Meta.value).where(Meta.key == WORKER_SEEN)).scalar()
    try:
        if raw is not None and time.time() - float(raw) < 3 * WORKER_SEEN_EVERY_S:
            return False
    except ValueError:
        pass
    held = select(Submission.id).where(Submission.status == RUNNING, Submission.lease_expires_at > utcnow())
    return session.execute(held.limit(1)).first() is None


def waits_for_a_worker(session, sub: Submission) -> bool:  # noqa: ANN001
    """`sub` waits to be scored and no worker is at work: running too, as a job whose worker was killed (its lease
    runs out) waits for another as a queued one does. What the submission page and the API's answer say."""
    return sub.status in (QUEUED, RUNNING) and scoring_is_stalled(session)


MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(conn):  # noqa: ANN001, ANN201
    """An Alembic config for our migrations that runs on `conn` (an open connection)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (or `revision`)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # web processes started side by side on an empty database (`uvicorn ... --workers N`) raced to
            # create the tables (a duplicate-key error); with this lock the later ones find the schema made
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_ID})
        elif conn.dialect.name == "sqlite":
            # the same race on a new SQLite file ("table alembic_version already exists"): the write lock, taken
            # before Alembic reads the revision, holds the others until the schema is made (SQLite's DDL is
            # transactional)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        command.upgrade(alembic_config(conn), revision)


def head_revision() -> str:
    """The newest schema revision this elue has (its migrations' head)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def schema_mismatch(engine: Engine) -> tuple[str, str | None] | None:
    """None when the database's schema is this elue's (its head revision); else `("newer", rev)` for a revision
    this elue does not know (made or upgraded by a newer elue), `("older", rev)` for an older one, `rev` None for
    a database without the tables. What a worker, which never migrates, checks before it takes a job."""
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:  # read as Alembic keeps it (its MigrationContext logs two lines each time)
        has_table = inspect(conn).has_table("alembic_version")
        current = (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if has_table else None
        )
    script = ScriptDirectory.from_config(alembic_config(None))
    if current == script.get_current_head():
        return None
    if current is None:
        return ("older", None)
    known = {rev.revision for rev in script.walk_revisions()}
    return ("older", current) if current in known else ("newer", current)


MIGRATE_LOCK_ID = 0x454C554D  # "ELUM": the advisory lock that serialises migrations (not the names lock)


def open_database(url: str, *, upgrade: bool = True) -> tuple[Engine, sessionmaker]:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    if upgrade:
        migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
