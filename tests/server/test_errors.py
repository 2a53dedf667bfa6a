"""Malformed requests are 4xx with a message (HTML for browsers, JSON for scripts), never a 500."""

from __future__ import annotations

from server_setup import web_login


def test_huge_ids_are_not_a_server_error(client, auth):  # noqa: ANN001
    h = auth("counter")
    for url in [
        "/models/99999999999999999999",
        "/api/models/99999999999999999999",
        "/models/0",
        "/api/models/-1",
    ]:
        assert client.get(url).status_code in (404, 422), url
    for url in [
        "/api/submissions/99999999999999999999",
        f"/api/submissions/{2**63}",
        f"/api/submissions/{2**31}",
    ]:
        assert client.get(url, headers=h).status_code in (404, 422), url
        assert client.delete(url, headers=h).status_code in (404, 422), url
        assert client.patch(url, headers=h, json={"public": True}).status_code in (404, 422), url
    assert client.get(f"/api/models/{2**31 - 1}").status_code == 404


def test_validation_errors_are_html_for_browsers(client):  # noqa: ANN001
    html = {"accept": "text/html,application/xhtml+xml"}
    r = client.get("/models/1.5", headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "invalid request" in r.text and "model_id" in r.text
    assert client.get("/api/models/1.5", headers=html).headers["content-type"].startswith("application/json")
    assert client.get("/models/1.5").headers["content-type"].startswith("application/json")  # scripts
    csrf = web_login(client, "former")
    r = client.post("/submit", data={"csrf": csrf}, headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "file: missing" in r.text and "name: missing" in r.text
    assert 'id="account-link">former<' in r.text  # the error page's header knows who is logged in
    assert 'id="account-link">former<' in client.get("/models/99999", headers=html).text


def test_lone_surrogates_are_a_400_not_a_500(client, auth):  # noqa: ANN001
    h = auth("surrogate")
    for url, body, headers in [
        ("/api/tokens", '{"username":"\\ud800","password":"x"}', {}),
        (
            "/api/submissions/reported",
            '{"name":"ok","params_m":1,"paper_url":"https://a.b/\\ud800","tasks":{"sst-2":{"elue_score":1}}}',
            h,
        ),
    ]:
        r = client.post(url, content=body, headers={**headers, "content-type": "application/json"})
        assert r.status_code == 400 and "surrogate" in r.json()["detail"], (url, r.text)
    assert client.get("/api/submissions", headers=h).json() == []


def test_a_refused_json_body_with_nan_or_infinity_is_a_422_not_a_500(client, auth, admin_headers):  # noqa: ANN001
    """Python's JSON reader takes NaN, Infinity and 1e400; a body refused by validation was answered with its
    input, which JSON cannot carry: a 500 ("Out of range float values are not JSON compliant")."""
    h = auth("nan")
    for url, method, body, headers in [
        ("/api/submissions/reported", "POST", '{"params_m":NaN,"paper_url":"https://a.b","tasks":{}}', h),
        (
            "/api/submissions/reported",
            "POST",
            '{"name":"x","params_m":1,"paper_url":"https://a.b","tasks":{"sst-2":{"points":[{"mflops":Infinity}]}}}',
            h,
        ),
        ("/api/admin/baselines/sst-2", "PUT", '{"submission_id":1e400}', admin_headers),
        ("/api/admin/submissions/1/hide", "POST", '{"hidden":-Infinity}', admin_headers),
        ("/api/submissions/reported", "POST", '{"name":"\\ud800","params_m":1}', h),
    ]:
        r = client.request(method, url, content=body, headers={**headers, "content-type": "application/json"})
        assert r.status_code == 422, (url, body, r.text)
        assert r.json()["detail"], r.text
    assert client.get("/api/submissions", headers=h).json() == []


def test_a_bug_is_answered_as_other_errors_are(app, monkeypatch):  # noqa: ANN001
    """An unexpected exception was Starlette's bare 'Internal Server Error' text, for the API and the pages alike,
    without the security headers: now JSON `{"detail"}` for the API, the error page for a browser, the headers."""
    from fastapi.testclient import TestClient

    def broken():  # noqa: ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.elue.board, "get", broken)
    c = TestClient(app, raise_server_exceptions=False)
    api = c.get("/api/leaderboard")
    assert api.status_code == 500 and api.json()["detail"].startswith("internal error")
    page = c.get("/leaderboard", headers={"accept": "text/html"})
    assert page.status_code == 500 and "<h1>500</h1>" in page.text and "a bug" not in page.text
    for r in (api, page):
        assert (
            r.headers["x-frame-options"] == "DENY"
            and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        )
        assert r.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in api.headers  # served over http


def test_a_bug_on_an_https_site_is_answered_with_hsts(tmp_path, monkeypatch):  # noqa: ANN001
    """An https site (Secure cookies) sends HSTS on every answer: the 500 of a bug, answered outside the
    middleware that adds it, had the other security headers but not this one."""
    from fastapi.testclient import TestClient
    from server_setup import make_settings

    from elue.server import create_app

    app = create_app(make_settings(tmp_path, secure_cookies=True))

    def broken():  # noqa: ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.elue.board, "get", broken)
    c = TestClient(app, raise_server_exceptions=False, base_url="https://testserver")
    assert c.get("/api/tasks").headers["strict-transport-security"] == "max-age=31536000"
    r = c.get("/api/leaderboard")
    assert r.status_code == 500 and r.headers["strict-transport-security"] == "max-age=31536000"
