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
