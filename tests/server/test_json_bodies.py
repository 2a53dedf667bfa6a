"""JSON bodies of the API take JSON types only: a flag is true/false, an id is an integer. Pydantic's lax mode
would read "yes", "off", "1" or 0 as a flag and "5" or 5.0 as an id, so a mistyped script would publish, hide or
choose an entry instead of being told."""

from __future__ import annotations

import json

import httpx
import pytest
import typer
from server_helpers import api_reported as reported

from elue.cli.server_commands import _submit


def test_flags_must_be_json_booleans(client, auth, admin_headers):  # noqa: ANN001
    h = auth("flags")
    for public in ["yes", "true", "1", 1, 0, "off"]:
        r = reported(client, h, public=public)
        assert r.status_code == 422 and "valid boolean" in r.text, (public, r.text)
    assert client.get("/api/submissions", headers=h).json() == []
    sid = reported(client, h, public=False).json()["id"]
    for public in ["yes", 1, "false"]:
        r = client.patch(f"/api/submissions/{sid}", headers=h, json={"public": public})
        assert r.status_code == 422, (public, r.text)
    assert client.get(f"/api/submissions/{sid}", headers=h).json()["public"] is False
    assert client.patch(f"/api/submissions/{sid}", headers=h, json={"public": True}).json()["public"] is True
    hide = f"/api/admin/submissions/{sid}/hide"
    for hidden in ["on", 1]:
        assert client.post(hide, headers=admin_headers, json={"hidden": hidden}).status_code == 422, hidden
    assert client.post(hide, headers=admin_headers, json={"hidden": False}).json()["hidden"] is False


def test_a_baseline_id_must_be_a_json_integer(client, auth, admin_headers, drain):  # noqa: ANN001
    sid = reported(client, auth("base"), name="Curve").json()["id"]
    url = "/api/admin/baselines/sst-2"
    for given in [str(sid), float(sid)]:
        r = client.put(url, headers=admin_headers, json={"submission_id": given})
        assert r.status_code == 422, (given, r.text)
    r = client.put(url, headers=admin_headers, json={"submission_id": sid})
    assert r.status_code == 200 and r.json()["submission_id"] == sid, r.text


def test_elue_submit_names_the_field_of_a_422(tmp_path, capsys):  # noqa: ANN001
    """`elue submit --reported` with `"public": "yes"` in the file: the refusal names the field, not a dict."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["public"] == "yes"  # sent as the file has it; the server judges
        detail = [{"type": "bool_type", "loc": ["body", "public"], "msg": "Input should be a valid boolean"}]
        return httpx.Response(422, json={"detail": detail})

    entry = tmp_path / "entry.json"
    entry.write_text(json.dumps({"name": "P", "params_m": 1, "public": "yes", "tasks": {}}))
    client = httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))
    with pytest.raises(typer.Exit) as e:
        _submit(client, "http://testserver", entry, None, None, "https://x.org/p", "", True, False, 60.0)
    assert e.value.exit_code == 1
    assert "rejected (422): public: Input should be a valid boolean" in capsys.readouterr().err


def test_a_field_a_json_body_does_not_have_is_a_422_naming_it(client, auth, admin_headers):  # noqa: ANN001
    """`{"publc": true}` was a 200 that changed nothing (the script went on as if published), and a reported
    task's `"elue_scor"` was dropped, so the entry showed a computed score instead of the paper's."""
    h = auth("typos")
    sid = reported(client, h, public=False).json()["id"]
    r = client.patch(f"/api/submissions/{sid}", headers=h, json={"publc": True})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "publc"]
    assert "Extra inputs are not permitted" in r.json()["detail"][0]["msg"]
    assert client.get(f"/api/submissions/{sid}", headers=h).json()["public"] is False
    task = {"points": [{"mflops": 1500, "performance": 85.0}], "elue_scor": 0.5}
    r = reported(client, h, name="Typo in a task", tasks={"sst-2": task})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tasks", "sst-2", "elue_scor"]
    point = {"mflops": 1500, "performance": 85.0, "fille": "k=3"}
    r = reported(client, h, name="Typo in a point", tasks={"sst-2": {"points": [point]}})
    assert r.status_code == 422, r.text
    assert reported(client, h, name="Typo at the top", paper="https://x.org").status_code == 422
    r = client.post("/api/tokens", json={"username": "typos", "password": "password123", "nmae": "ci"})
    assert r.status_code == 422
    hide = f"/api/admin/submissions/{sid}/hide"
    assert client.post(hide, headers=admin_headers, json={"hiden": False}).status_code == 422
    r = client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": 1, "x": 1})
    assert r.status_code == 422
    # what the docs list still goes through
    assert client.patch(f"/api/submissions/{sid}", headers=h, json={"public": True}).json()["public"] is True
