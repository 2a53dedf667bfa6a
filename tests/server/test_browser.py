"""Browser test (headless Debian chromium via Playwright): sign up, upload a submission, watch it get
scored by the real worker and sandbox, find it on the leaderboard and on the task chart (with the
SST-2 reference curves of spec §6). Screenshots go to artifacts/server/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from live_server import LiveServer
from server_helpers import PATIENCE_S, make_submission, write_made_up_answers, zip_folder

from elue.data import read_test_indices

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "server"


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> tuple[Path, list[int]]:  # noqa: ANN001
    """The real data (full SST-2 test set) when present, else a made-up SST-2 answer key."""
    from server_setup import REPO_DATA

    if REPO_DATA is not None:
        return REPO_DATA, [int(i) for i in read_test_indices(REPO_DATA, "sst-2")]
    return write_made_up_answers(tmp_path_factory.mktemp("answers"), n=300)


@pytest.fixture(scope="module")
def live(tmp_path_factory, answers):  # noqa: ANN001, ANN201
    server = LiveServer(tmp_path_factory.mktemp("serve"), answers[0])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def test_signup_upload_scored_leaderboard_chart(live, browser, tmp_path, answers):  # noqa: ANN001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = make_submission(tmp_path / "sub", answers[1])
    zip_path = tmp_path / "tiny-exits.zip"
    zip_path.write_bytes(zip_folder(folder))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.goto(live.url + "/")
    assert "ELUE" in page.title()
    page.screenshot(path=str(ARTIFACTS / "01-home.png"))

    # sign up
    page.click("text=Sign up")
    page.fill("#username", "browser-user")
    page.fill("#password", "browser-password")
    page.fill("#password2", "browser-password")
    page.click("#signup-button")
    page.wait_for_url("**/account")
    assert page.inner_text("#account-link") == "browser-user"

    # upload
    page.click("#new-submission")
    page.fill("#name", "Tiny exits (browser)")
    page.set_input_files("#file", str(zip_path))
    page.check("#public")
    page.click("#upload-button")
    page.wait_for_url("**/submissions/*")
    page.screenshot(path=str(ARTIFACTS / "02-queued.png"))
    # the page refreshes itself until scoring ends
    page.wait_for_selector("#status.scored, #status.failed", timeout=PATIENCE_S * 1000)
    status = page.inner_text("#status")
    log = page.inner_text("#log")
    page.screenshot(path=str(ARTIFACTS / "03-scored.png"), full_page=True)
    assert status == "scored", log
    assert "scored in" in log

    # leaderboard: listed as measured and incomplete (only SST-2)
    page.goto(live.url + "/leaderboard")
    row = page.locator("#board tr", has_text="Tiny exits (browser)")
    assert row.count() == 1
    assert "incomplete" in row.inner_text() and "measured" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "04-leaderboard.png"), full_page=True)
    # sortable: sort by SST-2 ascending puts the random-prediction model first
    page.click("a.sort[data-col='sst-2']")
    page.click("a.sort[data-col='sst-2']")
    assert "order=asc" in page.url
    assert (
        page.get_attribute("th:has(a.sort[data-col='sst-2'])", "aria-sort") == "ascending"
    )  # for screen readers
    first = page.locator("#board tbody tr").first.inner_text()
    assert "Tiny exits (browser)" in first

    # task chart: every model a series, the baseline line, the Pareto front; log axis; vs params
    page.goto(live.url + "/tasks/sst-2")
    page.wait_for_selector("#chart .main-svg")
    names = page.evaluate("document.getElementById('chart').data.map(t => t.name)")
    for ref in [
        "ElasticBERT-BASE (reported)",
        "RoBERTa-BASE (reported)",
        "LayerDrop (reported)",
        "ALBERT-PABEE (reported)",
        "Tiny exits (browser)",
        "Pareto front",
    ]:
        assert ref in names, names
    roberta = page.evaluate("document.getElementById('chart').data.find(t => t.name.startsWith('RoBERTa')).x")
    assert roberta == [1036, 1385, 2080, 4170]
    base = page.evaluate(
        "document.getElementById('chart').data.find(t => t.meta && t.meta.role === 'baseline')"
    )
    assert base["name"].startswith("ElasticBERT-BASE") and base["line"]["width"] == 4
    # no model is drawn in the Pareto front's red (RoBERTa-BASE, the fourth series, was: it read as the front)
    colors = page.evaluate(
        "document.getElementById('chart')._fullData.map(t => [t.meta && t.meta.role, t.line && t.line.color])"
    )
    pareto_color = next(c for role, c in colors if role == "pareto")
    assert pareto_color not in [c for role, c in colors if role != "pareto"], colors
    page.screenshot(path=str(ARTIFACTS / "05-task-sst2-linear.png"))
    page.click("#scale-log")
    assert page.evaluate("document.getElementById('chart').layout.xaxis.type") == "log"
    assert page.get_attribute("#scale-log", "aria-pressed") == "true"
    assert page.get_attribute("#scale-linear", "aria-pressed") == "false"
    # no button that would upload the chart to plotly.com
    assert (
        page.locator(
            "#chart .modebar-btn[data-title*='Share'], #chart .modebar-btn[data-title*='Cloud']"
        ).count()
        == 0
    )
    box = page.locator("#chart .scatterlayer .trace .point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#chart .hoverlayer .hovertext")
    page.screenshot(path=str(ARTIFACTS / "06-task-sst2-log-hover.png"))
    page.click("#x-params")
    assert page.evaluate("document.getElementById('chart').dataset.x") == "params"
    page.screenshot(path=str(ARTIFACTS / "07-task-sst2-params.png"))

    # the model page shows every point
    page.click("#task-table >> text=Tiny exits (browser)")
    page.wait_for_selector("#points")
    assert page.locator("#points tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "08-model.png"), full_page=True)

    assert not errors, errors
    outside = [u for u in requests if not u.startswith(live.url) and not u.startswith("data:")]
    assert outside == [], f"requests left the site (CDN?): {outside}"


def _report_as_admin(live, name: str, task: str, mflops: float, performance: float, public: bool = False):  # noqa: ANN001, ANN202
    """A one-point reported entry made through the API with an admin token; the answer."""
    import httpx

    token = httpx.post(
        live.url + "/api/tokens", json={"username": "admin", "password": "admin-password"}
    ).json()["token"]
    return httpx.post(
        live.url + "/api/submissions/reported",
        headers={"authorization": f"Bearer {token}"},
        json={
            "name": name,
            "params_m": 10,
            "paper_url": "https://example.org/p",
            "public": public,
            "tasks": {task: {"points": [{"mflops": mflops, "performance": performance}]}},
        },
    )


def test_model_names_are_text_in_the_chart(live, browser):  # noqa: ANN001
    """A model named like HTML shows as text in the legend and the hover box, never as a live link."""

    for name, mflops in [
        ('<a href="https://evil.example/phish">Click me</a>', 1500),
        ("<b>x</b> & co", 1700),
    ]:
        r = _report_as_admin(live, name, "sst-2", mflops, 85.0, public=True)
        assert r.status_code == 201, r.text
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live.url + "/tasks/sst-2")
    page.wait_for_selector("#chart .legend")
    assert page.evaluate("document.querySelectorAll('#chart a').length") == 0
    assert (
        page.evaluate(
            "document.querySelectorAll('#chart .legend b, #chart .legend tspan[style*=bold]').length"
        )
        == 0
    )
    legend = page.evaluate("document.querySelector('#chart .legend').textContent")
    assert '<a href="https://evil.example/phish">Click me</a>' in legend and "<b>x</b> & co" in legend
    # the hover box of the evil series: text too
    page.evaluate(
        """() => { const gd = document.getElementById('chart');
        const i = gd.data.findIndex(t => t.name.startsWith('&lt;a href'));
        Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 0}]); }"""
    )
    page.wait_for_selector("#chart .hoverlayer .hovertext")
    hover = page.evaluate("document.querySelector('#chart .hoverlayer').textContent")
    assert "Click me</a>" in hover
    assert page.evaluate("document.querySelectorAll('#chart .hoverlayer a').length") == 0
    page.close()


def test_a_model_without_a_score_has_none_in_the_hover_box(live, browser):  # noqa: ANN001
    """On a dataset with no baseline no entry has an ELUE score, yet the chart's hover box said "ELUE score
    0.00" (Plotly formats a missing number as 0): it now says there is none."""
    import httpx

    r = _report_as_admin(live, "No score here", "mrpc", 900, 80.0, public=True)
    assert r.status_code == 201, r.text
    assert httpx.get(live.url + "/api/tasks/mrpc").json()["baseline"] is None
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live.url + "/tasks/mrpc")
    page.wait_for_selector("#chart .legend")
    page.evaluate(
        """() => { const gd = document.getElementById('chart');
        const i = gd.data.findIndex(t => t.name.startsWith('No score here'));
        Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 0}]); }"""
    )
    page.wait_for_selector("#chart .hoverlayer .hovertext")
    hover = page.evaluate("document.querySelector('#chart .hoverlayer').textContent")
    assert "ELUE score —" in hover and "params 10.0M" in hover, hover
    page.close()


