"""Pages and static files: HEAD, favicon, the guide, the task page without a baseline curve."""

from __future__ import annotations

from server_setup import make_settings


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


def test_security_headers_on_every_answer(client, settings):  # noqa: ANN001
    """No page may be framed by another site (a Publish or Delete button clickjacked), nothing is sniffed as
    another type, and scripts run only from the site's files: on pages, API answers, downloads, errors, static
    files and answers replayed from the response cache alike."""
    from fastapi.testclient import TestClient

    from elue.server import create_app

    cached = TestClient(create_app(make_settings(settings.state_dir.parent / "cached", cache_seconds=30)))
    urls = ["/", "/leaderboard", "/tasks/sst-2", "/api/leaderboard", "/api/results.csv", "/no-such-page"]
    urls += ["/datasets/sst-2/test.tsv", "/static/plotly.min.js", "/static/site.js", "/api/models/abc"]
    for c in (client, cached, cached):  # the second round of `cached` is answered from its cache
        for url in urls:
            r = c.get(url, headers={"accept": "text/html"})
            assert r.headers["x-frame-options"] == "DENY", url
            assert r.headers["x-content-type-options"] == "nosniff", url
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp, url
    big = client.post("/login", content=b"x", headers={"content-length": str(10**12)})
    assert big.status_code == 413 and big.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in client.get("/").headers  # served over http
    https = TestClient(
        create_app(make_settings(settings.state_dir.parent / "https", public_url="https://elue.example"))
    )
    assert https.get("/").headers["strict-transport-security"] == "max-age=31536000"


def test_pages_have_no_inline_script(client):  # noqa: ANN001
    """The policy runs no inline script, handler or javascript: link: each page's own code is in /static."""
    import re

    from server_setup import web_login

    csrf = web_login(client, "inline")
    r = client.post("/account/tokens", data={"name": "t", "csrf": csrf})
    sub = client.post(
        "/submit/reported",
        data={
            "name": "x",
            "params_m": "1",
            "paper_url": "https://e.org",
            "numbers": "sst-2, 10, 80",
            "csrf": csrf,
        },
    )
    pages = [r.text, sub.text, client.get("/models/999999", headers={"accept": "text/html"}).text]
    pages += [
        client.get(u).text for u in ("/", "/leaderboard", "/tasks/sst-2", "/account", "/submit", "/api/docs")
    ]
    for html in pages:
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert all(" src=" in s or 'type="application/json"' in s for s in scripts), scripts
        assert not re.search(r"\son[a-z]+\s*=", html) and "javascript:" not in html


