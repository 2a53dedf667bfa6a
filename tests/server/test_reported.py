"""Reported entries (numbers from a paper): finite, in range, JSON numbers; links; one task once."""

from __future__ import annotations

from server_helpers import PUBLIC_URLS, api_upload
from server_helpers import api_reported as reported
from server_setup import web_login


def test_non_finite_reported_numbers_are_refused(client, auth):  # noqa: ANN001
    h = auth("mallory")
    raw = (
        '{"name":"x","params_m":1e999,"paper_url":"https://x.org/p","public":true,'
        '"tasks":{"sst-2":{"points":[{"mflops":1e999,"performance":90}]},"mrpc":{"elue_score":NaN}}}'
    )
    r = client.post(
        "/api/submissions/reported", headers={**h, "content-type": "application/json"}, content=raw
    )
    assert r.status_code == 400, r.text
    for tasks in [
        {"sst-2": {"points": [{"mflops": 1e12, "performance": 90}]}},
        {"sst-2": {"points": [{"mflops": -1, "performance": 90}]}},
        {"sst-2": {"points": [{"mflops": 100, "performance": 100.5}]}},
        {"mrpc": {"elue_score": 1e300}},
        {"mrpc": {"elue_score": -101}},
        {"mrpc": {"elue_score": 1.0, "params_m": -5}},
    ]:
        r = reported(client, h, tasks=tasks)
        assert r.status_code == 400, (tasks, r.text)
    raw_params_only = (
        '{"name":"x","params_m":1e999,"paper_url":"https://x.org/p","public":true,'
        '"tasks":{"mrpc":{"elue_score":1}}}'
    )
    r = client.post(
        "/api/submissions/reported",
        headers={**h, "content-type": "application/json"},
        content=raw_params_only,
    )
    assert r.status_code == 400 and "params_m" in r.json()["detail"], r.text
    assert client.get("/api/submissions", headers=h).json() == []
    # the web form: inf params, nan score, an overflowing MFLOPs
    client.cookies.clear()
    csrf = web_login(client, "mallory2")
    for params, numbers in [
        ("inf", "sst-2, 1000, 50"),
        ("10", "mrpc, score=nan"),
        ("10", "sst-2, 1e400, 50"),
    ]:
        r = client.post(
            "/submit/reported",
            data={
                "name": "x",
                "params_m": params,
                "numbers": numbers,
                "paper_url": "https://x.org/p",
                "public": "1",
                "csrf": csrf,
            },
            headers={"accept": "text/html"},
        )
        assert r.status_code == 400, (params, numbers, r.text[:300])
    for url in PUBLIC_URLS:
        assert client.get(url).status_code == 200, url


def test_reported_numbers_must_be_json_numbers(client, auth):  # noqa: ANN001
    h = auth("lax")
    for tasks in [
        {"sst-2": {"points": [{"mflops": 100, "performance": True}]}},
        {"sst-2": {"points": [{"mflops": "100", "performance": 90}]}},
        {"mrpc": {"elue_score": False, "params_m": 10}},
    ]:
        r = reported(client, h, tasks=tasks)
        assert r.status_code == 422 and "valid number" in r.text, (tasks, r.text)  # FastAPI's type errors
    assert reported(client, h, params_m=True).status_code == 422
    assert client.get("/api/submissions", headers=h).json() == []
    assert reported(client, h, params_m=10).status_code == 201  # ints are numbers


def test_a_task_given_twice_is_refused(client, auth):  # noqa: ANN001
    tasks = {"sst-2": {"points": [{"mflops": 5, "performance": 50}]}, "SST2": {"elue_score": 3}}
    r = reported(client, auth("twice"), tasks=tasks)
    assert r.status_code == 400 and "given twice" in r.json()["detail"]


def test_links_long_and_upper_case(client, auth):  # noqa: ANN001
    h = auth("linker")
    r = reported(client, h, paper_url="https://example.org/" + "a" * 600)
    assert r.status_code == 400 and "500 characters" in r.json()["detail"]
    r = reported(client, h, paper_url="HTTPS://Example.org/Paper")
    assert r.status_code == 201 and r.json()["paper_url"] == "HTTPS://Example.org/Paper"
    assert reported(client, h, name="js", paper_url="JavaScript:alert(1)").status_code == 400


def test_a_reported_entry_cannot_lose_its_paper_link(client, auth):  # noqa: ANN001
    h = auth("alice")
    body = {
        "name": "r",
        "params_m": 1,
        "paper_url": "https://example.com/p",
        "tasks": {"sst-2": {"elue_score": 1}},
    }
    sid = client.post("/api/submissions/reported", headers=h, json=body).json()["id"]
    r = client.patch(f"/api/submissions/{sid}", headers=h, json={"paper_url": ""})
    assert r.status_code == 400 and "paper" in r.json()["detail"]
    assert client.get(f"/api/submissions/{sid}", headers=h).json()["paper_url"] == "https://example.com/p"
    sid2 = api_upload(client, h)["id"]  # a measured entry needs none
    assert client.patch(f"/api/submissions/{sid2}", headers=h, json={"paper_url": ""}).status_code == 200


def test_a_reported_entry_is_not_finished_before_it_was_created(client, auth):  # noqa: ANN001
    """finished_at was set when the row was built and created_at at its insert, a moment later: a script computing
    how long an entry took got a negative time (the seeded entries too)."""
    sub = reported(client, auth("clock")).json()
    assert sub["finished_at"] == sub["created_at"]
    seeded = client.get("/api/models/1").json()
    assert seeded["finished_at"] == seeded["created_at"]
