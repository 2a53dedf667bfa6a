"""The admin: baselines, hiding, the admin account (never taken over, password reset)."""

from __future__ import annotations

import contextlib
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from server_helpers import SUB, run_at_once
from server_helpers import api_reported as reported
from server_helpers import api_upload as upload
from server_setup import csrf_of, make_settings, token_for, web_login

from elue.server import create_app, service
from elue.server.db import open_database


def test_only_public_scored_entries_can_be_baselines(client, auth, admin_headers, drain):  # noqa: ANN001
    h = auth("alice")
    private = upload(client, h, name="private model")
    queued = upload(client, h, name="queued model", public=True)
    drain()
    hidden = upload(client, h, name="hidden model", public=True)
    failed = upload(client, h, name="failed model", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    drain()
    r = client.post(
        f"/api/admin/submissions/{hidden['id']}/hide", headers=admin_headers, json={"hidden": True}
    )
    assert r.status_code == 200
    for sub in (private, hidden, failed):
        r = client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": sub["id"]})
        assert r.status_code == 400 and "cannot be a baseline" in r.json()["detail"], r.text
    assert client.get("/api/tasks/sst-2").json()["baseline"]["name"] == "ElasticBERT-BASE"
    # the admin page's choices: only public, visible, scored entries
    page = client.get("/admin", headers=admin_headers).text
    select = page[page.index('<select name="submission_id"') : page.index("</select>")]
    assert "queued model" in select  # scored by now, public
    for name in ("private model", "hidden model", "failed model"):
        assert name not in select
    r = client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": queued["id"]})
    assert r.status_code == 200


def test_admin_baseline_form_with_an_unknown_task(client):  # noqa: ANN001
    token_for(client, "admin", "admin-password", create=False)
    csrf = csrf_of(client.get("/login").text)
    client.post("/login", data={"username": "admin", "password": "admin-password", "csrf": csrf})
    csrf = csrf_of(client.get("/admin").text)
    r = client.post("/admin/baseline", data={"task": "nope", "submission_id": "1", "csrf": csrf})
    assert r.status_code == 400 and "nope" in r.text


def test_a_baseline_curve_that_cannot_score_is_refused(client, auth, admin_headers):  # noqa: ANN001
    tasks = {"sst-2": {"points": [{"mflops": 100, "performance": 90}, {"mflops": 100, "performance": 85}]}}
    r = reported(client, auth("flat"), name="Flat", tasks=tasks)
    assert r.status_code == 201
    r = client.put(
        "/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": r.json()["id"]}
    )
    assert r.status_code == 400 and "distinct FLOPs" in r.json()["detail"], r.text
    # and the admin page does not offer it (docs: only curves that can score); it offered every entry with points
    page = client.get("/admin", headers=admin_headers).text
    select = page[page.index('<select name="submission_id"') : page.index("</select>")]
    assert "ElasticBERT-BASE" in select and "Flat" not in select


def test_unhiding_refuses_a_name_taken_meanwhile(client, auth, admin_headers):  # noqa: ANN001
    alice, bob = auth("alice"), auth("bob")
    first = reported(client, alice, name="Twin").json()

    def hide(hidden: bool) -> httpx.Response:
        url = f"/api/admin/submissions/{first['id']}/hide"
        return client.post(url, headers=admin_headers, json={"hidden": hidden})

    assert hide(True).status_code == 200
    second = reported(client, bob, name="twin")  # a hidden entry holds no name
    assert second.status_code == 201, second.text
    r = hide(False)
    assert r.status_code == 409 and "another public entry is called 'Twin'" in r.json()["detail"], r.text
    names = [x["name"] for x in client.get("/api/leaderboard").json()["rows"]]
    assert names.count("Twin") + names.count("twin") == 1
    assert client.patch(f"/api/submissions/{first['id']}", headers=alice, json={"name": "Twin 2"}).is_success
    assert hide(False).status_code == 200


def test_admin_flag_does_not_promote_an_account_made_by_signing_up(tmp_path):  # noqa: ANN001
    settings = make_settings(tmp_path)
    create_app(settings)
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:
        service.create_user(s, "admin", "attacker-pw")  # someone signed up under the name first
        for pw in (None, "operator-pw"):
            with pytest.raises(service.ServiceError, match="ordinary account"):
                service.ensure_admin(s, "Admin", pw)  # compared as sign-up compares names
        assert not service.authenticate(s, "admin", "attacker-pw").is_admin
        # the account's owner may promote it, proving it with its password
        user, made = service.ensure_admin(s, "admin", "attacker-pw")
        assert user.is_admin and made is None
    with sessions() as s:  # a new admin: a password is made (and returned to be shown) unless one is given
        user, made = service.ensure_admin(s, "root")
        assert user.is_admin and service.authenticate(s, "root", made) is not None
        user, made = service.ensure_admin(s, "ROOT", "chosen-password")  # an admin: the given password is set
        assert made is None and service.authenticate(s, "root", "chosen-password") is not None
        with pytest.raises(service.ServiceError, match="8 characters"):
            service.ensure_admin(s, "root", "short")


