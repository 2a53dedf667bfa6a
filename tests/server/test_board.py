"""The computed board: ranks and sorting, size tracks, stored rows that are not finite."""

from __future__ import annotations

import csv
import io
import json

from server_helpers import PUBLIC_URLS, api_upload
from server_helpers import api_reported as reported
from sqlalchemy import select

from elue.server.db import Point, Submission, TaskResult, bump_board_version


def test_sorting_keeps_unranked_rows_at_the_bottom(client, auth):  # noqa: ANN001
    import re

    assert reported(client, auth("inc"), name="Incomplete one").status_code == 201

    def ids(url: str) -> list:
        return [(r["rank"], r["name"]) for r in client.get(url).json()["rows"]]

    default = ids("/api/leaderboard")
    ranks = [k for k, _ in default]
    n = sum(k is not None for k in ranks)
    assert ranks[:n] == sorted(ranks[:n]) and ranks[0] == 1 and all(k is None for k in ranks[n:])
    assert ids("/api/leaderboard?sort=rank&order=asc") == default
    desc = ids("/api/leaderboard?sort=rank&order=desc")
    assert desc[:n] == default[:n][::-1] and desc[n:] == default[n:]
    # the page's "#" link: first click = rank 1 first; "Model": A→Z first
    html = client.get("/leaderboard").text
    assert 'href="?track=elue&amp;sort=rank&amp;order=desc"' in html or "sort=rank&order=desc" in html
    name_link = re.search(r'href="([^"]*sort=name[^"]*)"', html).group(1).replace("&amp;", "&")
    assert name_link.endswith("order=asc#board")  # the sorted page opens at the table, not the top
    name_link = name_link.removesuffix("#board")
    page = client.get("/leaderboard" + name_link).text
    names = re.findall(r'<a href="/models/\d+">([^<]+)</a>', page)
    assert len(names) >= 10 and names == sorted(names, key=str.lower)
    first_rows = re.findall(
        r'<tr class="[^"]*" data-id="(\d+)"', client.get("/leaderboard?sort=rank&order=asc").text
    )
    assert first_rows[0] == str(
        next(r["id"] for r in client.get("/api/leaderboard").json()["rows"] if r["rank"] == 1)
    )


def test_size_tracks_list_reported_entries_without_performance(client):  # noqa: ANN001
    rows = client.get("/api/leaderboard?track=40").json()["rows"]
    albert = [r for r in rows if r["name"] == "ALBERT-BASE"]
    assert albert and albert[0]["complete"] is False and albert[0]["rank"] is None


def test_a_bad_stored_row_does_not_break_the_board(client, auth):  # noqa: ANN001
    """Rows written before the checks (or by another writer) with inf numbers are skipped, not a 500."""
    assert reported(client, auth("alice"), name="Broken").status_code == 201
    assert reported(client, auth("bob"), name="Fine", tasks={"mrpc": {"elue_score": 1.0}}).status_code == 201
    from sqlalchemy import select

    from elue.server.db import Point, bump_board_version

    with client.app.state.elue.sessions() as s:
        sub = s.scalar(select(Submission).where(Submission.name == "Broken"))
        sub.params_m = float("inf")
        for p in s.scalars(select(Point).join(TaskResult).where(TaskResult.submission_id == sub.id)):
            p.mflops = float("inf")
        sub.tasks.append(TaskResult(task="mrpc", reported_score=float("-inf"), params_m=float("inf")))
        bump_board_version(s)
        s.commit()
        sid = sub.id
    client.app.state.elue.board.invalidate()
    for url in [*PUBLIC_URLS, f"/models/{sid}", f"/api/models/{sid}"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
    names = [m["name"] for m in client.get("/api/results.json").json()["models"]]
    assert "Fine" in names
    json.loads(client.get("/api/results.json").text)  # strict JSON: no NaN / Infinity


def test_a_non_finite_stored_metric_does_not_break_the_pages(client, auth, drain):  # noqa: ANN001
    sub = api_upload(client, auth("alice"), name="m", public=True)
    drain()
    with client.app.state.elue.sessions() as s:  # a row of another writer (the service never stores NaN)
        for p in s.scalars(select(Point)):
            if p.metrics:
                p.metrics = {**p.metrics, "accuracy": float("nan")}
        bump_board_version(s)
        s.commit()
    client.app.state.elue.board.invalidate()
    for url in ["/api/results.csv", f"/models/{sub['id']}", "/api/results.json", f"/api/models/{sub['id']}"]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])


def test_a_reported_entry_is_sized_by_its_largest_task_model(client, auth):  # noqa: ANN001
    """Spec §5: a size track takes the largest parameter count over the entry's points. A reported entry of
    30M whose SST-2 model has 300M was listed (and ranked) on the ≤ 40M track."""
    tasks = {
        "sst-2": {"points": [{"mflops": 1000, "performance": 90.0}], "params_m": 300},
        "imdb": {"points": [{"mflops": 1000, "performance": 90.0}]},
    }
    r = reported(client, auth("alice"), name="Big SST-2 head", params_m=30, tasks=tasks)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["params_m"] == 300
    for budget in (40, 55, 70, 110):
        ids = [row["id"] for row in client.get(f"/api/leaderboard?track={budget}").json()["rows"]]
        assert sid not in ids, budget
    row = next(row for row in client.get("/api/leaderboard").json()["rows"] if row["id"] == sid)
    assert row["params_m"] == 300
    result = client.get(f"/api/models/{sid}").json()["result"]
    assert result["params_m"] == 300
    # IMDb, given no params of its own, has the entry's 30M as given (it showed the SST-2 model's 300M, in the
    # JSON, the CSV and on the model page)
    assert result["tasks"]["imdb"]["params_m"] == 30 and result["tasks"]["sst-2"]["params_m"] == 300
    rows = list(csv.DictReader(io.StringIO(client.get("/api/results.csv").text)))
    assert {r["task"]: float(r["params_m"]) for r in rows if r["model_id"] == str(sid)} == {
        "sst-2": 300,
        "imdb": 30,
    }


def test_an_older_reported_row_is_sized_by_its_largest_task_model(client, auth):  # noqa: ANN001
    """A row stored before the entry's params were the largest of its tasks is sized the same way."""
    r = reported(client, auth("alice"), name="Old row", params_m=30)
    sid = r.json()["id"]
    with client.app.state.elue.sessions() as s:
        s.scalar(select(TaskResult).where(TaskResult.submission_id == sid)).params_m = 300.0
        bump_board_version(s)
        s.commit()
    client.app.state.elue.board.invalidate()
    assert sid not in [row["id"] for row in client.get("/api/leaderboard?track=40").json()["rows"]]
    assert client.get(f"/api/models/{sid}").json()["result"]["params_m"] == 300
