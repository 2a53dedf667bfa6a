"""A cache of whole responses for anonymous GETs of the public pages and API.

Public results change rarely and are the same for every anonymous visitor, so a repeated anonymous
request is answered from memory, below FastAPI, until the board version changes (see
`BoardCache.version`: any write that changes public results, in any process, is seen within the
board's check period) or `ttl` seconds pass. Requests with a session cookie or an API token always
go through.
"""

from __future__ import annotations

import asyncio
import time

from .deps import HEAD_SCOPE_KEY

CACHEABLE_PREFIXES = (
    "/leaderboard",
    "/tasks/",
    "/models/",
    "/api/leaderboard",
    "/api/tasks",
    "/api/models",
    "/api/results.",
    "/datasets",
    "/guide",
    "/score",
)


class ResponseCache:
    def __init__(
        self,
        app,
        ttl: float,
        version=lambda: 0,
        max_entries: int = 2000,  # noqa: ANN001
        max_bytes: int = 4 * 1024 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.app, self.ttl, self.version = app, ttl, version
        self.max_entries, self.max_bytes, self.max_total_bytes = max_entries, max_bytes, max_total_bytes
        # every new query string is a new entry: the total is bounded too, or anonymous requests with made-up
        # query strings could fill the memory
        self.total_bytes = 0
        self.entries: dict[bytes, tuple[float, int, list, bytes]] = {}
        self.seen_version = None
        self.locks: dict[bytes, asyncio.Lock] = {}

    def _cacheable(self, scope) -> bool:  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or self.ttl <= 0:
            return False
        path = scope["path"]
        if not (path == "/" or path.startswith(CACHEABLE_PREFIXES)):
            return False
        if path.startswith("/datasets/"):  # file downloads stream from disk
            return False
        if scope.get(HEAD_SCOPE_KEY):  # a HEAD handed to GET routes: a download answers it without its body
            return False
        return not carries_user(scope)

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if not self._cacheable(scope):
            return await self.app(scope, receive, send)
        v = self.version()
        if v != self.seen_version:  # a write in this process: drop everything
            self._clear()
            self.seen_version = v
        key = scope["method"].encode() + b" " + scope["path"].encode() + b"?" + scope["query_string"]
        hit = self.entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return await self._replay(hit, send)
        lock = self.locks.setdefault(key, asyncio.Lock())
        try:
            await self._fill(key, lock, scope, receive, send)
        finally:
            if not lock.locked():  # no request waits on it: forget it (one lock per query string otherwise)
                self.locks.pop(key, None)

    def _clear(self) -> None:
        self.entries.clear()
        self.total_bytes = 0

    async def _fill(self, key, lock, scope, receive, send) -> None:  # noqa: ANN001
        async with lock:
            hit = self.entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return await self._replay(hit, send)
            status, headers, body = 0, [], []

            async def capture(message):  # noqa: ANN001, ANN202
                nonlocal status, headers
                if message["type"] == "http.response.start":
                    status, headers = message["status"], list(message.get("headers", []))
                elif message["type"] == "http.response.body":
                    body.append(message.get("body", b""))
                await send(message)

            await self.app(scope, receive, capture)
            data = b"".join(body)
            set_cookie = any(k.lower() == b"set-cookie" for k, _ in headers)
            if status == 200 and not set_cookie and len(data) <= self.max_bytes:
                if (
                    len(self.entries) >= self.max_entries
                    or self.total_bytes + len(data) > self.max_total_bytes
                ):
                    self._clear()
                old = self.entries.get(key)
                self.total_bytes += len(data) - (len(old[3]) if old else 0)
                self.entries[key] = (time.monotonic(), status, headers, data)

    @staticmethod
    async def _replay(hit, send) -> None:  # noqa: ANN001
        _, status, headers, data = hit
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def carries_user(scope) -> bool:  # noqa: ANN001
    """A request that carries a user (session cookie or API token): its answer may be that user's."""
    return any(
        k == b"authorization" or (k == b"cookie" and b"elue_session=" in v) for k, v in scope["headers"]
    )


class NoStoreForUsers:
    """Pure ASGI: `Cache-Control: no-store` on every answer to a request with a session or a token, to every write
    (POST, PATCH, ...) and on every answer that sets a cookie, unless it sets its own Cache-Control (assets). A proxy or CDN in front of the
    site that caches pages would otherwise hand one user's pages (CSRF token, logs, tokens) to others."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            return await self.app(scope, receive, send)
        # a write's answer too: it may carry what is shown once (a new API token from POST /api/tokens)
        personal = carries_user(scope) or scope["method"] not in ("GET", "HEAD")

        async def mark(message):  # noqa: ANN001, ANN202
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                if (personal or b"set-cookie" in names) and b"cache-control" not in names:
                    message = {**message, "headers": [*message["headers"], (b"cache-control", b"no-store")]}
            await send(message)

        return await self.app(scope, receive, mark)
