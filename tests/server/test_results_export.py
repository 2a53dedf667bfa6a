"""The open results (JSON and CSV)."""

from __future__ import annotations

from server_helpers import api_reported as reported


def test_results_csv_neutralises_formulas(client, auth):  # noqa: ANN001
    import csv
    import io

    h = auth("formula")
    names = ['=HYPERLINK("https://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)"]
    for name in names:
        assert reported(client, h, name=name).status_code == 201, name
    pts = {"sst-2": {"points": [{"mflops": 1500, "performance": 85.0, "file": "\t=1+1"}]}}
    assert reported(client, auth("formula2"), name="files", tasks=pts).status_code == 201
    rows = list(csv.DictReader(io.StringIO(client.get("/api/results.csv").text)))
    got = {r["model"] for r in rows}
    for name in names:
        assert "'" + name in got and name not in got
    assert next(r for r in rows if r["model"] == "files")["file"] == "'=1+1"  # the label's tab is dropped
    roberta = next(r for r in rows if r["model"] == "RoBERTa-BASE" and r["task"] == "sst-2")
    assert float(roberta["task_elue_score"]) < 0  # negative numbers stay numbers


def test_a_reported_file_label_is_one_line(client, auth):  # noqa: ANN001
    """A reported point's file label "k=3\nlayers" was stored as given: the CSV's point took two lines (any
    line-based reader split it) and the chart's hover text broke."""
    import csv
    import io

    labels = ["k=3\nlayers", "\tk=6\r\n", "k=\u200b9\x07"]
    pts = {
        "sst-2": {
            "points": [{"mflops": 1000 + i, "performance": 85.0, "file": f} for i, f in enumerate(labels)]
        }
    }
    assert reported(client, auth("labels"), name="labels", tasks=pts).status_code == 201
    text = client.get("/api/results.csv").text
    assert len(text.splitlines()) == len(list(csv.DictReader(io.StringIO(text)))) + 1  # one line per point
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["model"] == "labels"]
    assert [r["file"] for r in rows] == ["k=3 layers", "k=6", "k=9"]
    points = next(m for m in client.get("/api/results.json").json()["models"] if m["name"] == "labels")[
        "tasks"
    ]["sst-2"]["points"]
    assert [p["file"] for p in points] == ["k=3 layers", "k=6", "k=9"]


def test_no_export_or_page_names_an_entry_the_public_cannot_see(client, auth, admin_headers, drain):  # noqa: ANN001
    """Private, hidden, failed, queued entries and private reported ones are in no open download, list, chart or
    page, by name or by id; the one public entry is in every one of them."""
    from server_helpers import SUB
    from server_helpers import api_upload as upload

    h = auth("secretive")
    upload(client, h, name="zz-private-upload")
    hidden = upload(client, h, name="zz-hidden-upload", public=True)
    upload(client, h, name="zz-failed-upload", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    upload(client, h, name="zz-seen-upload", public=True)
    drain()
    assert client.post(
        f"/api/admin/submissions/{hidden['id']}/hide", headers=admin_headers, json={}
    ).is_success
    upload(client, h, name="zz-queued-upload", public=True)
    paper = reported(
        client, auth("secretive2"), name="zz-private-paper", public=False
    )  # 5 uploads a day each
    assert paper.status_code == 201
    secret = [
        "zz-private-upload",
        "zz-hidden-upload",
        "zz-failed-upload",
        "zz-queued-upload",
        "zz-private-paper",
    ]
    ids = {s["name"]: s["id"] for s in client.get("/api/submissions", headers=h).json()}
    ids["zz-private-paper"] = paper.json()["id"]
    urls = ["/", "/leaderboard", "/leaderboard?track=110", "/tasks/sst-2", "/api/leaderboard", "/api/models"]
    urls += ["/api/leaderboard?track=110", "/api/tasks/sst-2", "/api/results.json", "/api/results.csv"]
    for url in urls:
        text = client.get(url).text
        assert "zz-seen-upload" in text or url == "/", url  # the home page shows the top 5
        assert not [name for name in secret if name in text], url
        for name in secret:
            assert f'/models/{ids[name]}"' not in text and f'"id":{ids[name]},' not in text, (url, name)
    for name in secret:
        assert client.get(f"/api/models/{ids[name]}").status_code == 404, name
        assert client.get(f"/models/{ids[name]}").status_code == 404, name
        assert client.get(f"/api/submissions/{ids[name]}").status_code == 404, name
