"""The FastAPI application factory: pages (Jinja2), the JSON API (OpenAPI at /api/docs), static files
(Plotly's JS served from the installed `plotly` package: no CDN)."""

from __future__ import annotations

import base64
import logging
import math
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import scores, service, storage
from .board import BoardCache, natural_order
from .cache import NoStoreForUsers, ResponseCache, carries_user
from .config import Settings
from .db import open_database
from .deps import HEAD_SCOPE_KEY, AppState, Ctx, Download
from .formats import params_text
from .security import SessionCodec

HERE = Path(__file__).resolve().parent
# a 16x16 icon (PNG in an ICO container), kept here so it needs no package-data rule for *.ico
FAVICON_ICO = base64.b64decode(
    "AAABAAEAEBAAAAEAIABfAAAAFgAAAIlQTkcNChoKAAAADUlIRFIAAAAQAAAAEAgGAAAAH/P/YQAAACZJREFUeNpjYKAGUE1+/Z8c"
    "TBsDCAH6GUCxF0bDYEiHwcDkBUoAAJ7QNZfMB4uEAAAAAElFTkSuQmCC"
)
log = logging.getLogger("elue.server")


def plotly_js_path() -> Path:
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


# the routes that take a zip upload (POST): only their bodies may be as large as an upload
UPLOAD_PATHS = ("/submit", "/api/submissions")
ANONYMOUS_UPLOAD = "log in (or send an API token: Authorization: Bearer ...) to upload"


def _anonymous_refusal(scope) -> tuple[str, str]:  # noqa: ANN001
    """The 401 for an upload from no user: its detail and WWW-Authenticate (a token sent that is no user's
    is named invalid, as the routes do)."""
    for k, v in scope.get("headers", []):
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            return "invalid API token", 'Bearer error="invalid_token"'
    return ANONYMOUS_UPLOAD, "Bearer"


class BodyLimit:
    """Pure ASGI guard: refuse request bodies over the limit before anything reads them: `limit` for an upload
    (`UPLOAD_PATHS`), `other_limit` for every other body (JSON, forms). A JSON body is parsed whole into
    objects before the route can check who sent it: 64 MB of reported points from anyone, logged in or not,
    took 10 s and 1 GB of the web process before the 401. An upload whose sender is no user, which the route
    would refuse once the body is unpacked, is refused (401) over `other_limit` too, so nobody can make the site
    spool 64 MB bodies to disk without an account. `is_user(scope)` (blocking: run in a thread, once per upload
    over `other_limit`) says whether the request's token or session cookie is a user's: a made-up one is none."""

    def __init__(  # noqa: ANN001
        self,
        app,
        limit: int,
        shown_limit: int | None = None,
        other_limit: int | None = None,
        is_user=carries_user,  # noqa: ANN001
    ) -> None:
        self.app, self.limit = app, limit
        self.shown_limit = shown_limit or limit  # the limit the message names (the body may carry form slack)
        self.other_limit = other_limit or limit
        self.is_user = is_user

    async def _anonymous(self, scope) -> bool:  # noqa: ANN001
        if not carries_user(scope):
            return True
        try:
            return not await run_in_threadpool(self.is_user, scope)
        except Exception:  # noqa: BLE001 - the database is away: the route answers as it does then
            return False

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") in UPLOAD_PATHS
        limit = self.limit if upload else self.other_limit
        anonymous: bool | None = None  # an upload's sender is no user: asked once the body passes other_limit

        async def refuse_anonymous(size: float) -> bool:
            nonlocal anonymous
            if not upload or size <= self.other_limit:
                return False
            if anonymous is None:
                anonymous = await self._anonymous(scope)
            return anonymous

        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    size = float(int(v))
                except ValueError:
                    size = math.inf
                if await refuse_anonymous(size):
                    return await self._refuse(scope, receive, send, upload, anonymous=True)
                if size > limit:
                    return await self._refuse(scope, receive, send, upload)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if await refuse_anonymous(seen):
                    detail, auth = _anonymous_refusal(scope)
                    raise HTTPException(401, detail, headers={"www-authenticate": auth})
                if seen > limit:  # a body sent without a content-length (chunked): the same words
                    raise HTTPException(413, self._too_large(scope, upload))
            return msg

        return await self.app(scope, counted, send)

    def _too_large(self, scope, upload: bool) -> str:  # noqa: ANN001
        """The 413's words, with the limit (a chunked body's said only "request body too large"), and for an
        API client the API's upload route (it was told to go to the web form /submit)."""
        if upload:
            return f"upload too large: the limit is {self.shown_limit / 1024 / 1024:.0f} MB"
        where = "POST /api/submissions" if scope["path"].startswith("/api") else "/submit"
        return f"request body too large: the limit is {self.other_limit // 1024} KB (uploads go to {where})"

    async def _refuse(self, scope, receive, send, upload: bool = True, anonymous: bool = False):  # noqa: ANN001
        status, auth = 413, None
        if anonymous:
            status = 401
            msg, auth = _anonymous_refusal(scope)
        else:
            msg = self._too_large(scope, upload)
        if scope["path"].startswith("/api"):
            headers = {"www-authenticate": auth} if auth else None
            resp: Response = JSONResponse({"detail": msg}, status_code=status, headers=headers)
        else:
            resp = HTMLResponse(
                f"<!doctype html><title>Refused</title><h1>Refused</h1><p>{msg}.</p>"
                '<p><a href="/submit">Back</a></p>',
                status_code=status,
                headers={"connection": "close"},
            )
        await resp(scope, receive, send)


