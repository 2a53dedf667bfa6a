"""Caching: the response cache's bounds, and no-store on every answer for a user."""

from __future__ import annotations

from server_helpers import api_upload
from server_setup import csrf_of


def test_the_response_cache_is_bounded_in_total_and_keeps_no_locks():
    """Made-up query strings on a cached page are new entries each: the total size is bounded, and no lock
    is kept per query string."""
    import asyncio

    from elue.server.cache import ResponseCache

    async def page(scope, receive, send):  # noqa: ANN001, ANN202
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1000})

    cache = ResponseCache(page, ttl=60, max_total_bytes=10_000)

    async def get(query: bytes) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/leaderboard",
            "query_string": query,
            "headers": [],
        }

        async def send(message):  # noqa: ANN001, ANN202
            return None

        await cache(scope, None, send)

    async def many() -> None:
        for i in range(100):
            await get(str(i).encode())
            assert cache.total_bytes <= 10_000 and len(cache.entries) <= 10

    asyncio.run(many())
    assert cache.locks == {}
    assert cache.total_bytes == sum(len(e[3]) for e in cache.entries.values()) > 0


def test_responses_for_a_user_tell_caches_not_to_store_them(client, auth):  # noqa: ANN001
    h = auth("alice")
    sid = api_upload(client, h)["id"]
    csrf = csrf_of(client.get("/login").text)
    data = {"username": "alice", "password": "password123", "csrf": csrf}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 303
    # a proxy in front of the site that caches pages must not hand alice's pages (her CSRF token, logs) to others
    for url in ["/account", f"/submissions/{sid}", "/leaderboard", f"/models/{sid}"]:
        assert "no-store" in client.get(url).headers.get("cache-control", ""), url
    client.cookies.clear()
    for url in [f"/api/submissions/{sid}", "/api/me", "/api/leaderboard"]:
        assert "no-store" in client.get(url, headers=h).headers.get("cache-control", ""), url
    assert "no-store" in client.get("/login").headers.get("cache-control", "")  # sets a session cookie
    client.cookies.clear()
    anon = client.get("/leaderboard")  # an anonymous page may be cached
    assert "set-cookie" not in anon.headers and "no-store" not in anon.headers.get("cache-control", "")
    plotly = client.get("/static/plotly.min.js", headers=h)  # the explicit caching of assets stays
    assert plotly.headers["cache-control"] == "public, max-age=86400"


def test_a_new_api_token_is_never_stored_by_a_cache(client):  # noqa: ANN001
    """POST /api/tokens with a user name and password carries no session or token, so its answer (the new token,
    shown once) had no Cache-Control; every write's answer now says no-store."""
    from server_setup import token_for

    token_for(client, "cached")
    r = client.post("/api/tokens", json={"username": "cached", "password": "password123"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    refused = client.post("/api/tokens", json={"username": "cached", "password": "wrong-password"})
    assert refused.headers["cache-control"] == "no-store"