def test_docs_leads_to_the_api_docs_and_titles_are_the_datasets_names(client):  # noqa: ANN001
    r = client.get("/docs", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/api/docs"
    assert client.get("/docs").status_code == 200  # followed
    board = client.get("/leaderboard").text
    for title in ("SST-2", "IMDb", "SNLI", "SciTail", "MRPC", "STS-B"):  # not IMDB, SCITAIL
        assert f">{title}<" in board or f">{title} " in board, title
    assert "<h1>IMDb <small>" in client.get("/tasks/imdb").text


def test_the_guide_says_how_to_write_shared_layers_and_routed_calls(client):  # noqa: ANN001
    text = " ".join(client.get("/guide").text.split())
    assert "<b>tab</b>-separated" in text and 'torch.device("meta")' in text
    assert "Its parameters count once; every call is priced." in text
    assert "an expert with the number of tokens routed to it; leave out a module that got nothing" in text


def test_a_refused_submit_form_comes_back_as_it_was_sent(client):  # noqa: ANN001
    """The form that was refused keeps its fields and its "public" box; the other form stays empty."""
    import re

    from server_setup import web_login

    def field(page: str, form_id: str, name: str) -> str:
        form = page.split(f'id="{form_id}"', 1)[1].split("</form>", 1)[0]
        tag = re.search(rf'<(?:input|textarea)[^>]*name="{name}"[^>]*>(?:([^<]*)</textarea>)?', form)
        assert tag, (form_id, name)
        if tag.group(0).startswith("<textarea"):
            return tag.group(1)
        if 'type="checkbox"' in tag.group(0):
            return "checked" if re.search(r"\schecked\b", tag.group(0)) else ""
        m = re.search(r'value="([^"]*)"', tag.group(0))
        return m.group(1) if m else ""

    csrf = web_login(client, "erin")
    sent = {"name": "up", "paper_url": "https://example.org/up", "public": "1", "csrf": csrf}
    page = client.post("/submit", data=sent, files={"file": ("s.zip", b"not a zip", "x")}).text
    assert "not a zip" in page
    assert field(page, "upload-form", "name") == "up" and field(page, "upload-form", "public") == "checked"
    assert field(page, "upload-form", "paper_url") == "https://example.org/up"
    assert field(page, "reported-form", "name") == "" and field(page, "reported-form", "paper_url") == ""

    sent = {
        "name": "typed",
        "params_m": "66",
        "paper_url": "https://example.org/typed",
        "numbers": "sst-2, 1060, 840",
        "public": "1",
        "csrf": csrf,
    }
    page = client.post("/submit/reported", data=sent).text
    assert "840" in page and field(page, "reported-form", "public") == "checked"
    assert (
        field(page, "reported-form", "name") == "typed" and field(page, "reported-form", "params_m") == "66"
    )
    assert field(page, "upload-form", "name") == "" and field(page, "upload-form", "paper_url") == ""
    assert field(page, "upload-form", "public") == ""


def test_the_owner_edits_an_entry_s_name_links_and_description_on_its_page(client, drain):  # noqa: ANN001
    """The API could rename an entry and change its links and description; the site only published and
    deleted, so a web user who forgot the paper link had no way to add it."""
    from server_helpers import SUB, zip_bytes
    from server_setup import web_login

    csrf = web_login(client, "frank")
    r = client.post(
        "/submit",
        data={"name": "first name", "csrf": csrf, "public": "1"},
        files={"file": ("s.zip", zip_bytes(SUB), "application/zip")},
        follow_redirects=False,
    )
    url = r.headers["location"]
    page = client.get(url).text  # queued: the page reloads itself, which would lose what is being typed
    assert 'http-equiv="refresh"' in page and f'action="{url}/edit"' not in page
    drain()
    page = client.get(url).text
    assert f'action="{url}/edit"' in page and 'value="first name"' in page
    edit = {
        "name": "second name",
        "paper_url": "https://example.org/paper",
        "code_url": "",
        "description": "now with a link",
        "csrf": csrf,
    }
    r = client.post(url + "/edit", data=edit, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    model = client.get(url.replace("/submissions/", "/api/models/")).json()
    assert model["name"] == "second name" and model["paper_url"] == "https://example.org/paper"
    assert model["description"] == "now with a link"
    # a refused change: the message, and the form as it was typed
    r = client.post(url + "/edit", data={**edit, "name": "third", "paper_url": "ftp://x"})
    assert r.status_code == 400 and "http" in r.text
    assert 'value="third"' in r.text and 'value="ftp://x"' in r.text
    assert "<h1>second name " in r.text  # the page's title is the entry as stored
    assert f'data-replace-url="{url}"' in r.text  # a reload is a GET of the page, not a re-post
    assert client.get(url.replace("/submissions/", "/api/models/")).json()["name"] == "second name"


def test_the_chart_writes_a_small_model_s_params_as_the_table_does(client, auth):  # noqa: ANN001
    """The task chart's hover text wrote params with one decimal in task.js: a 0.0054M model read "0.0M". The
    chart now gets the text the pages write (the table's `params` filter) with its data."""
    import json
    import re
    from pathlib import Path

    from server_helpers import api_reported

    assert api_reported(client, auth("tiny"), name="Tiny model", params_m=0.00544).status_code == 201
    page = client.get("/tasks/sst-2").text
    view = json.loads(
        re.search(r'<script id="task-data" type="application/json">(.*?)</script>', page).group(1)
    )
    tiny = next(s for s in view["series"] if s["name"] == "Tiny model")
    assert tiny["params_text"] == "0.0054M"
    assert next(s for s in view["series"] if s["name"] == "ElasticBERT-BASE")["params_text"] == "109.0M"
    assert "0.0054M" in page  # the table beside the chart says the same
    script = (Path(__file__).parents[2] / "src/elue/server/static/task.js").read_text()
    assert "s.params_text" in script and "fixed(s.params_m" not in script
    # the Pareto front's hover wrote x with one decimal too ("x 0.0" for a 0.0481 MFLOPs point; checked in chromium)
    assert "%{x:.1f}" not in script and "MFLOPs %{x:,.4~g}" in script


def test_pages_have_a_skip_link_and_column_headers_with_scope(client):  # noqa: ANN001
    """A keyboard user tabbed through 14 header links before each page's content (no skip link), and the
    tables' headers had no scope for a screen reader to tie each cell to its column."""
    import re

    for url in ["/", "/leaderboard", "/tasks/sst-2", "/models/1", "/datasets", "/guide", "/api/docs"]:
        page = client.get(url).text
        skip = page.index('<a class="skip" href="#main">')
        assert skip < page.index("<header") < page.index('<main id="main"'), url
        headers = re.findall(r"<th\b[^>]*>", page)
        assert all('scope="col"' in th for th in headers), (url, [th for th in headers if "scope" not in th])
        assert len(re.findall(r"<h1\b", page)) == 1, url


def test_each_leaderboard_track_has_its_own_page_title(client):  # noqa: ANN001
    """Every track's page was titled "Leaderboard": a screen reader's page list or a browser's tabs could not
    tell the ELUE-score track from the size tracks."""
    import re

    titles = {
        track: re.search(r"<title>(.*?)</title>", client.get(f"/leaderboard?track={track}").text).group(1)
        for track in ("elue", "40", "55", "70", "110")
    }
    assert len(set(titles.values())) == 5, titles
    assert titles["40"].startswith("Leaderboard: ≤ 40M params")
    assert 'aria-label="Tracks"' in client.get("/leaderboard").text


def test_a_queued_submission_s_page_is_updated_in_place_not_reloaded(client, drain):  # noqa: ANN001
    """A queued submission's page reloaded itself every 2 s (<meta refresh>): a keyboard user's focus went back
    to the top before they could tab to Delete or Publish, and a screen reader started the page again. Now
    site.js polls the page and reloads only when the status changes; the meta refresh is for no JavaScript."""
    import re
    from pathlib import Path

    from server_helpers import SUB, zip_bytes
    from server_setup import web_login

    csrf = web_login(client, "kbd")
    r = client.post(
        "/submit",
        data={"name": "keyboard", "csrf": csrf},
        files={"file": ("s.zip", zip_bytes(SUB), "application/zip")},
        follow_redirects=False,
    )
    url = r.headers["location"]
    page = client.get(url).text
    assert re.search(r"<noscript><meta http-equiv=\"refresh\"[^>]*></noscript>", page)
    assert page.count('http-equiv="refresh"') == 1
    assert 'data-poll="queued"' in page and 'id="log"' in page
    script = (Path(__file__).parents[2] / "src/elue/server/static/site.js").read_text()
    assert 'querySelector("[data-poll]")' in script and "window.location.reload()" in script
    drain()
    page = client.get(url).text
    assert "data-poll" not in page and 'http-equiv="refresh"' not in page


def test_the_task_chart_s_points_and_pareto_front_are_also_text(client):  # noqa: ANN001
    """The task chart was the only place with each point's MFLOPs and the Pareto front (ringed points): a screen
    reader heard "img: 1000 2000 3000 ...", and without JavaScript the page showed axis buttons that did nothing
    over a 520 px empty box. The points are now a table marking the front, and the chart area shows only once
    task.js runs."""
    import re
    from pathlib import Path

    page = client.get("/tasks/sst-2").text
    assert '<div id="chart-area" hidden>' in page
    assert page.index('id="chart-area"') < page.index('id="x-mflops"') < page.index('id="chart"')
    table = page[page.index('id="points-table"') : page.index("</table>", page.index('id="points-table"'))]
    rows = {
        (m, f): front
        for m, f, front in re.findall(
            r'<tr><td><a href="/models/\d+">([^<]+)</a>.*?</td>\s*<td>([^<]*)</td>.*?<td>([^<]*)</td></tr>',
            table,
            re.S,
        )
    }
    # the published baseline's points are the front; ALBERT-PABEE's first point is cheaper-or-equal and worse
    assert rows[("ElasticBERT-BASE", "3 layers")] == "on the front"
    assert rows[("ALBERT-PABEE", "patience 1")] == ""
    assert len(rows) == page.count('"file":')  # one row per point the chart draws
    script = (Path(__file__).parents[2] / "src/elue/server/static/task.js").read_text()
    assert 'getElementById("chart-area").hidden = false' in script
    # the toggles say what they toggle ("MFLOPs, toggle button" said nothing of the x axis)
    assert (
        '<span class="group" role="group" aria-labelledby="x-axis-label"><span id="x-axis-label">x axis:'
        in page
    )
    assert 'aria-labelledby="x-scale-label"><span id="x-scale-label">scale:' in page


def test_the_submit_form_s_format_hints_belong_to_their_fields(client):  # noqa: ANN001
    """The reported entry's format ("task, MFLOPs, performance" per line) and the zip's note stood apart from their
    fields: a screen reader in the "Numbers" box heard only "Numbers, edit text"."""
    import re

    from server_setup import web_login

    web_login(client, "hints")
    page = client.get("/submit").text
    for field, hint in (("numbers", "numbers-hint"), ("file", "upload-hint")):
        tag = re.search(rf'<(?:input|textarea)[^>]*name="{field}"[^>]*>', page).group(0)
        assert f'aria-describedby="{hint}"' in tag, tag
        assert f'id="{hint}"' in page
    assert "task, MFLOPs, performance" in page[page.index('id="numbers-hint"') :]


def test_narrow_screens_do_not_scroll_sideways_by_the_style_sheet(client):  # noqa: ANN001
    """At 320 px (WCAG's reflow width) the submit page scrolled sideways: its two forms' grid columns were at
    least 340 px. A table's visually hidden header text (absolute) widened the admin page to 428 px on a phone,
    escaping its scrolling table. Checked in chromium at 320/375 px; here the rules that fix it."""
    css = client.get("/static/style.css").text
    assert "minmax(min(340px, 100%), 1fr)" in css and "minmax(340px, 1fr)" not in css
    board = next(line for line in css.splitlines() if line.startswith("table.board {"))
    assert "position: relative" in board


def test_tables_scroll_in_a_box_and_stay_tables(client):  # noqa: ANN001
    """On a phone each table was made `display: block` to scroll sideways, which drops its table semantics in
    VoiceOver (cells read as loose text, no column headers). Each table now scrolls inside a .table-scroll box."""
    import re

    css = client.get("/static/style.css").text
    assert not re.search(r"table\.board\s*\{[^}]*display:\s*block", css)
    assert ".table-scroll { overflow-x: auto; }" in css
    for url in ["/", "/leaderboard", "/tasks/sst-2", "/models/1", "/datasets", "/api/docs"]:
        page = client.get(url).text
        tables = page.count("<table")
        assert tables and page.count('<div class="table-scroll"><table class="board') == tables, url
