"""`elue serve` and `elue submit` refuse what cannot work before doing anything: a taken port before the banner
and the database, a file that is neither a folder nor a zip before uploading it."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import typer
from typer.testing import CliRunner

from elue.cli import app
from elue.cli.server_commands import _submit


def test_serve_on_a_taken_port_fails_before_the_banner_and_the_database(tmp_path):  # noqa: ANN001
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        home = tmp_path / "home"
        result = CliRunner().invoke(
            app, ["serve", "--port", str(port), "--home", str(home), "--workers", "0"]
        )
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "address already in use" in result.output.lower()  # what tests' live server retries on
    assert "ELUE leaderboard on" not in result.output
    assert not (home / "elue.db").exists()


def _refusing_client() -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing should be sent: {request.method} {request.url}")

    return httpx.Client(base_url="http://testserver", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("name", "hint"), [("entry.json", True), ("notes.txt", False)])
def test_submit_refuses_a_file_that_is_not_a_zip_before_uploading(tmp_path, name, hint):  # noqa: ANN001
    path = tmp_path / name
    path.write_text(json.dumps({"name": "P", "params_m": 1, "tasks": {}}))
    with pytest.raises(typer.BadParameter) as e:
        _submit(_refusing_client(), "http://testserver", path, None, False, "", "", False, False, 60.0)
    assert "neither a submission folder nor a zip archive" in str(e.value)
    assert ("add --reported" in str(e.value)) is hint


@pytest.mark.parametrize(
    "host", ["192.0.2.1", "no-such-host.invalid"]
)  # TEST-NET-1: no machine's own address
def test_serve_on_a_host_that_is_not_this_machines_says_so_not_to_change_the_port(tmp_path, host):  # noqa: ANN001
    """The port hint ('another server there? choose another --port') misled when the --host was the trouble."""
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app, ["serve", "--host", host, "--port", "8765", "--home", str(home), "--workers", "0"]
    )
    assert result.exit_code == 1, result.output
    assert f"cannot listen on {host}:8765" in result.output
    assert "--host must name an address of this machine" in result.output
    assert "another --port" not in result.output
    assert not (home / "elue.db").exists()


@pytest.mark.parametrize("option", [["--workers", "-1"], ["--web-workers", "0"]])
def test_serve_refuses_a_count_of_processes_that_runs_nothing(tmp_path, option):  # noqa: ANN001
    """`--workers -1` started no scoring worker while the banner said "-1 scoring worker(s)"; `--web-workers 0`
    ran one web process."""
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["serve", "--home", str(home), *option])
    assert result.exit_code == 2 and option[0] in result.output, result.output
    assert "ELUE leaderboard on" not in result.output and not (home / "elue.db").exists()