def test_resetting_the_admin_password_ends_its_sessions(client, settings):  # noqa: ANN001
    csrf = csrf_of(client.get("/login").text)
    form = {"username": "admin", "password": "admin-password", "csrf": csrf}
    assert client.post("/login", data=form, follow_redirects=False).status_code == 303
    assert client.get("/account", follow_redirects=False).status_code == 200
    _, sessions = open_database(settings.database_url, upgrade=False)
    with sessions() as s:
        service.ensure_admin(s, "admin", "new-admin-password")
    assert client.get("/account", follow_redirects=False).status_code == 303
    with sessions() as s:  # the same password again changes nothing
        service.ensure_admin(s, "admin", "new-admin-password")
        assert service.authenticate(s, "admin", "new-admin-password") is not None


def test_choosing_a_new_datasets_baseline_twice_at_once(db_url, tmp_path, monkeypatch):  # noqa: ANN001
    """Two baseline choices at once for a dataset that had none (two admins, or a double click after picking
    another entry): both requests found no baseline row and both inserted one, so the second was a 500 (the
    task's primary key). Two different entries: one entry's choices queue on its row lock already (and on SQLite
    the database's write lock queues any two)."""
    app = create_app(make_settings(tmp_path, database_url=db_url), admin=("admin", "admin-password"))
    c = TestClient(app, raise_server_exceptions=False)
    admin = {"authorization": f"Bearer {token_for(c, 'admin', 'admin-password', create=False)}"}
    tasks = {"mrpc": {"points": [{"mflops": 100, "performance": 80}, {"mflops": 200, "performance": 85}]}}
    alice = {"authorization": f"Bearer {token_for(c, 'alice')}"}
    sids = [reported(c, alice, name=name, tasks=tasks).json()["id"] for name in ("M1", "M2")]
    # without the lock both requests meet here and insert; with it the second waits for the first's commit,
    # so the first waits out the barrier (the fixed code always pays this timeout, once per database)
    both_checking = threading.Barrier(2, timeout=3)
    real_validate = service.validate_points

    def slow_validate(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checking.wait()
        return real_validate(*a, **kw)

    monkeypatch.setattr(service, "validate_points", slow_validate)
    answers = []

    def choose(sid: int) -> None:
        r = TestClient(app, raise_server_exceptions=False).put(
            "/api/admin/baselines/mrpc", headers=admin, json={"submission_id": sid}
        )
        answers.append(r.status_code)

    run_at_once(choose, sids)
    assert answers == [200, 200], answers
    assert c.get("/api/tasks/mrpc").json()["baseline"]["submission_id"] in sids


def test_the_admin_page_asks_a_visitor_to_log_in(client):  # noqa: ANN001
    """/admin answered a visitor who was not logged in with "admins only" (403), where /account, /submit and a
    submission's page send them to the log-in form and back."""
    r = client.get("/admin", headers={"accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/admin"
    csrf = csrf_of(client.get("/login?next=/admin").text)
    form = {"username": "admin", "password": "admin-password", "next": "/admin", "csrf": csrf}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert client.get("/admin").status_code == 200
    client.cookies.clear()
    web_login(client, "mallory")  # logged in, not an admin: still refused
    assert client.get("/admin", follow_redirects=False).status_code == 403


def test_the_admin_page_s_baseline_choices_are_labelled_and_never_empty(client):  # noqa: ANN001
    """Each dataset's choice is a labelled field; a dataset with no entry to choose (on a new site every
    dataset but SST-2) says so instead of offering an empty list whose Set button answered a 422."""
    import re

    csrf = csrf_of(client.get("/login?next=/admin").text)
    client.post("/login", data={"username": "admin", "password": "admin-password", "csrf": csrf})
    page = client.get("/admin").text
    selects = re.findall(r"<select[^>]*>", page)
    assert len(selects) == 1, selects  # SST-2 only: the published entries give points there alone
    sid = re.search(r'id="([^"]+)"', selects[0])
    assert sid and f'<label for="{sid.group(1)}"' in page
    scitail = page[page.index("<tr><td>scitail</td>") :].split("</tr>", 1)[0]
    assert "<form" not in scitail and "no public scored entry" in scitail


def test_the_admin_s_hide_buttons_name_their_entry(client, admin_headers):  # noqa: ANN001
    """Every "hide" button of the admin's entry list read "hide" to a screen reader, not which entry it hides."""
    page = client.get("/admin", headers=admin_headers).text
    assert 'aria-label="Hide entry 1, ElasticBERT-BASE"' in page
    assert 'scope="col"><span class="visually-hidden">Action</span>' in page
