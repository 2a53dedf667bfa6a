"""Per-user submission limits and sign-ups per address."""

from __future__ import annotations

from fastapi.testclient import TestClient
from server_helpers import SUB, zip_bytes
from server_helpers import api_reported as reported
from server_helpers import api_upload as upload
from server_setup import csrf_of, make_settings, token_for

from elue.server import create_app


def test_deleting_does_not_reset_the_limits_and_ids_are_not_reused(tmp_path):  # noqa: ANN001

    c = TestClient(create_app(make_settings(tmp_path, daily_limit=2, monthly_limit=30)))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    a = upload(c, h)
    b = upload(c, h)
    assert c.delete(f"/api/submissions/{b['id']}", headers=h).status_code == 204
    r = c.post(
        "/api/submissions", headers=h, data={"name": "x"}, files={"file": ("s.zip", zip_bytes(SUB), "x")}
    )
    assert r.status_code == 429 and "daily limit" in r.json()["detail"]
    assert reported(c, h).status_code == 429  # reported entries count toward the same limits
    # the deleted entry is gone for everyone (also from the owner's list), its files too
    assert [s["id"] for s in c.get("/api/submissions", headers=h).json()] == [a["id"]]
    assert c.get(f"/api/submissions/{b['id']}", headers=h).status_code == 404
    assert c.patch(f"/api/submissions/{b['id']}", headers=h, json={"public": True}).status_code == 404
    # 13: the next submission (another user) gets a fresh id, not the deleted one's
    h2 = {"authorization": f"Bearer {token_for(c, 'bob')}"}
    assert upload(c, h2)["id"] > b["id"]


def test_a_submission_limit_says_when_the_next_one_is_possible(tmp_path):  # noqa: ANN001
    """A script over the limit was told only "daily limit reached" (no Retry-After, no time), so it could
    only guess when to try again."""
    import datetime as dt

    from elue.server.db import Submission

    c = TestClient(create_app(make_settings(tmp_path, daily_limit=2, monthly_limit=3)))
    h = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    first, second = reported(c, h, name="a").json()["id"], reported(c, h, name="b").json()["id"]
    with c.app.state.elue.sessions() as s:  # the first was 20 h ago, the second 1 h ago
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        s.get(Submission, first).created_at = now - dt.timedelta(hours=20)
        s.get(Submission, second).created_at = now - dt.timedelta(hours=1)
        s.commit()
    r = reported(c, h, name="c")
    assert r.status_code == 429
    assert 4 * 3600 - 60 <= int(r.headers["retry-after"]) <= 4 * 3600  # when the first leaves the 24 h
    assert r.json()["detail"].startswith("daily limit reached: 2 submissions per 24 hours; the next one is")
    assert r.json()["detail"].endswith(("in 4 h 0 min", "in 3 h 59 min")), r.json()["detail"]
    with c.app.state.elue.sessions() as s:  # both older than a day, a third 10 days ago: the 30-day limit
        s.get(Submission, first).created_at = now - dt.timedelta(days=29, hours=22)
        s.get(Submission, second).created_at = now - dt.timedelta(days=5)
        s.commit()
    assert reported(c, h, name="c").status_code == 201
    r = reported(c, h, name="d")
    assert r.status_code == 429 and "monthly limit reached" in r.json()["detail"]
    assert 2 * 3600 - 60 <= int(r.headers["retry-after"]) <= 2 * 3600


def test_sign_ups_per_address_are_limited(tmp_path):  # noqa: ANN001

    client = TestClient(
        create_app(make_settings(tmp_path, signup_limit=2), admin=("admin", "admin-password"))
    )
    token_for(client, "first")
    token_for(client, "second")
    csrf = csrf_of(client.get("/signup").text)
    form = {"username": "third", "password": "password123", "password2": "password123", "csrf": csrf}
    r = client.post("/signup", data=form, follow_redirects=False)
    assert r.status_code == 429 and "2 accounts were made from your address" in r.text
    r = client.post("/api/tokens", json={"username": "third", "password": "password123", "name": "x"})
    assert r.status_code == 401  # nothing was made
    # the admin is not counted (made by `elue serve --admin`, not through the form) and others are not held up
    other = TestClient(client.app, client=("10.0.0.9", 5000))
    token_for(other, "from-elsewhere")
