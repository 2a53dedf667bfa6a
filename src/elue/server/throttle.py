"""A small in-memory limiter of password guessing: at most `max_failures` failed log-ins per user name
and client address in `window_s` seconds, then 429 until the oldest failure leaves the window. Per web
process (with several web processes the bound is per process)."""

from __future__ import annotations

import threading
import time
from collections import deque


class LoginThrottle:
    def __init__(self, max_failures: int = 10, window_s: float = 300.0, max_keys: int = 100_000) -> None:
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(username: str, client: str | None) -> tuple[str, str]:
        return ((username or "").strip().lower()[:200], client or "")

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, key: tuple[str, str]) -> float:
        """Seconds until this key may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(key, now)
            if len(q) < self.max_failures:
                return 0.0
            return max(1.0, q[0] + self.window_s - now)

    def begin(self, key: tuple[str, str]) -> float:
        """Check and count one attempt atomically: 0 when it may go ahead (it is counted as a failure until
        `succeeded`), else the seconds to wait. Parallel guesses cannot all pass the check first."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(key, now)
            if len(q) >= self.max_failures:
                return max(1.0, q[0] + self.window_s - now)
            self._record(key, now)
            return 0.0

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._record(key, time.monotonic())

    def _record(self, key: tuple[str, str], now: float) -> None:
        """Count a failure at `now`; the caller holds the lock."""
        if len(self._failures) >= self.max_keys:  # drop the expired, then (if still full) the oldest
            for k in list(self._failures):
                self._recent(k, now)
            while len(self._failures) >= self.max_keys:
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)
