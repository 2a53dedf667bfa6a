"""`elue submit` in process (the test client or a mock transport): naming, links, odd answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import typer
from server_helpers import SUB, TSV, zip_bytes

from elue.cli.server_commands import _submit
from elue.server.storage import UploadError, zip_folder


def _run_submit(client, path: Path, **kw) -> int:  # noqa: ANN001
    args = {"name": None, "public": None, "paper_url": "", "code_url": "", "reported": False, "wait": False}
    args.update(kw)
    with pytest.raises(typer.Exit) as e:
        _submit(client, "http://testserver", path, *args.values(), 60.0)
    return e.value.exit_code


def _mock_client(handler) -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "model.py").write_text("x = 1\n")
    return folder


def test_zip_folder_refuses_a_symlink(tmp_path):  # noqa: ANN001
    folder = tmp_path / "sub"
    (folder / "sst-2").mkdir(parents=True)
    (folder / "model.py").write_text("x = 1\n")
    (tmp_path / "elsewhere.tsv").write_text(TSV)
    (folder / "sst-2" / "a.tsv").symlink_to(tmp_path / "elsewhere.tsv")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "python").symlink_to("/usr/bin/python3")  # hidden: skipped, as before
    with pytest.raises(UploadError, match=r"sst-2/a\.tsv is a symbolic link"):
        zip_folder(folder)
    (folder / "sst-2" / "a.tsv").unlink()
    (folder / "sst-2" / "a.tsv").write_text(TSV)
    assert zip_folder(folder)


def test_submit_dot_is_named_after_the_folder(client, auth, monkeypatch, tmp_path):  # noqa: ANN001
    h = auth("dotty")
    client.headers.update(h)
    folder = tmp_path / "my-dot-model"
    (folder / "sst-2").mkdir(parents=True)
    for rel, text in SUB.items():
        (folder / rel).write_text(text)
    monkeypatch.chdir(folder)
    assert _run_submit(client, Path(".")) == 0
    zipped = tmp_path / "zipped-model.zip"
    zipped.write_bytes(zip_bytes(SUB))
    assert _run_submit(client, zipped) == 0
    names = [x["name"] for x in client.get("/api/submissions", headers=h).json()]
    assert sorted(names) == ["my-dot-model", "zipped-model"]


def test_submit_reported_takes_the_link_options(client, auth, tmp_path):  # noqa: ANN001
    client.headers.update(auth("linker"))
    entry = tmp_path / "entry.json"
    entry.write_text(
        json.dumps({"name": "From paper", "params_m": 10, "tasks": {"sst-2": {"elue_score": 1.0}}})
    )
    paper, code = "https://example.org/paper", "https://example.org/code"
    assert _run_submit(client, entry, reported=True, paper_url=paper, code_url=code) == 0
    got = client.get("/api/submissions").json()[0]
    assert (got["paper_url"], got["code_url"]) == (paper, code)
    entry.write_text("[1, 2]")
    with pytest.raises(typer.BadParameter, match="JSON object"):
        _run_submit(client, entry, reported=True)


def test_submit_says_when_the_submission_is_deleted_while_it_waits(tmp_path, capsys, monkeypatch):  # noqa: ANN001
    monkeypatch.setattr(time, "sleep", lambda _: None)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"id": 7, "status": "queued"})
        return httpx.Response(404, json={"detail": "no such submission"})

    assert _run_submit(_mock_client(handler), _folder(tmp_path), wait=True) == 1
    assert "submission 7 is gone from the server" in capsys.readouterr().err


def test_submit_prints_the_servers_notice_once(tmp_path, capsys, monkeypatch):  # noqa: ANN001
    """No scoring worker at work: the site's page said so, `elue submit --wait` waited in silence."""
    monkeypatch.setattr(time, "sleep", lambda _: None)
    notice = "no scoring worker is at work on this site right now"
    answers = iter([{"status": "queued", "notice": notice}] * 3 + [{"status": "scored", "result": None}])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"id": 7, "status": "queued", "notice": notice})
        return httpx.Response(200, json={"id": 7, **next(answers)})

    assert _run_submit(_mock_client(handler), _folder(tmp_path), wait=True) == 0
    assert capsys.readouterr().err.count(f"note: {notice}") == 1


@pytest.mark.parametrize(
    ("post", "get"),
    [
        (httpx.Response(202, json=[1, 2]), None),
        (httpx.Response(400, json=["refused"]), None),
        (httpx.Response(202, json={"id": 7, "status": "queued"}), httpx.Response(200, json="scored")),
        (httpx.Response(202, text="<html>proxy error</html>"), None),
    ],
)
def test_submit_answers_that_are_not_objects_are_one_line(tmp_path, capsys, monkeypatch, post, get):  # noqa: ANN001
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = _mock_client(lambda request: post if request.method == "POST" else get)
    assert _run_submit(client, _folder(tmp_path), wait=True) == 1
    err = capsys.readouterr().err
    assert "unexpected answer from the server" in err or "rejected (400)" in err, err


def test_elue_submit_prints_a_tiny_models_mflops_and_params(capsys):  # noqa: ANN001
    from elue.cli.server_commands import _print_result

    point = {"file": "exit1.tsv", "performance": 47.886, "mflops": 0.04814}
    task = {"elue_score": -30.42, "params_m": 0.005444, "points": [point]}
    _print_result({"status": "scored", "result": {"tasks": {"sst-2": task}, "elue_score": None}})
    out = capsys.readouterr().out
    assert "params 0.00544M" in out and "exit1.tsv: 47.89 @ 0.0481 MFLOPs" in out  # was 0.0M, 0.0 MFLOPs


def test_submit_reported_public_option_overrides_the_file(client, auth, tmp_path):  # noqa: ANN001
    """--public published a reported entry only when its file had no "public" key: one with "public": false stayed
    private, although --name and the links override the file."""
    client.headers.update(auth("publisher"))
    entry = tmp_path / "entry.json"
    body = {"params_m": 10, "paper_url": "https://example.org/p", "tasks": {"sst-2": {"elue_score": 1.0}}}
    # option None: neither --public nor --no-public; False: --no-public, which the file's "public": true overrode
    # (the entry was published against the command line's word)
    for name, in_file, option in [
        ("A", False, True),
        ("B", True, None),
        ("C", None, None),
        ("D", True, False),
    ]:
        entry.write_text(
            json.dumps({**body, "name": name, **({} if in_file is None else {"public": in_file})})
        )
        assert _run_submit(client, entry, reported=True, public=option) == 0
    got = {x["name"]: x["public"] for x in client.get("/api/submissions").json()}
    assert got == {"A": True, "B": True, "C": False, "D": False}


def test_a_server_address_that_is_no_leaderboard_is_named(tmp_path, capsys):  # noqa: ANN001
    """`--server http://host:8000/api` answered "rejected (404): Not Found" and nothing more."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    assert _run_submit(_mock_client(handler), _folder(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "rejected (404): Not Found (is http://testserver the leaderboard's address?" in err, err
    assert "/api/submissions was not found there" in err


def test_a_server_address_without_its_scheme_is_refused_by_name(tmp_path):  # noqa: ANN001
    """`--server 127.0.0.1:8000` failed with httpx's "Request URL is missing an 'http://' or 'https://' protocol"."""
    from elue.cli.server_commands import submit

    with pytest.raises(
        typer.BadParameter, match=r"give the address with its scheme, e\.g\. http://127\.0\.0\.1:8000"
    ):
        submit(_folder(tmp_path), None, "127.0.0.1:8000", "t", False, "", "", False, False, 60.0)
