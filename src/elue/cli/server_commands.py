"""`elue serve` (the leaderboard site + its scoring workers), `elue worker` (a scoring worker alone) and
`elue submit` (upload a submission to a leaderboard)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import typer

from .common import fail


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("submit")(submit)


def _settings(  # noqa: ANN202
    home: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    public_url: str | None = None,
    secure_cookies: bool | None = None,
):
    from elue.server.config import Settings

    kw = {"public_url": public_url} if public_url else {}
    if secure_cookies is not None:
        kw["secure_cookies"] = secure_cookies
    if home is not None:
        kw["state_dir"] = home
    if data_dir is not None:
        kw["data_dir"] = data_dir
    if database_url:
        kw["database_url"] = database_url
    try:
        return Settings(**kw)
    except ValueError as err:  # e.g. ELUE_SANDBOX_WALL_S=-1: one line, not a traceback
        fail(str(err))


def _shown_url(url: str) -> str:
    """A database URL as printed: its password masked (the start-up line goes into the service's log)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<an invalid database URL>"


def _cannot_open(url: str, err: BaseException) -> str:
    """One line for a database URL that cannot be used: unparsable, an unknown dialect, a driver that is not installed
    (`postgresql://` is psycopg 3 to SQLAlchemy 2.1: a ModuleNotFoundError traceback), refused or unreachable."""
    from sqlalchemy.exc import DBAPIError

    # the driver's own message, without SQLAlchemy's "(Background on this error at: …)" lines
    why = " ".join(str(err.orig if isinstance(err, DBAPIError) else err).split())
    if isinstance(err, ImportError):
        why = (
            f"its driver is not installed ({err}): install it, or name an installed one in the URL, "
            "e.g. postgresql+psycopg2://user:pw@host/db"
        )
    elif "sqlalchemy.dialects:postgres" in why:  # postgres://, as some hosts write it
        why += " (SQLAlchemy spells it postgresql://, e.g. postgresql+psycopg2://user:pw@host/db)"
    return f"cannot open the database {_shown_url(url)!r}: {why}"


def _check_worker_database(settings, once: bool) -> None:  # noqa: ANN001
    """What `elue worker` cannot work with, in one line before it starts (it printed a traceback for a bad URL, a
    missing driver or an unusable home, and scored on a database of a newer elue's schema without a word). A
    database that is only unreachable is waited for (the worker says so once a minute), but for `--once`."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from elue.server.db import open_database, schema_mismatch
    from elue.server.worker import schema_message

    try:
        settings.ensure_dirs()  # where it unpacks each job for the sandbox
    except OSError as err:
        fail(f"cannot use the state folder {settings.state_dir} (--home / ELUE_HOME): {err}")
    try:
        engine, _ = open_database(settings.database_url, upgrade=False)
    except (
        ArgumentError,
        ImportError,
        OSError,
    ) as err:  # OSError: a SQLite file's folder that cannot be made
        fail(_cannot_open(settings.database_url, err))
    try:
        mismatch = schema_mismatch(engine)
    except OperationalError as err:
        if once:
            fail(_cannot_open(settings.database_url, err))
        return
    finally:
        engine.dispose()
    if mismatch is not None and mismatch[0] == "newer":
        fail(f"cannot use the database {_shown_url(settings.database_url)!r}: {schema_message(mismatch)}")


def _url_host(host: str) -> str:
    """How a URL names the address served on: a wildcard is reached by this machine's name."""
    import socket

    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port."),
    home: Path = typer.Option(
        None, help="State folder: SQLite file + uploads (default: $ELUE_HOME or ./.elue)."
    ),
    data_dir: Path = typer.Option(
        None, help="Task data and answer keys (default: $ELUE_DATA_DIR, else ../shared/data if present)."
    ),
    database_url: str = typer.Option(
        None,
        help="SQLAlchemy URL, e.g. postgresql+psycopg2://u:p@host/db (default: $ELUE_DATABASE_URL, "
        "else sqlite:///<home>/elue.db).",
    ),
    workers: int = typer.Option(1, min=0, help="Scoring worker processes (0: run `elue worker` yourself)."),
    web_workers: int = typer.Option(1, min=1, help="Web server processes."),
    admin: str = typer.Option(
        None,
        envvar="ELUE_ADMIN",
        help="Create (or promote) this admin user; password from $ELUE_ADMIN_PASSWORD, "
        "else a random one is printed.",
    ),
    public_url: str = typer.Option(
        None,
        help="The address users reach the site at, shown in the submission guide "
        "(default: $ELUE_PUBLIC_URL, else http://HOST:PORT).",
    ),
    secure_cookies: bool = typer.Option(
        None,
        "--secure-cookies/--no-secure-cookies",
        help="Send the log-in cookie over https only (default: $ELUE_SECURE_COOKIES=1/0, else on when the "
        "public URL is https).",
        show_default=False,
    ),
    behind_proxy: str = typer.Option(
        "",
        "--behind-proxy",
        help="Address(es) of a reverse proxy whose X-Forwarded-For is trusted (e.g. 127.0.0.1); "
        "default: none, so a client cannot pick its own address (the log-in throttle counts per address).",
    ),
) -> None:
    """Serve the leaderboard (seeded with the published ELUE entries on first start) and score uploads."""
    import subprocess
    import threading

    import uvicorn

    from elue.server import create_app

    public_url = public_url or os.environ.get("ELUE_PUBLIC_URL") or f"http://{_url_host(host)}:{port}"
    settings = _settings(home, data_dir, database_url, public_url, secure_cookies)
    _check_can_listen(host, port)  # before the banner and the database: a taken port is the whole story
    from alembic.util import CommandError
    from sqlalchemy.exc import ArgumentError, OperationalError

    from elue.server.db import open_database

    try:
        create_app(settings)  # migrate and seed: once, before anything forks
    except (ArgumentError, OperationalError, ImportError) as err:  # ArgumentError: also an unknown dialect
        fail(_cannot_open(settings.database_url, err))
    except (
        CommandError
    ) as err:  # its schema is of a revision this elue does not have (a newer one's database)
        fail(
            f"cannot use the database {_shown_url(settings.database_url)!r}: {err}; it was made or upgraded by a "
            "newer version of elue: run that version, or give another --database-url"
        )
    except OSError as err:  # a home that is a file, read-only, or on a full disk: one line, not a traceback
        fail(f"cannot use the state folder {settings.state_dir} (--home / ELUE_HOME): {err}")
    if admin:
        from elue.server.service import ServiceError, ensure_admin

        _, sessions = open_database(settings.database_url, upgrade=False)
        with sessions() as s:
            try:
                user, made = ensure_admin(s, admin, os.environ.get("ELUE_ADMIN_PASSWORD") or None)
                name = user.username
            except ServiceError as err:
                fail(f"--admin {admin!r}: {err}")
        if made:
            typer.echo(f"admin {name!r}: password {made} (set ELUE_ADMIN_PASSWORD to choose it)")
        elif os.environ.get("ELUE_ADMIN_PASSWORD"):
            typer.echo(f"admin {name!r}: password from ELUE_ADMIN_PASSWORD")
        else:
            typer.echo(f"admin {name!r}: the account's own password (ELUE_ADMIN_PASSWORD sets it)")
    from elue.server.storage import scorable_tasks

    if not scorable_tasks(settings):  # no folder, a wrong one, or one without the answer keys
        where = "no data folder" if settings.data_dir is None else f"no answer keys in {settings.data_dir}"
        typer.echo(
            f"warning: {where} (<task>/test_labels.tsv): every upload will be refused; "
            "set --data-dir / ELUE_DATA_DIR",
            err=True,
        )
    if workers:
        from elue.server.worker import sandbox_missing

        no_sandbox = sandbox_missing(settings)
        if (
            no_sandbox is not None
        ):  # the workers take no job then: say it here, where the operator looks first
            typer.echo(
                f"warning: bubblewrap, the sandbox for uploaded model.py, is {no_sandbox} on this host: the scoring "
                "workers will score nothing until it is installed (ELUE_TRUST_MODEL_CODE=1 runs uploads without it: "
                "only for uploads from people you trust)",
                err=True,
            )
    env = {**os.environ, **settings.to_env()}
    if not settings.secret_key:
        from elue.server.service import secret_key

        _, sessions = open_database(settings.database_url, upgrade=False)
        with sessions() as s:
            env["ELUE_SECRET_KEY"] = secret_key(s, settings)  # the same key in every web process

    procs: list[subprocess.Popen | None] = [None] * workers
    stopping = threading.Event()

    started = [0.0] * workers

    def supervise() -> None:
        # a worker that dies (killed, out of memory) is restarted; its job's lease is released at once
        while not stopping.is_set():
            for i, p in enumerate(procs):
                if p is None or p.poll() is not None:
                    if p is not None:
                        typer.echo(f"scoring worker {i} exited ({p.returncode}); restarting", err=True)
                        if time.time() - started[i] < 10:
                            stopping.wait(5.0)  # back off when it dies right away
                    if stopping.is_set():
                        return
                    started[i] = time.time()
                    procs[i] = subprocess.Popen(
                        [sys.executable, "-m", "elue.server.worker", "--parent-pid", str(os.getpid())],
                        env=env,
                    )
            stopping.wait(1.0)

    sup = threading.Thread(target=supervise, daemon=True)
    sup.start()
    typer.echo(
        f"ELUE leaderboard on http://{host}:{port}  (database {_shown_url(settings.database_url)}, "
        f"data {settings.data_dir}, {workers} scoring worker(s))"
    )
    if settings.trust_model_code:
        typer.echo(
            "WARNING: ELUE_TRUST_MODEL_CODE=1: uploaded model.py files run WITHOUT the bubblewrap sandbox",
            err=True,
        )
    os.environ.update({k: v for k, v in env.items() if k.startswith("ELUE_")})
    # uvicorn re-raises a SIGTERM it caught once it has shut down; with the default handler that kills
    # this process before `finally` stops the workers. As an exception it unwinds through `finally`.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: without a proxy, any local client could
    # then choose the address the log-in throttle counts it under
    server_opts = {"log_level": "warning", "proxy_headers": bool(behind_proxy)}
    if behind_proxy:
        server_opts["forwarded_allow_ips"] = behind_proxy
    try:
        if web_workers > 1:
            uvicorn.run("elue.server.asgi:app", host=host, port=port, workers=web_workers, **server_opts)
        else:
            uvicorn.run(create_app(settings, seed=False), host=host, port=port, **server_opts)
    finally:
        stopping.set()
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in procs:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def worker(
    home: Path = typer.Option(None, help="State folder (uploads) (default: $ELUE_HOME or ./.elue)."),
    data_dir: Path = typer.Option(
        None, help="Task data and answer keys (default: $ELUE_DATA_DIR, else ../shared/data if present)."
    ),
    database_url: str = typer.Option(
        None, help="SQLAlchemy URL (default: $ELUE_DATABASE_URL or the home's SQLite)."
    ),
    once: bool = typer.Option(False, help="Stop when the queue is empty."),
) -> None:
    """Run one scoring worker: claim queued submissions and score them in the sandbox. SIGTERM or Ctrl-C gives
    the job it scores back to the queue and stops it (a second Ctrl-C stops it at once)."""
    import threading

    from elue.server.worker import configure_logging, run_worker, stop_on_signals

    configure_logging()
    settings = _settings(home, data_dir, database_url)
    _check_worker_database(settings, once)
    # without a handler, a stop mid-job killed the worker: the job was retaken when its lease ran out, one attempt
    # more each time, and failed as "crashed the worker repeatedly" after max_attempts restarts
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        n = run_worker(settings, once=once, stop=stop)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(f"scored {n} submission(s)")


