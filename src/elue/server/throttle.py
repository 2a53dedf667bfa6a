"""A limiter of password guessing: at most `max_failures` failed log-ins per user name and client address in
`window_s` seconds, then 429 until enough of them leave the window. The attempts are rows of the database
(`login_failures`), so every web process of a deployment counts the same ones (`elue serve --web-workers N`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from .db import LoginFailure

KEY_LENGTH = LoginFailure.__table__.c.key.type.length  # the column's width


class LoginThrottle:
    def __init__(
        self,
        sessions: sessionmaker,
        max_failures: int = 10,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions, self.max_failures, self.window_s = sessions, max_failures, window_s
        self.clock = clock  # wall-clock seconds: the same in every process (tests move it)

    @staticmethod
    def key(username: str, client: str | None) -> str:
        name = (username or "").replace("\x00", "").strip().lower()[:200]  # PostgreSQL stores no NUL
        return f"{name}\x1f{client or ''}"[:KEY_LENGTH]

    def begin(self, key: str) -> float:
        """Count one attempt and check it: 0 when it may go ahead (it stays counted as a failure until
        `succeeded`), else the seconds to wait (and it is not counted).

        The attempt's row is committed before the count, so of any attempts that go ahead, the last to count
        sees all of their rows: at most `max_failures` go ahead in a window, however many processes and
        threads guess at once (parallel attempts may instead all be refused, which errs on the safe side)."""
        now = self.clock()
        cutoff = now - self.window_s
        with self.sessions.begin() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.at <= cutoff))  # expired, of every key
            row = LoginFailure(key=key, at=now)
            s.add(row)
            s.flush()
            mine = row.id
        with self.sessions() as s:
            others = s.scalars(
                select(LoginFailure.at)
                .where(LoginFailure.key == key, LoginFailure.at > cutoff, LoginFailure.id != mine)
                .order_by(LoginFailure.at)
            ).all()
        if len(others) < self.max_failures:
            return 0.0
        with self.sessions.begin() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.id == mine))
        # a slot frees when all but max_failures - 1 of the others have left the window
        return max(1.0, others[len(others) - self.max_failures] + self.window_s - now)

    def succeeded(self, key: str) -> None:
        """A right password clears the key's count."""
        with self.sessions.begin() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == key))
