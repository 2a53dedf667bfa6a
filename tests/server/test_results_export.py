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
    assert next(r for r in rows if r["model"] == "files")["file"] == "'\t=1+1"
    roberta = next(r for r in rows if r["model"] == "RoBERTa-BASE" and r["task"] == "sst-2")
    assert float(roberta["task_elue_score"]) < 0  # negative numbers stay numbers
