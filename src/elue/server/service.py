"""What the site does, independent of HTTP: accounts, tokens, submissions, the admin's choices, and
the seed. Routes, the CLI and tests call these functions; each one is one transaction."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import re
import secrets
import shutil
import unicodedata
from contextlib import contextmanager
from importlib import resources

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from elue.scoring import BaselineError, validate_points
from elue.tasks import TASK_NAMES, get_task

from . import storage
from .board import visible_condition
from .config import Settings
from .db import (
    DELETED,
    QUEUED,
    REPORTED,
    SCORED,
    ApiToken,
    Baseline,
    Meta,
    Point,
    Submission,
    TaskResult,
    User,
    bump_board_version,
    utcnow,
)
from .security import hash_password, hash_token, new_api_token, verify_password

log = logging.getLogger("elue.server")


class ServiceError(ValueError):
    """A refused request; the message is for the user. `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, for a 429: sent as Retry-After


def _wait_text(seconds: float) -> str:
    """`3 h 12 min`, `12 min`, `40 s`."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


# ---------------------------------------------------------------- accounts
def create_user(
    s: Session,
    username: str,
    password: str,
    *,
    is_admin: bool = False,
    address: str | None = None,
    settings: Settings | None = None,
) -> User:
    """A new account. `address` (a sign-up through the site): at most `settings.signup_limit` accounts per
    client address in 24 h."""
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise ServiceError("user names are 3-32 characters: letters, digits, '_', '.', '-'")
    _check_password(password)
    password_hash = hash_password(password)  # slow (scrypt): before the lock
    # the checks and the insert under one lock: two sign-ups of one name at the same moment (a double-clicked
    # form) both passed the check before, and the second was a 500, or in another case a second account
    _exclusive(s, SIGNUP_LOCK_ID, "signups")
    try:
        if s.scalar(select(User).where(func.lower(User.username) == username.lower())) is not None:
            raise ServiceError("that user name is taken", 409)
        if address is not None and settings is not None and settings.signup_limit > 0:
            since = utcnow() - dt.timedelta(days=1)
            made = s.scalar(
                select(func.count(User.id)).where(
                    User.signup_address == address[:64], User.created_at > since
                )
            )
            if made >= settings.signup_limit:
                raise ServiceError(
                    f"{settings.signup_limit} accounts were made from your address in the last 24 hours: "
                    "try again tomorrow, or ask the site's admin",
                    429,
                )
        user = User(
            username=username,
            password_hash=password_hash,
            is_admin=is_admin,
            signup_address=address[:64] if address is not None else None,
        )
        s.add(user)
        s.commit()
    except IntegrityError:  # a writer that does not take the lock (the unique index is the last guard)
        s.rollback()
        raise ServiceError("that user name is taken", 409) from None
    except BaseException:
        s.rollback()
        raise
    return user


SIGNUP_LOCK_ID = 0x454C5555  # PostgreSQL advisory lock of the sign-ups ("ELUU")
BASELINES_LOCK_ID = 0x454C5542  # and of the admin's baseline choices ("ELUB")
SEED_LOCK_ID = 0x454C5553  # and of the first start's seed and secret key ("ELUS")


def _lock(s: Session, lock_id: int, meta_key: str) -> None:
    """Hold a lock until the transaction ends. PostgreSQL: the advisory lock `lock_id`; SQLite: the
    database's write lock (an update that changes nothing, of the meta row `meta_key`), which must be the
    transaction's first statement, or its reads could be older than another writer's commit."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(lock_id)))
    else:
        s.execute(update(Meta).where(Meta.key == meta_key).values(value=Meta.value))


def _exclusive(s: Session, lock_id: int, meta_key: str) -> None:
    """End any read transaction and start one that holds `_lock(lock_id, meta_key)`."""
    s.commit()
    _lock(s, lock_id, meta_key)


@contextmanager
def _rollback_on_refusal(s: Session):
    """A refusal ends the transaction (and the locks it holds) before it reaches the caller."""
    try:
        yield
    except ServiceError:
        s.rollback()
        raise


@functools.cache
def _dummy_password_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def warm_up_log_in() -> None:
    """Make the dummy hash now (at start), so that no log-in pays for it."""
    _dummy_password_hash()


def authenticate(s: Session, username: str, password: str) -> User | None:
    # names are unique in any case (sign-up compares them so): "alice" logs in to "Alice", as a phone's keyboard
    # capitalises the first letter. No name holds a NUL (PostgreSQL refuses one even in a query: a 500 before)
    name = username.strip().lower()
    query = select(User).where(func.lower(User.username) == name)
    user = None if "\x00" in name else s.scalars(query).first()
    if user is None:
        # as long as a known name's check (one scrypt): hashing a dummy here as well took two, so an unknown name
        # answered measurably slower and told which names have accounts
        verify_password(password, _dummy_password_hash())
        return None
    return user if verify_password(password, user.password_hash) else None


def ensure_admin(s: Session, username: str, password: str | None = None) -> tuple[User, str | None]:
    """The admin account of `elue serve --admin NAME` (the name compared as sign-up compares it). Returns the
    user and the password made for it, if one was made (to be shown once):
    - no such account: created, with `password` or a random one;
    - an admin already: kept, its password set to `password` when one is given;
    - an ordinary account: made admin only when `password` is its password. Anyone could have signed up
      under that name before the operator chose it; promoting such an account would hand them the site."""
    username = username.strip()
    user = s.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if user is None:
        made = None if password else secrets.token_urlsafe(12)
        return create_user(s, username, password or made, is_admin=True), made
    if user.is_admin:
        if password and not verify_password(password, user.password_hash):
            change_password(s, user, password)
        return user, None
    if not (password and verify_password(password, user.password_hash)):
        raise ServiceError(
            f"{user.username!r} is an ordinary account (made by signing up), so it is not made admin without "
            "its password: set ELUE_ADMIN_PASSWORD to that account's password, or choose another admin name"
        )
    user.is_admin = True
    s.commit()
    return user, None


def change_password(s: Session, user: User, new_password: str) -> None:
    """A new password; every session of the user ends (the one asking logs in again). API tokens stay."""
    _check_password(new_password)
    user.password_hash = hash_password(new_password)
    user.session_epoch = (user.session_epoch or 0) + 1
    s.commit()


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise ServiceError("passwords need at least 8 characters")


# API tokens one user may hold: without a bound, one account could add rows without end (a token from a session
# costs the site nothing to make)
MAX_TOKENS = 50


MAX_TOKEN_NAME = 100  # the column's size


def create_token(s: Session, user: User, name: str = "") -> tuple[ApiToken, str]:
    held = s.scalar(select(func.count(ApiToken.id)).where(ApiToken.user_id == user.id))
    if held >= MAX_TOKENS:
        raise ServiceError(f"you hold {held} API tokens, the most there may be: revoke one first", 409)
    name = _text(name, len(name or ""))
    if len(name) > MAX_TOKEN_NAME:  # it was cut at 100 without a word, as descriptions once were
        raise ServiceError(f"the token name has {len(name):,} characters: at most {MAX_TOKEN_NAME}")
    token = new_api_token()
    row = ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:12])
    s.add(row)
    s.commit()
    return row, token


def user_from_token(s: Session, token: str) -> User | None:
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        return None
    row.last_used_at = utcnow()
    s.commit()
    return s.get(User, row.user_id)


def delete_token(s: Session, user: User, token_id: int) -> None:
    row = s.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise ServiceError("no such token", 404)
    s.delete(row)
    s.commit()


# ---------------------------------------------------------------- submissions
def check_limits(s: Session, user: User, settings: Settings) -> None:
    """Refuse with 429 over the daily / monthly limit. Every accepted upload counts, also one deleted
    since (deleted submissions stay as tombstone rows)."""
    if user.is_admin:
        return
    now = utcnow()
    for what, limit, window, span in (
        ("daily", settings.daily_limit, dt.timedelta(days=1), "24 hours"),
        ("monthly", settings.monthly_limit, dt.timedelta(days=30), "30 days"),
    ):
        times = s.scalars(
            select(Submission.created_at)
            .where(Submission.owner_id == user.id, Submission.created_at >= now - window)
            .order_by(Submission.created_at)
        ).all()
        if len(times) >= limit:
            # the next one is possible once enough of these leave the window: a script can wait that long
            # (Retry-After) instead of guessing (the answer said only that the limit was reached)
            wait = (times[len(times) - limit] + window - now).total_seconds()
            raise ServiceError(
                f"{what} limit reached: {limit} submissions per {span}; the next one is possible in "
                f"{_wait_text(wait)}",
                429,
                retry_after=wait,
            )


def _lock_user(s: Session, user: User | None, names: bool = False) -> None:
    """Start a transaction that holds write locks until commit/rollback. `user`: the user's row, so that the
    limit check and the insert of one upload are serialised against the user's parallel uploads; `names`:
    the public names (`lock_public_names`). PostgreSQL: row and advisory locks; SQLite: the database's write
    lock, taken by the first statement."""
    s.commit()  # end any read transaction: on SQLite the lock must be the transaction's first statement
    if names:
        lock_public_names(s)
    if user is not None:
        s.execute(update(User).where(User.id == user.id).values(session_epoch=User.session_epoch))


NAMES_LOCK_ID = 0x454C5545  # PostgreSQL advisory lock of the public names ("ELUE")


def lock_public_names(s: Session) -> None:
    """Make the check and the claim of a public name one step: taken before `check_name_free`, held until the
    transaction ends, so of two users who publish one name at the same moment one gets the 409 (`_lock`:
    on SQLite the transaction's first statement)."""
    _lock(s, NAMES_LOCK_ID, "public-names")


DELETED_NAME = "(deleted)"  # what a deleted entry's row keeps as its name


# Characters that show nothing (Unicode's Default_Ignorable_Code_Point outside category C, and blank
# fillers): a name with one looks like the name without it.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


def _invisible(ch: str) -> bool:
    if unicodedata.category(ch).startswith("C"):  # controls, format characters, surrogates, unassigned
        return True
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _INVISIBLE_RANGES)


def _clean_name(name: str) -> str:
    # invisible characters (zero-width spaces, direction marks, variation selectors, fillers) would let two
    # names look the same; runs of white space count as one space
    name = "".join(ch for ch in (name or "") if not _invisible(ch) or ch in " \t")
    name = " ".join(name.split())
    if not name or len(name) > 200:
        raise ServiceError("give the model a name (1-200 characters)")
    if _name_key(name) == _name_key(DELETED_NAME):
        raise ServiceError(f"{name!r} is reserved: choose another name")
    return name


# Letters and dashes that NFKC keeps apart but the eye does not (Unicode TR39's confusables, the common ones
# for names written in Latin letters): Cyrillic and Greek capitals drawn like Latin capitals (folded before
# case-folding, which would merge Greek M with the micro sign: "μBERT" is not "mBERT"), small letters drawn like
# Latin small ones (after it), and the dashes and the minus sign as "-". "ElasticBERT–BASE" (an en dash) or
# "ElasticBERT-ВASE" (a Cyrillic В) passed as another name than the seeded ElasticBERT-BASE.
_LOOKALIKE_CAPITALS = str.maketrans(
    {
        **dict(zip("АВЕКМНОРСТХІЈЅ", "ABEKMHOPCTXIJS", strict=True)),  # Cyrillic
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),  # Greek
    }
)
_LOOKALIKES = str.maketrans(
    {
        **dict(zip("аеорсухіјѕԁԛԝһӏ", "aeopcyxijsdqwhl", strict=True)),  # Cyrillic
        **dict(zip("αοριχν", "aopixv", strict=True)),  # Greek
        # hyphens, figure, en and em dashes, the bar, the minus sign, small and two/three-em dashes
        **dict.fromkeys(
            "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u02d7\ufe58\ufe63\u2e3a\u2e3b", "-"
        ),
    }
)


def _name_key(name: str) -> str:
    """What two names that look alike share: NFKC-normalised, case-folded, invisible characters dropped,
    look-alike letters and dashes folded (`_LOOKALIKE_CAPITALS`, `_LOOKALIKES`)."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(ch for ch in text if not _invisible(ch)).translate(_LOOKALIKE_CAPITALS)
    return " ".join(text.casefold().translate(_LOOKALIKES).split())


def check_name_free(s: Session, user: User | None, name: str, exclude_id: int | None = None) -> None:
    """A public entry may not take the name of another user's (or a seeded) public entry, compared
    case-insensitively: nobody can pose as "ElasticBERT-BASE". Admins are exempt."""
    if user is not None and user.is_admin:
        return
    # only entries anyone can see hold their name (a failed or queued one would leak its existence);
    # compared in Python: SQL lower() does not fold non-ASCII letters on SQLite
    q = select(Submission.name).where(visible_condition())
    if user is not None:
        q = q.where((Submission.owner_id != user.id) | Submission.owner_id.is_(None))
    if exclude_id is not None:
        q = q.where(Submission.id != exclude_id)
    key = _name_key(name)
    if any(_name_key(other) == key for other in s.scalars(q)):
        raise ServiceError(f"another public entry is called {name!r}: choose another name", 409)


def _text(value: str | None, limit: int) -> str:
    """Free text as stored: NUL characters dropped (PostgreSQL stores none: a 500 before), at most `limit`
    characters."""
    return (value or "").replace("\x00", "")[:limit]


MAX_DESCRIPTION = 5000


def _description(value: str | None) -> str:
    """A description as stored; over `MAX_DESCRIPTION` characters it is refused (it was cut there without a
    word, and the owner found the end of their text gone)."""
    value = _text(value, len(value or ""))
    if len(value) > MAX_DESCRIPTION:
        raise ServiceError(f"the description has {len(value):,} characters: at most {MAX_DESCRIPTION:,}")
    return value


def _label(value: str, limit: int) -> str:
    """A one-line label (a reported point's file): line breaks and tabs read as spaces, control and invisible
    characters dropped. "line1\nline2" was stored and broke the CSV's one line per point and the chart's
    hover text."""
    value = "".join(ch for ch in value if not _invisible(ch) or ch.isspace())
    return " ".join(value.split())[:limit]


def _clean_url(url: str | None) -> str:
    """An http(s) link (scheme in any case), at most 500 characters; anything else is refused."""
    url = (url or "").strip()
    if len(url) > 500:
        raise ServiceError(f"links may have at most 500 characters (this one has {len(url)})")
    if url and not re.match(r"^https?://[^\s<>\"'\x00-\x1f\x7f]+$", url, re.IGNORECASE):  # no control chars
        raise ServiceError(f"links must be http(s) URLs: {url!r}")
    return url


def submit_zip(
    s: Session,
    settings: Settings,
    user: User,
    data: bytes,
    *,
    name: str,
    public: bool = False,
    paper_url: str = "",
    code_url: str = "",
    description: str = "",
) -> Submission:
    """Accept an uploaded zip: checked, extracted, moved into place and queued, or nothing at all."""
    name = _clean_name(name)
    paper_url, code_url = _clean_url(paper_url), _clean_url(code_url)
    description = _description(description)
    if public:
        check_name_free(s, user, name)
    check_limits(s, user, settings)  # early answer; checked again under the lock below
    try:
        staged = storage.extract_zip(data, settings)  # UploadError -> nothing stored
    except storage.StorageError as e:  # a full disk is the server's: 503, and the upload is not counted
        # the user reads "try again later"; the admin, who must free the disk, reads it in the server's log
        log.error("an upload could not be stored in %s: %s", settings.upload_dir, e.__cause__ or e)
        raise ServiceError(str(e), 503) from e
    key = None
    try:
        key = storage.commit_staged(staged, settings)
        if not user.is_admin:
            _lock_user(s, user)
            check_limits(s, user, settings)
        sub = Submission(
            owner_id=user.id,
            name=name,
            origin="measured",
            status=QUEUED,
            public=public,
            paper_url=paper_url,
            code_url=code_url,
            description=description,
            storage_key=key,
            log=f"[{utcnow():%Y-%m-%d %H:%M:%S}] accepted: {', '.join(staged.files)}\n",
        )
        s.add(sub)
        s.commit()
        return sub
    except BaseException:
        s.rollback()
        storage.discard(settings, key)
        shutil.rmtree(staged.path, ignore_errors=True)
        raise


# Bounds of the numbers a reported entry may give (the API and the form answer 400 outside them): the
# spec's scores of real models lie within ±10, so ±100 leaves room and keeps absurd values off the board.
MAX_REPORTED_SCORE = 100.0
MAX_MFLOPS = 1e9  # a million GFLOPs per example
MAX_PARAMS_M = 1e7  # ten trillion parameters


def _task_name(name: str) -> str:
    """The dataset's canonical name (any spelling `get_task` takes), else a ServiceError."""
    try:
        return get_task(name).name
    except KeyError as e:
        raise ServiceError(str(e.args[0])) from None


def _number(value, what: str, *, lo: float, hi: float, lo_open: bool = False) -> float:  # noqa: ANN001
    """A finite number within [lo, hi] (or (lo, hi] with lo_open), else a ServiceError naming `what`."""
    if isinstance(value, bool):
        raise ServiceError(f"{what} must be a number")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ServiceError(f"{what} must be a number") from None
    low_ok = x > lo if lo_open else x >= lo
    if not (math.isfinite(x) and low_ok and x <= hi):
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise ServiceError(f"{what} must be a finite number {bound} and <= {hi:g} (got {value!r})")
    return x


def parse_reported(tasks: dict) -> dict[str, dict]:
    """Validate a reported entry's numbers: {task: {"points": [{"mflops", "performance", "file"?}],
    "elue_score"?: float, "params_m"?: float}}. MFLOPs and params must be finite and > 0, performance
    within 0..100, a score within ±MAX_REPORTED_SCORE."""
    if not isinstance(tasks, dict) or not tasks:
        raise ServiceError("a reported entry needs numbers for at least one task")
    out = {}
    for raw_task, spec in tasks.items():
        task = _task_name(raw_task)
        if task in out:
            raise ServiceError(f"{task} is given twice ({raw_task!r} is another spelling of it)")
        if not isinstance(spec, dict):
            raise ServiceError(f"{task}: expected an object with points and/or elue_score")
        points = []
        raw_points = spec.get("points") or []
        if not isinstance(raw_points, list) or len(raw_points) > 100:
            raise ServiceError(f"{task}: points must be a list of at most 100 points")
        for p in raw_points:
            if not isinstance(p, dict) or "mflops" not in p or "performance" not in p:
                raise ServiceError(f"{task}: each point needs numeric mflops and performance")
            mflops = _number(p["mflops"], f"{task}: MFLOPs", lo=0, hi=MAX_MFLOPS, lo_open=True)
            perf = _number(p["performance"], f"{task}: performance", lo=0, hi=100)
            file = _label(str(p.get("file") or ""), 300)
            points.append({"mflops": mflops, "performance": perf, "file": file})
        score = spec.get("elue_score")
        if score is not None:
            score = _number(score, f"{task}: elue_score", lo=-MAX_REPORTED_SCORE, hi=MAX_REPORTED_SCORE)
        if not points and score is None:
            raise ServiceError(f"{task}: give points or an elue_score")
        params = spec.get("params_m")
        if params is not None:
            params = _number(params, f"{task}: params_m", lo=0, hi=MAX_PARAMS_M, lo_open=True)
        out[task] = {"points": points, "elue_score": score, "params_m": params}
    return out


def submit_reported(
    s: Session,
    settings: Settings,
    user: User | None,
    *,
    name: str,
    params_m: float,
    paper_url: str,
    tasks: dict,
    public: bool = False,
    code_url: str = "",
    description: str = "",
    enforce_limits: bool = True,
) -> Submission:
    """A *reported* entry: numbers copied from a paper (with the paper's link)."""
    name = _clean_name(name)
    paper_url, code_url = _clean_url(paper_url), _clean_url(code_url)
    description = _description(description)
    if not paper_url:
        raise ServiceError("a reported entry needs the link of the paper its numbers come from")
    params_m = _number(params_m, "params_m (millions of parameters)", lo=0, hi=MAX_PARAMS_M, lo_open=True)
    parsed = parse_reported(tasks)
    # the entry's size is the largest model over its points (spec §5), as for a measured entry: a task's own
    # params_m above the entry's put a 300M SST-2 model on the <= 40M track
    given_m = params_m  # a task without its own params_m has the entry's as given, not its largest task's
    params_m = max(
        [params_m, *(spec["params_m"] for spec in parsed.values() if spec["params_m"] is not None)]
    )
    limited = user is not None and enforce_limits and not user.is_admin
    if public or limited:
        _lock_user(s, user if limited else None, names=public)
        with _rollback_on_refusal(s):
            if public:
                check_name_free(s, user, name)
            if limited:
                check_limits(s, user, settings)
    sub = Submission(
        owner_id=user.id if user else None,
        name=name,
        origin=REPORTED,
        status=SCORED,
        public=public,
        paper_url=paper_url,
        code_url=code_url,
        description=description,
        params_m=params_m,
        # one moment for both: created_at, left to its column default, was set at the insert, after finished_at
        created_at=(now := utcnow()),
        finished_at=now,
        log="reported entry: numbers copied from the linked paper, not measured by this site\n",
    )
    for task, spec in parsed.items():
        tr = TaskResult(task=task, params_m=spec["params_m"] or given_m, reported_score=spec["elue_score"])
        tr.points = [
            Point(file=p["file"], mflops=p["mflops"], performance=p["performance"], metrics={})
            for p in spec["points"]
        ]
        sub.tasks.append(tr)
    s.add(sub)
    bump_board_version(s)
    s.commit()
    return sub


def get_owned(s: Session, user: User, sub_id: int) -> Submission:
    sub = s.get(Submission, sub_id)
    if sub is None or sub.status == DELETED or (sub.owner_id != user.id and not user.is_admin):
        raise ServiceError("no such submission", 404)
    return sub


def get_live(s: Session, sub_id: int) -> Submission:
    """Any entry that is not deleted (the admin's actions), or a 404."""
    sub = s.get(Submission, sub_id)
    if sub is None or sub.status == DELETED:
        raise ServiceError("no such submission", 404)
    return sub


def is_public(sub: Submission) -> bool:
    """`board.visible_condition` for one row: published, not hidden and scored (reported entries are stored
    scored)."""
    return bool(sub.public and not sub.hidden and sub.status == SCORED)


def can_view(user: User | None, sub: Submission) -> bool:
    """Public entries to everyone; a queued, running or failed entry only to its owner and the admins, even
    when marked public."""
    if sub.status == DELETED:
        return False
    if is_public(sub):
        return True
    return user is not None and (user.is_admin or sub.owner_id == user.id)


def own_submissions(s: Session, user: User) -> list[Submission]:
    """A user's submissions, newest first (deleted ones are tombstones, not listed)."""
    q = select(Submission).where(Submission.owner_id == user.id, Submission.status != DELETED)
    return list(s.scalars(q.order_by(Submission.id.desc())))


def _hold_row(s: Session, sub: Submission) -> None:
    """Hold `sub`'s row until the transaction ends and read it again; 404 if it was deleted since it was read.
    A PATCH and a delete of one entry at the same moment run one after the other: a PATCH that read the entry
    before the delete committed wrote its name back onto the tombstone, and a delete that read it before a
    PATCH committed wrote only what differed from its read (the ORM skips unchanged columns), leaving the
    PATCH's description or public flag on the tombstone. PostgreSQL: the row's lock; SQLite: the database's
    write lock (an update that changes nothing; no write may come before it in the transaction)."""
    held = s.execute(
        update(Submission)
        .where(Submission.id == sub.id, Submission.status != DELETED)
        .values(status=Submission.status)
        .execution_options(synchronize_session=False)
    ).rowcount
    if held != 1:
        s.rollback()
        raise ServiceError("no such submission", 404)
    s.refresh(sub)


def update_submission(s: Session, user: User, sub_id: int, **changes) -> Submission:
    if changes.get("description") is not None:
        changes["description"] = _description(changes["description"])  # refused before anything is held
    sub = get_owned(s, user, sub_id)
    # the names lock (for a new name or a publish) before the row's, as the worker takes them; the checks below
    # read the row as it is under the lock, not as it was read above
    _lock_user(s, None, names=changes.get("name") is not None or bool(changes.get("public")))
    _hold_row(s, sub)
    new_name = sub.name
    if "name" in changes and changes["name"] is not None:
        new_name = _clean_name(changes["name"])
    new_public = sub.public if changes.get("public") is None else bool(changes["public"])
    if new_public and (_name_key(new_name) != _name_key(sub.name) or not sub.public):
        with _rollback_on_refusal(s):
            check_name_free(s, sub.owner if sub.owner_id != user.id else user, new_name, exclude_id=sub.id)
    sub.name = new_name
    if changes.get("public") is not None:
        if not changes["public"] and sub.public:
            with _rollback_on_refusal(s):
                _refuse_if_baseline(s, sub)
        sub.public = bool(changes["public"])
    for k in ("paper_url", "code_url"):
        if changes.get(k) is not None:
            setattr(sub, k, _clean_url(changes[k]))
    if sub.origin == REPORTED and changes.get("paper_url") is not None and not sub.paper_url:
        # its numbers come from that paper: the link is required at creation, so it cannot be removed later
        s.rollback()
        raise ServiceError("a reported entry needs the link of the paper its numbers come from")
    if changes.get("description") is not None:
        sub.description = changes["description"]
    bump_board_version(s)
    s.commit()
    return sub


def _refuse_if_baseline(s: Session, sub: Submission) -> None:
    """A dataset's baseline cannot be unpublished, hidden or deleted: the admin chooses another first."""
    if s.scalar(select(Baseline).where(Baseline.submission_id == sub.id).limit(1)) is not None:
        raise ServiceError("this entry is a dataset's baseline; the admin must choose another first", 409)


def delete_submission(s: Session, settings: Settings, user: User, sub_id: int) -> None:
    sub = get_owned(s, user, sub_id)
    s.commit()  # end the read: the row's lock must be the transaction's first write (SQLite)
    _hold_row(s, sub)  # written as it is now, not as it was read (a PATCH may have committed since)
    with _rollback_on_refusal(s):
        _refuse_if_baseline(s, sub)
    key = sub.storage_key
    # a tombstone: files, results and texts go; the row keeps its id (never reused) and still counts
    # toward the owner's limits. A worker scoring it loses its lease and stops (worker._Heartbeat).
    sub.tasks.clear()
    sub.status, sub.public, sub.name = DELETED, False, DELETED_NAME
    sub.log = sub.error = sub.description = sub.paper_url = sub.code_url = ""
    sub.params_m = sub.storage_key = sub.lease_owner = sub.lease_expires_at = None
    bump_board_version(s)
    s.commit()
    storage.discard(settings, key)


# ---------------------------------------------------------------- admin
def require_admin(user: User | None) -> User:
    if user is None or not user.is_admin:
        raise ServiceError("admins only", 403)
    return user


def _check_baseline_entry(s: Session, sub: Submission, task: str) -> None:
    if not is_public(sub):
        raise ServiceError(
            f"{sub.name} cannot be a baseline: only public, visible, scored (or reported) entries can"
        )
    tr = s.scalar(select(TaskResult).where(TaskResult.submission_id == sub.id, TaskResult.task == task))
    if tr is None or not tr.points:
        raise ServiceError(f"{sub.name} has no {task} points to serve as a baseline curve")
    try:  # the curve every measured entry will be scored against: refuse one that cannot score
        validate_points([[p.mflops, p.performance] for p in tr.points], f"{sub.name}'s {task} points")
    except BaselineError as e:
        raise ServiceError(str(e)) from None


def set_baseline(s: Session, task: str, sub_id: int) -> None:
    task = _task_name(task)
    sub = get_live(s, sub_id)
    # read and written under a lock: two choices at once (a double-clicked form) for a dataset that had no
    # baseline both found no row and both inserted one (a 500); now the later one replaces the earlier. The
    # entry's row is held too and checked as it is now: its owner unpublishing or deleting it meanwhile (their
    # check that it is no baseline had passed) left a private or deleted baseline.
    _exclusive(s, BASELINES_LOCK_ID, "baselines")
    _hold_row(s, sub)
    with _rollback_on_refusal(s):
        _check_baseline_entry(s, sub, task)
    row = s.get(Baseline, task)
    if row is None:
        s.add(Baseline(task=task, submission_id=sub_id))
    else:
        row.submission_id = sub_id
    bump_board_version(s)
    s.commit()


def set_hidden(s: Session, sub_id: int, hidden: bool) -> Submission:
    sub = get_live(s, sub_id)
    # the names lock (to show an entry again) before the row's, as everywhere; the checks read the row as it
    # is under the lock (hiding an entry while it became a baseline left a hidden baseline)
    _lock_user(s, None, names=not hidden)
    _hold_row(s, sub)
    if hidden and not sub.hidden:
        with _rollback_on_refusal(s):
            _refuse_if_baseline(s, sub)
    if not hidden and sub.hidden and sub.public:
        # a hidden entry holds no name: another may have taken it meanwhile (as when publishing)
        try:
            check_name_free(s, sub.owner, sub.name, exclude_id=sub.id)
        except ServiceError:
            s.rollback()
            raise ServiceError(
                f"another public entry is called {sub.name!r} now: rename this one before showing it again",
                409,
            ) from None
    sub.hidden = hidden
    bump_board_version(s)
    s.commit()
    return sub


# ---------------------------------------------------------------- deployment facts
def secret_key(s: Session, settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    # made under a lock: processes starting side by side on a new database (`elue serve` on two hosts,
    # `uvicorn elue.server.asgi:app --workers N`) each made one, and all but the first failed on the key's row
    _exclusive(s, SEED_LOCK_ID, "secret_key")
    row = s.get(Meta, "secret_key")
    if row is None:
        row = Meta(key="secret_key", value=secrets.token_urlsafe(48))
        s.add(row)
    s.commit()
    return row.value


def seed_published(s: Session) -> bool:
    """On first start: the published entries of spec §6 (reported) and the baseline. Idempotent, also for
    processes starting side by side on a new database (`elue serve` on two hosts): the check and the seed run
    under a lock (without it both seeded, and the second failed with a duplicate key)."""
    _exclusive(s, SEED_LOCK_ID, "seeded")
    if s.get(Meta, "seeded") is not None:
        s.commit()
        return False
    data = json.loads(resources.files("elue.server").joinpath("seed/published.json").read_text())
    names = data["tasks"]
    by_name = {}
    for e in data["entries"]:
        sub = Submission(
            owner_id=None,
            name=e["name"],
            origin=REPORTED,
            status=SCORED,
            public=True,
            paper_url=e.get("paper_url", ""),
            code_url=e.get("code_url", ""),
            description=e.get("description", ""),
            params_m=e["params_m"],
            created_at=(now := utcnow()),
            finished_at=now,
            log="seeded: published entry of the original ELUE leaderboard (spec §6)\n",
        )
        for task, score in zip(names, e["scores"], strict=True):
            tr = TaskResult(task=task, params_m=e["params_m"], reported_score=score)
            for mflops, perf, label in e.get("points", {}).get(task, []):
                tr.points.append(Point(file=label, mflops=mflops, performance=perf, metrics={}))
            sub.tasks.append(tr)
        s.add(sub)
        by_name[e["name"]] = sub
    s.flush()
    base = by_name[data["baseline"]]
    # the baseline's curves on the other datasets, where the toolkit ships them
    try:
        from elue.scoring import load_baseline

        curves = load_baseline()
    except Exception:  # noqa: BLE001 - no curves shipped yet: those datasets get no computed scores
        curves = {}
    for tr in base.tasks:
        if not tr.points and curves.get(tr.task):
            for mflops, perf in curves[tr.task]:
                tr.points.append(
                    Point(file="baseline curve", mflops=float(mflops), performance=float(perf), metrics={})
                )
    s.flush()
    for task in TASK_NAMES:
        tr = next((t for t in base.tasks if t.task == task), None)
        if tr is not None and tr.points:
            s.merge(Baseline(task=task, submission_id=base.id))
    s.add(Meta(key="seeded", value=utcnow().isoformat()))
    bump_board_version(s)
    s.commit()
    return True