def submit(
    path: Path = typer.Argument(
        ..., exists=True, help="Submission folder or zip; or with --reported, a JSON file."
    ),
    name: str = typer.Option(None, help="Model name shown on the leaderboard (default: folder name)."),
    server: str = typer.Option("http://127.0.0.1:8000", envvar="ELUE_SERVER", help="Leaderboard URL."),
    token: str = typer.Option(..., envvar="ELUE_TOKEN", help="API token (create one on your account page)."),
    public: bool | None = typer.Option(
        None,
        "--public/--no-public",
        help="Publish when scored, or keep private (default: private; a reported entry's JSON may say).",
        show_default=False,
    ),
    paper_url: str = typer.Option("", help="Link to the paper."),
    code_url: str = typer.Option("", help="Link to the code."),
    reported: bool = typer.Option(False, help="PATH is a JSON reported entry (numbers from a paper)."),
    wait: bool = typer.Option(True, help="Wait for the score and print it."),
    timeout: float = typer.Option(600, help="Seconds to wait for scoring."),
) -> None:
    """Upload a submission (test files + model.py) or a reported entry to an ELUE leaderboard."""
    import httpx

    headers = {"authorization": f"Bearer {token}"}
    base = server.rstrip("/")
    if "://" not in base:  # `--server 127.0.0.1:8000`: httpx said only "missing an 'http://' or 'https://'"
        raise typer.BadParameter(
            f"{server!r}: give the address with its scheme, e.g. http://{base}", param_hint="--server"
        )
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            _submit(client, base, path, name, public, paper_url, code_url, reported, wait, timeout)
    except httpx.HTTPError as e:  # refused, timed out, DNS: one line, not a traceback
        fail(f"cannot reach the leaderboard at {base}: {e}")


