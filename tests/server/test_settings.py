"""Settings: scoring limits from arguments and environment, secure cookies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from server_setup import csrf_of, make_settings

from elue.server import Settings, create_app


def test_default_limits_are_shorter_than_the_toolkits():  # noqa: ANN001
    from elue.costs.sandbox import SandboxLimits

    s = Settings()
    assert s.sandbox_wall_s == 120.0 and s.sandbox_wall_s < SandboxLimits().wall_s
    assert s.scoring_timeout_s < SandboxLimits().wall_s


def test_scoring_limits_from_arguments_and_environment(monkeypatch, tmp_path):  # noqa: ANN001
    import pytest

    from elue.server.config import Settings

    monkeypatch.setenv("ELUE_SANDBOX_WALL_S", "99")
    assert Settings(state_dir=tmp_path).sandbox_wall_s == 99.0
    assert Settings(state_dir=tmp_path, sandbox_wall_s=10).sandbox_wall_s == 10  # arguments win
    for bad in ("nan", "0", "-1", "soon"):
        monkeypatch.setenv("ELUE_SCORING_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="ELUE_SCORING_TIMEOUT_S"):
            Settings(state_dir=tmp_path)
    monkeypatch.delenv("ELUE_SCORING_TIMEOUT_S")
    with pytest.raises(ValueError, match="scoring_timeout_s"):
        Settings(state_dir=tmp_path, scoring_timeout_s=float("inf"))


def test_submission_and_signup_limits_from_the_environment(monkeypatch, tmp_path):  # noqa: ANN001
    """An operator sets the per-user limits without writing Python (before: only Settings' fields); every web
    and worker process gets them from to_env. The guide shows what applies."""
    monkeypatch.setenv("ELUE_DAILY_LIMIT", "2")
    monkeypatch.setenv("ELUE_MONTHLY_LIMIT", "9")
    monkeypatch.setenv("ELUE_SIGNUP_LIMIT", "0")  # 0: sign-ups per address not limited
    s = Settings(state_dir=tmp_path)
    assert (s.daily_limit, s.monthly_limit, s.signup_limit) == (2, 9, 0)
    env = s.to_env()
    assert (env["ELUE_DAILY_LIMIT"], env["ELUE_MONTHLY_LIMIT"], env["ELUE_SIGNUP_LIMIT"]) == ("2", "9", "0")
    assert Settings(state_dir=tmp_path, daily_limit=7).daily_limit == 7  # arguments win
    assert "2 submissions a day" in TestClient(create_app(s)).get("/guide").text
    for name, bad in (("ELUE_DAILY_LIMIT", "0"), ("ELUE_MONTHLY_LIMIT", "many"), ("ELUE_SIGNUP_LIMIT", "-1")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            Settings(state_dir=tmp_path)
        monkeypatch.delenv(name)


def test_secure_cookies_follow_an_https_public_url_unless_set(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.delenv("ELUE_SECURE_COOKIES", raising=False)
    assert make_settings(tmp_path, public_url="https://elue.example.org/").secure_cookies is True
    assert make_settings(tmp_path, public_url="http://127.0.0.1:8000").secure_cookies is False
    assert make_settings(tmp_path, public_url="https://x.org", secure_cookies=False).secure_cookies is False
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "0")
    assert make_settings(tmp_path, public_url="https://x.org").secure_cookies is False
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "1")
    settings = make_settings(tmp_path, public_url="http://127.0.0.1:8000")
    assert settings.secure_cookies is True and settings.to_env()["ELUE_SECURE_COOKIES"] == "1"
    monkeypatch.setenv("ELUE_SECURE_COOKIES", "yes please")
    with pytest.raises(ValueError, match="ELUE_SECURE_COOKIES"):
        make_settings(tmp_path)
    # the cookie a log-in sets says so
    monkeypatch.delenv("ELUE_SECURE_COOKIES")
    app = create_app(make_settings(tmp_path, public_url="https://x.org"), admin=("admin", "admin-password"))

    client = TestClient(app, base_url="https://testserver")
    csrf = csrf_of(client.get("/login").text)
    form = {"username": "admin", "password": "admin-password", "csrf": csrf}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("raw", "trusted"), [("", False), ("0", False), ("1", True), ("true", None), ("yes", None)]
)
def test_trust_model_code_is_1_or_0(tmp_path, monkeypatch, raw, trusted):  # noqa: ANN001
    """ELUE_TRUST_MODEL_CODE=true was read as off without a word (only "1" switched it on): on a host without
    bubblewrap every upload then failed, each counted against its owner's limits. It is refused as
    ELUE_SECURE_COOKIES=yes is."""
    monkeypatch.setenv("ELUE_TRUST_MODEL_CODE", raw)
    if trusted is None:
        with pytest.raises(ValueError, match=rf"\$ELUE_TRUST_MODEL_CODE='{raw}' must be 1 or 0"):
            Settings(state_dir=tmp_path)
    else:
        assert Settings(state_dir=tmp_path).trust_model_code is trusted
