"""Pages and static files: HEAD, favicon, the guide, the task page without a baseline curve."""

from __future__ import annotations


def test_head_requests(client):  # noqa: ANN001
    for url in [
        "/",
        "/leaderboard",
        "/tasks/sst-2",
        "/api/leaderboard",
        "/api/results.csv",
        "/datasets/sst-2/test.tsv",
    ]:
        get = client.get(url)
        head = client.head(url)
        assert head.status_code == 200, url
        assert head.content == b""
        assert head.headers.get("content-type") == get.headers.get("content-type")
    assert client.head("/models/99999").status_code == 404


def test_head_on_a_download_sends_headers_without_reading_the_file(client, monkeypatch):  # noqa: ANN001
    import starlette.responses as responses

    opened: list = []
    real_open = responses.anyio.open_file

    async def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        opened.append(args[0])
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(responses.anyio, "open_file", spy)
    for url in ("/datasets/sst-2/test.tsv", "/static/plotly.min.js"):
        head = client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert opened == [], url
        get = client.get(url)
        assert len(get.content) == int(head.headers["content-length"]) > 0 and len(opened) == 1, url
        opened.clear()


def test_favicon(client):  # noqa: ANN001
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00" and b"PNG" in r.content


def test_the_guide_names_the_configured_address(client, settings):  # noqa: ANN001
    assert f"--server {settings.public_url} --token" in client.get("/guide").text
    # never the request's Host header: the guide is cached for every visitor
    assert "evil.example" not in client.get("/guide", headers={"host": "evil.example"}).text


def test_the_guide_states_the_limits(client, settings):  # noqa: ANN001
    text = " ".join(client.get("/guide").text.split())
    assert (
        f"{settings.daily_limit} submissions a day" in text
        and f"at most {settings.max_points} test files" in text
    )


def test_a_task_without_a_baseline_curve_says_so(client):  # noqa: ANN001
    assert 'id="no-baseline"' in client.get("/tasks/mrpc").text
    assert 'id="no-baseline"' not in client.get("/tasks/sst-2").text


def test_an_unscored_entry_s_page_says_it_has_no_results_yet(client, auth, drain):  # noqa: ANN001
    """The owner's page of a queued (or failed) entry listed every dataset as "not submitted", its SST-2
    files included, and the entry as incomplete."""
    from server_helpers import api_upload

    h = auth("alice")
    sub = api_upload(client, h, name="waiting")
    page = client.get(f"/models/{sub['id']}", headers=h).text
    assert "No results yet (status: queued)" in page and "not submitted" not in page
    assert "not all six datasets" not in page
    assert client.get(f"/api/models/{sub['id']}", headers=h).json().get("result") is None
    drain()
    page = client.get(f"/models/{sub['id']}", headers=h).text
    assert "No results yet" not in page and "not submitted" in page  # scored: SST-2 only