def _check_can_listen(host: str, port: int) -> None:
    """Fail in one line when HOST:PORT cannot be listened on (another server there, a --host that is not this
    machine's), before `serve` prints its banner and migrates a database for a site that would not start (uvicorn
    found out only after both). The hint fits the cause: another --port only helps when the port is the trouble."""
    import errno
    import socket

    try:
        # as uvicorn binds its socket (`Config.bind_socket`): IPv6 only for a host with a ':', so `localhost`
        # is tried as 127.0.0.1 even where it resolves to ::1 first; TIME_WAIT is fine (SO_REUSEADDR)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family=family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            hint = " (another server there? choose another --port)"
        elif err.errno == errno.EACCES and port < 1024:
            hint = " (ports below 1024 need privileges: choose another --port)"
        elif isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
            hint = " (--host must name an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for all)"
        else:
            hint = ""
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}{hint}")


def _submit(  # noqa: PLR0913 - the submit command's options, passed through
    client,  # noqa: ANN001 - an httpx.Client with the token's header
    base: str,
    path: Path,
    name: str | None,
    public: bool | None,
    paper_url: str,
    code_url: str,
    reported: bool,
    wait: bool,
    timeout: float,
) -> None:
    """Upload, then (with `wait`) poll until scored; exits with the CLI's codes."""
    from elue.server.storage import UploadError, zip_folder

    if reported:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise typer.BadParameter(f"{path}: not a readable JSON reported entry: {e}") from None
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{path}: a reported entry is a JSON object, not {type(body).__name__}")
        # the options override the file, as --name does
        for key, value in (("name", name), ("paper_url", paper_url), ("code_url", code_url)):
            if value:
                body[key] = value
        # --public and --no-public too (--public was ignored where the file said "public": false, and --no-public
        # where it said true: the entry went public); without either, the file's (default private)
        if public is not None:
            body["public"] = public
        r = client.post("/api/submissions/reported", json=body)
    else:
        import zipfile

        if path.is_file() and not zipfile.is_zipfile(path):  # the server would only say "not a zip archive"
            hint = ": a reported entry? add --reported" if path.suffix.lower() == ".json" else ""
            raise typer.BadParameter(f"{path} is neither a submission folder nor a zip archive{hint}")
        try:
            data = path.read_bytes() if path.is_file() else zip_folder(path)
        except (UploadError, OSError) as e:
            raise typer.BadParameter(str(e)) from None
        form = {
            # a zip's name without .zip; a folder's own name (`elue submit .` has no stem)
            "name": name or (path.stem if path.is_file() else path.resolve().name),
            "public": str(bool(public)).lower(),
            "paper_url": paper_url,
            "code_url": code_url,
        }
        r = client.post(
            "/api/submissions", data=form, files={"file": ("submission.zip", data, "application/zip")}
        )
    if r.status_code >= 400:
        hint = ""
        if r.status_code in (404, 405):  # no such route: not a leaderboard there (`--server …/api` was one)
            hint = f" (is {base} the leaderboard's address? {r.request.url.path} was not found there)"
        typer.echo(f"rejected ({r.status_code}): {_detail(r)}{hint}", err=True)
        raise typer.Exit(1)
    sub = _submission(r)
    sid = sub["id"]
    typer.echo(f"submission {sid} {sub['status']}: {base}/submissions/{sid}")
    told = _tell_notice(sub, None)

    def fetch() -> dict:
        r = client.get(f"/api/submissions/{sid}")
        if r.status_code == 404:
            fail(f"submission {sid} is gone from the server (deleted meanwhile?)")
        if r.status_code >= 400:
            fail(f"cannot read submission {sid} ({r.status_code}): {_detail(r)}")
        return _submission(r)

    if sub["status"] == "scored":
        sub = fetch()
    if not wait or sub["status"] in ("scored", "failed"):
        _print_result(sub)
        raise typer.Exit(0 if sub["status"] != "failed" else 1)
    t0 = time.time()
    last = sub["status"]
    while time.time() - t0 < timeout:
        time.sleep(1.0)
        sub = fetch()
        if sub["status"] != last:
            typer.echo(f"  {sub['status']}")
            last = sub["status"]
        told = _tell_notice(sub, told)
        if sub["status"] in ("scored", "failed"):
            _print_result(sub)
            raise typer.Exit(0 if sub["status"] == "scored" else 1)
    typer.echo("still not scored; check the page later", err=True)
    raise typer.Exit(2)