class HeadAsGet:
    """Pure ASGI: answer HEAD like GET without the body (FastAPI routes declare GET only). The scope says it
    was a HEAD (`HEAD_SCOPE_KEY`), so a file download can send its headers without reading the file."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def no_body(msg):  # noqa: ANN001, ANN202
            if msg["type"] == "http.response.body":
                msg = {**msg, "body": b""}
            await send(msg)

        return await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: True}, receive, no_body)


# Scripts only from this site's files (Plotly is served from /static), no inline scripts or handlers; styles
# inline too (Plotly writes <style> elements and style attributes); no page may be framed by another site
# (clickjacking a Publish or Delete button); forms post here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # a private submission's address never goes to a paper's site
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


def security_headers(https: bool) -> list[tuple[bytes, bytes]]:
    """What every answer carries: `SECURITY_HEADERS`, and HSTS when the site is reached over https only."""
    return SECURITY_HEADERS + ([HSTS] if https else [])


class SecurityHeaders:
    """Pure ASGI: the headers of `SECURITY_HEADERS` on every answer (pages, API, downloads, errors, cached
    answers), unless the answer sets one itself; `https`: the site is reached over https only (its cookies are
    `Secure`), so browsers are told to use https for it for a year (HSTS), and a first visit over http cannot
    be kept on http by someone on the network."""

    def __init__(self, app, https: bool = False) -> None:  # noqa: ANN001
        self.app = app
        self.headers = security_headers(https)

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def add(message):  # noqa: ANN001, ANN202
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, add)


def _json_safe(value):  # noqa: ANN001, ANN202
    """`value` with what JSON cannot carry written as text: floats that are not finite, lone surrogates."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt_score(v: float | None) -> str:
    return "—" if v is None else f"{v:+.2f}".replace("+0.00", "0.00").replace("-0.00", "0.00")


def _fmt_num(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _fmt_flops(v: float | None) -> str:
    """MFLOPs: 4,242 / 12.5 / 0.0481."""
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3g}"


# an upload's staging folder this old is a crash's leftover (unpacking takes seconds)
STAGING_STALE_S = 3600.0