def test_second_audit_pages(live, browser):  # noqa: ANN001
    """An empty task chart says so; a phone-sized window does not scroll the page sideways; a reload after
    creating a token does not create another."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live.url + "/tasks/imdb")
    page.wait_for_selector("#chart .main-svg")
    notes = page.evaluate("document.getElementById('chart').layout.annotations.map(a => a.text)")
    assert notes == ["No points on this dataset yet"]
    assert page.locator("#no-baseline").count() == 1
    page.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    for path in ("/leaderboard?track=110", "/tasks/sst-2", "/models/1"):
        phone.goto(live.url + path)
        wide = phone.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, (path, wide)
        # words and badges stay whole: main's overflow-wrap: anywhere squeezed the table's model column to a few
        # letters a line ("ALBER / T-PABEE", "repo / rted") although the table scrolls inside itself
        tallest = phone.evaluate(
            "Math.max(0, ...[...document.querySelectorAll('.tag')].map(e => e.offsetHeight))"
        )
        assert tallest < 24, (path, tallest)
        phone.screenshot(path=str(ARTIFACTS / f"m-{path.strip('/').split('?')[0].replace('/', '-')}.png"))
    phone.close()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(live.url + "/signup")
    page.fill("#username", "token-user")
    page.fill("#password", "token-password")
    page.fill("#password2", "token-password")
    page.click("#signup-button")
    page.wait_for_url("**/account")
    page.fill("#token-name", "laptop")
    page.click("#create-token")
    page.wait_for_selector("#new-token")
    assert page.url.endswith("/account")  # not /account/tokens: a reload is a GET
    page.reload()
    assert page.locator("#new-token").count() == 0
    assert page.locator("text=laptop").count() == 1  # one token, not two
    page.close()


def test_the_content_security_policy_breaks_nothing(live, browser):  # noqa: ANN001
    """Every page under the site's Content-Security-Policy (scripts from its own files only): no violation on
    any page, the chart draws, hovers and exports a PNG, and what inline code once did still works (the delete
    button asks first, an error page's Back link goes back)."""

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: violations.append(str(e)))
    for path in ("/", "/leaderboard", "/datasets", "/guide", "/score", "/api/docs", "/models/1", "/signup"):
        page.goto(live.url + path)
    page.goto(live.url + "/tasks/sst-2")
    page.wait_for_selector("#chart .main-svg")
    page.click("#scale-log")
    box = page.locator("#chart .scatterlayer .trace .point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#chart .hoverlayer .hovertext")
    png = page.evaluate("Plotly.toImage(document.getElementById('chart'), {format: 'png'})")
    assert png.startswith("data:image/png;base64,")
    # an error page's Back link returns to the page before
    page.goto(live.url + "/models/999999", wait_until="load")
    page.click("a[data-back]")
    page.wait_for_url("**/tasks/sst-2")

    r = _report_as_admin(live, "CSP check", "sst-2", 900, 80.0)
    assert r.status_code == 201, r.text
    page.goto(live.url + f"/login?next=/submissions/{r.json()['id']}")
    page.fill("#username", "admin")
    page.fill("#password", "admin-password")
    page.click("#login-button")
    page.wait_for_selector("#status")
    asked: list[str] = []

    def dismiss(dialog):  # noqa: ANN001, ANN202
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("button.danger")
    assert asked == ["Delete this submission?"]
    assert page.locator("#status").count() == 1  # dismissed: not deleted
    assert violations == [], violations
    page.close()