def _tell_notice(sub: dict, told: str | None) -> str | None:
    """Print the server's notice (no scoring worker at work) once, when it first appears; returns it."""
    notice = sub.get("notice")
    if isinstance(notice, str) and notice and notice != told:
        typer.echo(f"note: {notice}", err=True)
    return notice if isinstance(notice, str) else None


def _submission(r) -> dict:  # noqa: ANN001
    """A submission as the server answers it; anything else (a proxy's page, a list) is one error line."""
    try:
        sub = r.json()
    except ValueError:
        sub = None
    if not (isinstance(sub, dict) and "id" in sub and isinstance(sub.get("status"), str)):
        fail(f"unexpected answer from the server ({r.status_code}): {r.text[:200]!r}")
    return sub


def _detail(r) -> str:  # noqa: ANN001
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's 422: one {"loc": [...], "msg": ...} per field
        return "; ".join(_field_error(e) for e in detail)
    return str(detail) if detail is not None else r.text[:500]


def _field_error(e) -> str:  # noqa: ANN001
    """`public: Input should be a valid boolean`, not the dict (the "body" prefix of `loc` says nothing)."""
    if not isinstance(e, dict):
        return str(e)
    where = ".".join(str(part) for part in e.get("loc", []) if part != "body")
    return f"{where}: {e.get('msg', e)}" if where else str(e.get("msg", e))


