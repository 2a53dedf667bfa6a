"""Per-request plumbing shared by pages and API: the database session, who is asking (session cookie
or API token), CSRF checks, and the deployment's state hung on `app.state.elue`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from .board import BoardCache
from .config import Settings
from .db import User
from .security import SESSION_COOKIE, SESSION_MAX_AGE, SessionCodec, csrf_ok, new_csrf
from .service import ServiceError, authenticate, user_from_token
from .throttle import LoginThrottle

# row ids in paths: 1 .. 2**31-1, the range of the id columns (INTEGER: 32 bits on PostgreSQL); a larger
# number used to reach the database and fail there with a 500 (OverflowError)
MAX_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


# set in the scope by `app.HeadAsGet`, which hands a HEAD request to the GET routes
HEAD_SCOPE_KEY = "elue.head"


class Download(FileResponse):
    """A file response that, for a HEAD request (answered by a GET route), sends the headers only: Starlette's
    FileResponse skips reading the file when the method is HEAD, and the route saw GET."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope.get(HEAD_SCOPE_KEY):
            scope = {**scope, "method": "HEAD"}
        await super().__call__(scope, receive, send)


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker
    codec: SessionCodec
    board: BoardCache
    templates: Jinja2Templates
    login_throttle: LoginThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.login_throttle = LoginThrottle(self.sessions)


def state(request: Request) -> AppState:
    return request.app.state.elue


class Ctx:
    """Who is asking, with a lazily created session (so anonymous page views carry no cookie)."""

    def __init__(self, request: Request, db: Session) -> None:
        self.request = request
        self.db = db
        self.st = state(request)
        self._session = self.st.codec.loads(request.cookies.get(SESSION_COOKIE))
        self.dirty = False
        self.clear = False
        self._user: User | None | bool = False
        self.via_token = False
        self.bad_token = False

    @property
    def user(self) -> User | None:
        if self._user is False:
            self._user = None
            auth = self.request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                self._user = user_from_token(self.db, auth[7:].strip())
                self.via_token = self._user is not None
                if self._user is None:
                    # a read goes on as anonymous (public pages and API alike); a write is refused
                    self.bad_token = True
                    if self.request.method not in ("GET", "HEAD"):
                        raise HTTPException(
                            401,
                            "invalid API token",
                            headers={"www-authenticate": 'Bearer error="invalid_token"'},
                        )
            elif self._session and self._session.get("uid"):
                user = self.db.get(User, self._session["uid"])
                # a cookie from before the user's last log-out is dead even if its signature is good
                if user is not None and self._session.get("epoch") == (user.session_epoch or 0):
                    self._user = user
        return self._user

    @property
    def csrf(self) -> str:
        if self._session is None:
            self._session = {"uid": None, "csrf": new_csrf()}
            self.dirty = True
        return self._session["csrf"]

    def check_csrf(self, given: str | None) -> None:
        if self.via_token:
            return
        expected = self._session.get("csrf") if self._session else None
        if not csrf_ok(expected, given):
            if self.request.url.path.startswith("/api/"):  # no form to reload: say what the API wants
                raise HTTPException(
                    403,
                    "a write with the site's session cookie needs the session's CSRF token in the X-CSRF-Token "
                    "header; scripts send an API token instead (Authorization: Bearer ...)",
                )
            raise HTTPException(
                403, "the form expired or came from another site (CSRF check): reload and retry"
            )

    def login(self, user: User) -> None:
        # a fresh CSRF token per log-in
        self._session = {"uid": user.id, "csrf": new_csrf(), "epoch": user.session_epoch or 0}
        self._user = user
        self.dirty = True

    def logout(self) -> None:
        """Drop the cookie and revoke it server-side: every session of this user ends (API tokens stay)."""
        user = self.user
        if user is not None and not self.via_token:
            user.session_epoch = (user.session_epoch or 0) + 1
            self.db.commit()
        self._session = None
        self._user = None
        self.clear = True

    def apply(self, response):  # noqa: ANN001, ANN201
        if self.clear:
            response.delete_cookie(SESSION_COOKIE, path="/")
        elif self.dirty and self._session is not None:
            response.set_cookie(
                SESSION_COOKIE,
                self.st.codec.dumps(self._session),
                max_age=SESSION_MAX_AGE,
                httponly=True,
                samesite="lax",
                secure=self.st.settings.secure_cookies,
                path="/",
            )
        return response


def get_db(request: Request):
    with state(request).sessions() as s:
        yield s


def get_ctx(request: Request, db: Session = Depends(get_db)) -> Ctx:
    return Ctx(request, db)


def throttled_authenticate(ctx: Ctx, username: str, password: str) -> User | None:
    """`service.authenticate`, refused with 429 after too many failures for this user name and client."""
    throttle = ctx.st.login_throttle
    key = throttle.key(username, ctx.request.client.host if ctx.request.client else None)
    wait = throttle.begin(key)  # counted as a failure until it succeeds
    if wait:
        raise ServiceError(f"too many failed log-ins: try again in {wait:.0f} s", 429, retry_after=wait)
    user = authenticate(ctx.db, username, password)
    if user is not None:
        throttle.succeeded(key)
    return user