def create_app(
    settings: Settings | None = None,
    *,
    seed: bool = True,
    admin: tuple[str, str] | None = None,
    staging_min_age_s: float = 0.0,
) -> FastAPI:
    """The app of one web process. `staging_min_age_s`: leave the staging folders of uploads younger than
    this (another web process of the deployment may be unpacking them: `--web-workers N`)."""
    settings = settings or Settings()
    settings.ensure_dirs()
    storage.clean_staging(settings, staging_min_age_s)
    engine, sessions = open_database(settings.database_url)
    with sessions() as s:
        if seed:
            service.seed_published(s)
        if admin:
            service.ensure_admin(s, *admin)
        key = service.secret_key(s, settings)
    service.warm_up_log_in()  # the first log-in of an unknown name then costs what any other does

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["score"] = _fmt_score
    templates.env.filters["num"] = _fmt_num
    templates.env.filters["params"] = params_text
    templates.env.filters["flops"] = _fmt_flops
    from elue.tasks import TASK_NAMES, TASKS

    templates.env.globals.update(
        TASK_NAMES=TASK_NAMES, TASKS=TASKS, SIZE_TRACKS=scores.SIZE_TRACKS, natural_order=natural_order
    )

    app = FastAPI(
        title="ELUE leaderboard",
        description="Efficiency-aware NLP leaderboard: results, submissions and datasets. "
        "Scripts authenticate with `Authorization: Bearer <token>` (tokens: /account/tokens).",
        version="1",
        docs_url=None,  # the Swagger UI loads from a CDN; /api/docs is rendered here instead
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.elue = AppState(
        settings=settings,
        sessions=sessions,
        codec=SessionCodec(key),
        board=BoardCache(sessions, settings.cache_seconds),
        templates=templates,
    )
    app.state.engine = engine

    plotly_js = plotly_js_path()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_asset() -> Download:
        return Download(
            plotly_js, media_type="application/javascript", headers={"cache-control": "public, max-age=86400"}
        )

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON_ICO, media_type="image/x-icon", headers={"cache-control": "public, max-age=86400"}
        )

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from .routes import api, web

    app.include_router(api.router)
    app.include_router(web.router)

    @app.exception_handler(service.ServiceError)
    async def _service_error(request: Request, exc: service.ServiceError):  # noqa: ANN202
        headers = None
        if exc.retry_after is not None:  # a 429 says when to come back (RFC 9110 §10.2.3), for scripts
            headers = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        return _error(request, exc.status, str(exc), headers)

    @app.exception_handler(storage.UploadError)
    async def _upload_error(request: Request, exc: storage.UploadError):  # noqa: ANN202
        return _error(request, 400, str(exc))

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable_text(request: Request, exc: UnicodeEncodeError):  # noqa: ANN202
        # JSON may carry a lone UTF-16 surrogate ("\\ud800"): not a character, so no database stores it
        return _error(
            request, 400, "the request's text holds an unpaired surrogate (\\ud800-\\udfff): remove it"
        )

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # noqa: ANN202
        # a bug: answered as other errors are (JSON `{"detail"}` for the API, the error page for browsers, the
        # security headers), not Starlette's bare text; the exception is still logged by the server. Starlette
        # runs this outside every middleware, so the headers are added here
        try:
            resp = _error(request, 500, "internal error: the site's admin can find it in the server's log")
        except Exception:  # noqa: BLE001 - the error page itself failed (the database is away): plain text
            resp = Response("internal error", status_code=500, media_type="text/plain")
        # as SecurityHeaders adds to every other answer
        resp.headers.update(
            {k.decode(): v.decode() for k, v in security_headers(bool(settings.secure_cookies))}
        )
        resp.headers["cache-control"] = "no-store"
        return resp

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # noqa: ANN202
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):  # noqa: ANN202
        if _wants_json(request):
            # as FastAPI's own answer, but with the refused input made JSON: a body of NaN, Infinity or 1e400
            # (which Python's JSON reader takes) or a lone surrogate could not be written back (a 500)
            return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)
        parts = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")]
            what = " / ".join(loc) or "the request"
            parts.append(
                f"{what}: {'missing' if err.get('type') == 'missing' else err.get('msg', 'invalid')}"
            )
        return _error(request, 422, "invalid request: " + "; ".join(parts))

    def _wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api") or "text/html" not in request.headers.get("accept", "")

    def _error(request: Request, status: int, msg: str, headers: dict | None = None):  # noqa: ANN202
        if _wants_json(request):
            return JSONResponse({"detail": msg}, status_code=status, headers=headers)
        context = {"status": status, "message": msg, "user": None}
        with app.state.elue.sessions() as db:  # the page header shows who is logged in, as elsewhere
            try:
                ctx = Ctx(request, db)
                context.update(user=ctx.user, ctx=ctx)
            except Exception:  # noqa: BLE001 - an error page must render whatever the session holds
                pass
            # rendered here, while the user's row can still be read
            return templates.TemplateResponse(
                request, "error.html", context, status_code=status, headers=headers
            )

    def is_user(scope) -> bool:  # noqa: ANN001
        """The request's API token or session cookie is a live user's (the routes' own check, `Ctx.user`)."""
        with app.state.elue.sessions() as db:
            try:
                return Ctx(Request(scope), db).user is not None
            except StarletteHTTPException:  # a token that is no user's, on a write
                return False

    app.add_middleware(
        BodyLimit,
        limit=settings.max_upload_bytes + 1024 * 1024,
        shown_limit=settings.max_upload_bytes,
        other_limit=settings.max_body_bytes,
        is_user=is_user,
    )
    board = app.state.elue.board
    app.add_middleware(
        ResponseCache,
        ttl=settings.page_cache_seconds if settings.cache_seconds > 0 else 0,
        version=board.version,
    )
    app.add_middleware(NoStoreForUsers)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders, https=bool(settings.secure_cookies))
    return app
