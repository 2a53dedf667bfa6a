"""Public entry names: no posing as another entry (look-alikes, invisible characters), the names lock."""

from __future__ import annotations

import sqlite3

import pytest
from server_helpers import SUB, zip_bytes
from server_helpers import api_reported as reported
from server_helpers import api_upload as upload

from elue.server import create_app, service
from elue.server.db import open_database


def test_public_names_cannot_copy_another_users_entry(client, auth):  # noqa: ANN001
    h = auth("poser")
    r = reported(client, h, name="elasticbert-BASE ")
    assert r.status_code == 409 and "another public entry" in r.json()["detail"]
    assert (
        reported(client, h, name="ElasticBERT-BASE", tasks={"mrpc": {"elue_score": 1e300}}).status_code == 400
    )
    # private under that name is allowed, publishing it is not; nor renaming a public entry to it
    r = reported(client, h, name="ElasticBERT-BASE", public=False)
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.patch(f"/api/submissions/{sid}", headers=h, json={"public": True}).status_code == 409
    mine = reported(client, h, name="My own").json()["id"]
    r = client.patch(f"/api/submissions/{mine}", headers=h, json={"name": "ElasticBERT-base"})
    assert r.status_code == 409
    r = client.post(
        "/api/submissions",
        headers=h,
        data={"name": "RoBERTa-BASE", "public": "true"},
        files={"file": ("s.zip", zip_bytes(SUB), "application/zip")},
    )
    assert r.status_code == 409
    # one's own entries may share a name (e.g. a new version), and renaming to the same name is fine
    assert reported(client, h, name="My own").status_code == 201
    assert client.patch(f"/api/submissions/{mine}", headers=h, json={"name": "my OWN"}).status_code == 200


def test_look_alike_names_are_the_same_name(client, auth):  # noqa: ANN001
    h = auth("poser2")
    for name in (
        "ElasticBERT-BASE\u200b",
        "\uff25lasticBERT-BASE",
        "ElasticBERT-\u200dBASE",
        " elasticbert-base ",
        # look-alikes NFKC keeps apart: dashes, the minus sign, Cyrillic and Greek capitals drawn as Latin ones
        "ElasticBERT\u2013BASE",
        "ElasticBERT\u2010BASE",
        "ElasticBERT\u2212BASE",
        "ElasticBERT-\u0412ASE",
        "\u0395lasticBERT-\u0392\u0410\u0405\u0415",
    ):
        r = reported(client, h, name=name)
        assert r.status_code == 409, (name, r.text)
    # non-ASCII letters fold on SQLite too (its lower() only folds ASCII)
    assert reported(client, auth("bob2"), name="Ünïcode Model").status_code == 201
    assert reported(client, h, name="üNÏCODE model").status_code == 409
    assert reported(client, h, name="(Deleted)").status_code == 400  # a deleted entry's placeholder
    # Greek capital M folds to M, the micro sign (case-folded to Greek small mu) does not: μBERT is not mBERT
    assert reported(client, auth("mbert"), name="mBERT").status_code == 201
    assert reported(client, h, name="\u039cBERT").status_code == 409
    assert reported(client, h, name="\u00b5BERT").status_code == 201
    # a name in Cyrillic is a name of its own (only a name that reads as another is refused)
    assert reported(client, h, name="\u041c\u043e\u0434\u0435\u043b\u044c").status_code == 201


@pytest.mark.parametrize("mark", ["\u034f", "\ufe0f", "\u3164", "\u2800", "\u00ad", "\U000e0041", "\u180e"])
def test_invisible_characters_do_not_make_another_name(client, auth, mark):  # noqa: ANN001
    h = auth("poser")
    for name in (f"ElasticBERT-BASE{mark}", f"Elastic{mark}BERT-BASE"):
        r = reported(client, h, name=name)
        assert r.status_code == 409, (name, r.text)
    r = reported(client, h, name=f"Own{mark} model", public=False)
    assert r.status_code == 201 and r.json()["name"] == "Own model"  # stored without it


def test_entries_nobody_can_see_do_not_hold_their_name(client, auth, drain):  # noqa: ANN001
    owner = auth("secretive")
    upload(client, owner, name="Secret Project X", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    drain()  # fails: public in name only
    assert reported(client, auth("carol2"), name="secret project x").status_code == 201


def test_a_name_taken_while_queued_keeps_the_entry_private(client, auth, drain):  # noqa: ANN001
    carol = auth("carol3")
    sub = upload(client, carol, name="Twin", public=True)  # queued: holds no name yet
    assert reported(client, auth("dave3"), name="twin").status_code == 201
    drain()
    mine = client.get(f"/api/submissions/{sub['id']}", headers=carol).json()
    assert mine["status"] == "scored" and mine["public"] is False
    assert "not published: another public entry is called 'Twin'" in mine["log"]
    names = [m["name"].lower() for m in client.get("/api/models").json()]
    assert names.count("twin") == 1


def test_the_names_lock_is_held_until_the_transaction_ends(settings):  # noqa: ANN001
    create_app(settings)
    _, sessions = open_database(settings.database_url, upgrade=False)
    path = settings.database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, timeout=0.1)
    with sessions() as s:
        service.lock_public_names(s)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("INSERT INTO meta (key, value) VALUES ('probe', '1')")
        s.rollback()
    other.execute("INSERT INTO meta (key, value) VALUES ('probe', '1')")  # free again
    other.rollback()
