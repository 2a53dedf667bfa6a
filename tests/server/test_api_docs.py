"""The OpenAPI description against the API's real answers: every route documents what it answers (a model for
success, `{"detail"}` for its refusals), and what it answers fits those models, unknown fields refused."""

from __future__ import annotations

import re

from pydantic import TypeAdapter
from server_helpers import api_reported, api_upload

from elue.server import api_models as out
from elue.tasks import TASK_NAMES


def fits(model, response, status: int = 200):  # noqa: ANN001, ANN201
    assert response.status_code == status, response.text
    return TypeAdapter(model).validate_python(response.json(), strict=False)


def test_every_api_route_documents_its_answers(client):  # noqa: ANN001
    spec = client.get("/api/openapi.json").json()
    ops = [(m, p, op) for p, methods in spec["paths"].items() for m, op in methods.items()]
    assert len(ops) >= 17
    for method, path, op in ops:
        ok = [c for c in op["responses"] if c.startswith("2")]
        assert len(ok) == 1, (method, path)
        content = op["responses"][ok[0]].get("content", {})
        if ok[0] == "204":
            assert content == {}, path
        elif path == "/api/results.csv":
            assert list(content) == ["text/csv"]  # was documented as JSON
        else:
            assert content["application/json"]["schema"] != {}, (method, path)  # was {} everywhere
        refusals = [c for c in op["responses"] if c.startswith("4") and c != "422"]
        if method != "get" or "{" in path or path in ("/api/me", "/api/submissions", "/api/leaderboard"):
            assert refusals, (method, path)
        if method != "get":  # any request body over its limit is a 413 before the route sees it
            assert "413" in refusals, (method, path)
        for c in refusals:
            assert op["responses"][c]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorDetail"
            )
    # the /api/docs page is built from the same description
    page = client.get("/api/docs").text
    assert "ErrorDetail" in page
    links = set(re.findall(r'href="#model-([^"]+)"', page))
    assert "Leaderboard" in links and links <= set(
        re.findall(r'id="model-([^"]+)"', page)
    )  # each leads somewhere


def test_a_refusal_is_described_as_the_route_gives_it(client):  # noqa: ANN001
    """/api/leaderboard's 404 (an unknown track) was documented as "No such entry, or not one you may see", and
    POST /api/tokens' 409 (too many tokens) as "a taken name, a baseline"."""
    paths = client.get("/api/openapi.json").json()["paths"]

    def said(path: str, method: str, code: str) -> str:
        return paths[path][method]["responses"][code]["description"]

    assert said("/api/leaderboard", "get", "404") == "No such track"
    assert said("/api/tasks/{task}", "get", "404") == "No such dataset"
    assert "tokens" in said("/api/tokens", "post", "409")
    assert "CSRF" in said("/api/tokens", "post", "403") and "admins" not in said("/api/tokens", "post", "403")
    assert "log-ins" in said("/api/tokens", "post", "429")
    # the general words where they fit
    assert said("/api/models/{model_id}", "get", "404") == "No such entry, or not one you may see"


def test_the_answers_fit_the_documented_models(client, auth, admin_headers, drain):  # noqa: ANN001
    alice, bob = auth("alice"), auth("bob")
    mine = api_upload(client, alice, name="measured one", public=True)
    TypeAdapter(out.SubmissionOut).validate_python(mine)
    drain()
    paper = fits(
        out.SubmissionOut,
        api_reported(client, alice, name="score only", tasks={"snli": {"elue_score": 1.5}}),
        201,
    )
    fits(
        out.SubmissionOut,
        client.patch(f"/api/submissions/{paper.id}", headers=alice, json={"name": "renamed"}),
    )
    scored = fits(out.SubmissionOut, client.get(f"/api/submissions/{mine['id']}", headers=alice))
    assert scored.status == "scored" and scored.log is not None and scored.result is not None
    seen = fits(out.SubmissionOut, client.get(f"/api/submissions/{mine['id']}"))
    assert seen.log is None and seen.result is not None
    fits(list[out.SubmissionOut], client.get("/api/submissions", headers=alice))
    fits(out.Me, client.get("/api/me", headers=alice))
    fits(out.TokenCreated, client.post("/api/tokens", json={"username": "bob", "password": "password123"}))

    for track in ("elue", "40", "55", "70", "110"):
        board = fits(out.Leaderboard, client.get(f"/api/leaderboard?track={track}"))
        assert board.rows
    fits(list[out.TaskInfo], client.get("/api/tasks"))
    for task in TASK_NAMES:
        fits(out.TaskView, client.get(f"/api/tasks/{task}"))
    models = fits(list[out.ModelSummary], client.get("/api/models"))
    for m in models:
        fits(out.SubmissionOut, client.get(f"/api/models/{m.id}"))
    results = fits(out.Results, client.get("/api/results.json"))
    assert {m.name for m in results.models} >= {"measured one", "renamed"}

    fits(
        out.BaselineSet,
        client.put("/api/admin/baselines/sst-2", headers=admin_headers, json={"submission_id": 1}),
    )
    fits(
        out.HiddenSet, client.post(f"/api/admin/submissions/{paper.id}/hide", headers=admin_headers, json={})
    )
    # the refusals: {"detail": text}
    fits(out.ErrorDetail, client.get("/api/me"), 401)
    fits(
        out.ErrorDetail, client.put("/api/admin/baselines/sst-2", headers=bob, json={"submission_id": 1}), 403
    )
    fits(out.ErrorDetail, client.get("/api/submissions/999999", headers=bob), 404)
    fits(out.ErrorDetail, client.get("/api/leaderboard?track=9"), 404)
    fits(out.ErrorDetail, api_reported(client, bob, name="measured one"), 409)
    fits(out.ErrorDetail, client.delete("/api/submissions/1", headers=admin_headers), 409)  # the baseline
    assert client.delete(f"/api/submissions/{mine['id']}", headers=alice).status_code == 204


def test_the_api_page_s_headings_do_not_skip_a_level(client):  # noqa: ANN001
    """The endpoints were h3 straight under the page's h1 (no h2): a screen reader's list of headings by level
    showed the page with nothing at level 2 before "Models"."""
    import re

    levels = [int(n) for n in re.findall(r"<h([1-6])\b", client.get("/api/docs").text)]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels[:-1], levels[1:], strict=True)), levels