def _small(v: float) -> str:
    """One decimal, or 3 significant digits below 1: a tiny model's 0.048 MFLOPs printed as 0.0 before."""
    return f"{v:.1f}" if abs(v) >= 1 else f"{v:.3g}"


def _print_result(sub: dict) -> None:
    if sub.get("status") == "failed":
        typer.echo(f"failed: {sub.get('error')}")
        if sub.get("log"):
            typer.echo(sub["log"])
        return
    res = sub.get("result")
    if not res:
        return
    for task, t in res["tasks"].items():
        score = t["elue_score"]
        params = t.get("params_m")
        typer.echo(
            f"  {task:8s} ELUE score {'—' if score is None else f'{score:+.2f}'}"
            f"  params {'—' if params is None else _small(params)}M"
        )
        for i, p in enumerate(t.get("points", []), start=1):
            label = p.get("file") or f"point {i}"  # reported points carry no file name
            typer.echo(f"      {label}: {p['performance']:.2f} @ {_small(p['mflops'])} MFLOPs")
    overall = res.get("elue_score")
    typer.echo(
        f"  overall ELUE score: {'— (not all six datasets)' if overall is None else f'{overall:+.2f}'}"
    )


def _exit_on_signal(signum: int, frame) -> None:  # noqa: ANN001
    raise SystemExit(128 + signum)
