"""Sign-in protection through the Flask test client (issue 10, defect 4 and section 3; API.md,
"Sign-in protection"): sessions that really end, throttling, audit, headers, password rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.audit import Actor, AuditEntry
from core.clock import utcnow
from core.config import load_config
from core.db import Database
from core.errors import ValidationFailed
from core.models import LoginAttempt, User
from core.users import create_user, set_password, set_user_active
from tests.conftest import AUDIT_KEY, PASSWORD, Staff
from tests.views.conftest import signed_in

ACTOR = Actor.system("tests")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[timedelta], None]:
    """Moves the sign-in code's clock forward by the given amount (from the real now)."""

    def move(by: timedelta) -> None:
        moved = utcnow() + by
        for target in ("core.auth.utcnow", "core.views.utcnow"):
            monkeypatch.setattr(target, lambda: moved)

    return move


def kept_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def with_cookie(app: Flask, value: str) -> FlaskClient:
    """Another browser holding a copy of the cookie (what someone keeps after the clerk left)."""
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def goes_to_sign_in(response: object) -> bool:
    location = getattr(response, "location", "") or ""
    return getattr(response, "status_code", 0) == 302 and location.startswith("/login")


def from_address(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def login(client: FlaskClient, username: str, password: str) -> tuple[int, str]:
    response = client.post("/login", data={"username": username, "password": password})
    return response.status_code, response.get_data(as_text=True)


def actions(db: Database, action: str) -> list[AuditEntry]:
    with db.reading() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


# --- sessions end on the server -------------------------------------------------------------------

def test_a_cookie_kept_after_logout_no_longer_opens_the_finance_desk(html_app: Flask, staff: Staff) -> None:
    finance = signed_in(html_app, staff.usernames["finance"])
    assert finance.get("/finance").status_code == 200
    cookie = kept_cookie(finance)

    assert goes_to_sign_in(finance.post("/logout"))
    replay = with_cookie(html_app, cookie)
    response = replay.get("/finance")
    assert goes_to_sign_in(response)
    page = replay.get(response.location).get_data(as_text=True)
    assert "登录已失效，请重新登录。" in page


def test_logout_ends_only_that_session(html_app: Flask, staff: Staff) -> None:
    desk = signed_in(html_app, staff.usernames["finance"])
    laptop = signed_in(html_app, staff.usernames["finance"])
    desk.post("/logout")
    assert laptop.get("/finance").status_code == 200


def test_disabling_a_user_ends_their_sessions_even_after_re_enabling(
        html_app: Flask, staff: Staff, db: Database) -> None:
    finance = signed_in(html_app, staff.usernames["finance"])
    cookie = kept_cookie(finance)
    with db.unit_of_work() as session:
        set_user_active(session, AUDIT_KEY, ACTOR, username=staff.usernames["finance"], active=False)
    assert goes_to_sign_in(finance.get("/finance"))
    assert login(html_app.test_client(), staff.usernames["finance"], PASSWORD)[0] == 401

    with db.unit_of_work() as session:
        set_user_active(session, AUDIT_KEY, ACTOR, username=staff.usernames["finance"], active=True)
    assert goes_to_sign_in(with_cookie(html_app, cookie).get("/finance"))
    assert signed_in(html_app, staff.usernames["finance"]).get("/finance").status_code == 200


def test_disabling_through_the_model_directly_also_ends_sessions(
        html_app: Flask, staff: Staff, db: Database) -> None:
    """Whoever sets `active` (an admin API, a script): old cookies die, also after re-enabling."""
    finance = signed_in(html_app, staff.usernames["finance"])
    with db.unit_of_work() as session:
        user = session.scalar(select(User).where(User.username == staff.usernames["finance"]))
        assert user is not None
        user.active = False
    with db.unit_of_work() as session:
        user = session.scalar(select(User).where(User.username == staff.usernames["finance"]))
        assert user is not None
        user.active = True
    assert goes_to_sign_in(finance.get("/finance"))


def test_a_new_password_ends_every_old_session(html_app: Flask, staff: Staff, db: Database) -> None:
    finance = signed_in(html_app, staff.usernames["finance"])
    with db.unit_of_work() as session:
        new = set_password(session, AUDIT_KEY, ACTOR, username=staff.usernames["finance"],
                           password="another-horse-12")
    assert goes_to_sign_in(finance.get("/finance"))
    assert login(html_app.test_client(), staff.usernames["finance"], PASSWORD)[0] == 401
    fresh = html_app.test_client()
    assert login(fresh, staff.usernames["finance"], new)[0] == 302
    assert fresh.get("/finance").status_code == 200
    entries = actions(db, "user.password-set")
    assert entries and "another-horse-12" not in (entries[-1].after or "")


def test_an_idle_session_ends_with_a_chinese_message(
        html_app: Flask, staff: Staff, clock: Callable[[timedelta], None]) -> None:
    finance = signed_in(html_app, staff.usernames["finance"])
    clock(timedelta(minutes=29))
    assert finance.get("/finance").status_code == 200  # activity keeps it alive …
    clock(timedelta(minutes=29 + 29))
    assert finance.get("/finance").status_code == 200  # … for 30 minutes after the last request
    cookie = kept_cookie(finance)
    clock(timedelta(minutes=29 + 29 + 31))
    response = finance.get("/finance")
    assert goes_to_sign_in(response)
    assert "长时间未操作" in finance.get(response.location).get_data(as_text=True)
    # The server ended it: the same cookie does not come back to life (e.g. with the clock reset).
    clock(timedelta(minutes=29 + 29 + 1))
    assert goes_to_sign_in(with_cookie(html_app, cookie).get("/finance"))


def test_the_idle_limit_is_configurable(
        app: Flask, staff: Staff, clock: Callable[[timedelta], None]) -> None:
    from tests.conftest import make_test_app

    short = make_test_app(app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False, FEESVC_SESSION_IDLE_MINUTES=5)
    try:
        finance = signed_in(short, staff.usernames["finance"])
        clock(timedelta(minutes=6))
        assert goes_to_sign_in(finance.get("/finance"))
    finally:
        short.extensions["db"].engine.dispose()


def test_idle_minutes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SECRET_KEY", "x")
    monkeypatch.delenv("FEESVC_SESSION_IDLE_MINUTES", raising=False)
    assert load_config(str(tmp_path))["FEESVC_SESSION_IDLE_MINUTES"] == 30
    monkeypatch.setenv("FEESVC_SESSION_IDLE_MINUTES", "10")
    assert load_config(str(tmp_path))["FEESVC_SESSION_IDLE_MINUTES"] == 10
    monkeypatch.setenv("FEESVC_SESSION_IDLE_MINUTES", "0")
    with pytest.raises(ValueError, match="FEESVC_SESSION_IDLE_MINUTES"):
        load_config(str(tmp_path))


# --- throttling -------------------------------------------------------------------------------------

def test_five_failures_lock_the_username_for_fifteen_minutes_even_with_the_right_password(
        html_app: Flask, staff: Staff, db: Database, clock: Callable[[timedelta], None]) -> None:
    client = html_app.test_client()
    name = staff.usernames["finance"]
    for _ in range(5):
        assert login(client, name, "wrong-password-1")[0] == 401
    status, page = login(client, name, PASSWORD)
    assert status == 429
    assert "登录失败次数过多" in page and "15 分钟" in page
    response = client.post("/login", data={"username": name, "password": PASSWORD})
    assert response.status_code == 429 and response.headers["Retry-After"] == "900"
    # Another user is not affected.
    assert login(client, staff.usernames["cashier"], PASSWORD)[0] == 302

    clock(timedelta(minutes=14))
    assert login(html_app.test_client(), name, PASSWORD)[0] == 429
    clock(timedelta(minutes=15, seconds=5))
    assert login(html_app.test_client(), name, PASSWORD)[0] == 302


def test_refused_attempts_do_not_prolong_the_lockout(
        html_app: Flask, staff: Staff, clock: Callable[[timedelta], None]) -> None:
    name = staff.usernames["finance"]
    for _ in range(5):
        login(html_app.test_client(), name, "wrong-password-1")
    for minutes in (5, 10, 14):
        clock(timedelta(minutes=minutes))
        assert login(html_app.test_client(), name, "wrong-password-2")[0] == 429
    clock(timedelta(minutes=15, seconds=5))
    assert login(html_app.test_client(), name, PASSWORD)[0] == 302


def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(
        html_app: Flask, staff: Staff, clock: Callable[[timedelta], None]) -> None:
    name = staff.usernames["finance"]
    for minute in range(0, 20, 4):  # five failures, at 0, 4, 8, 12 and 16 minutes
        clock(timedelta(minutes=minute))
        assert login(html_app.test_client(), name, "wrong-password-1")[0] == 401
    assert login(html_app.test_client(), name, PASSWORD)[0] == 302


def test_a_success_resets_the_count_for_that_username(html_app: Flask, staff: Staff) -> None:
    client = html_app.test_client()
    name = staff.usernames["finance"]
    for _ in range(4):
        assert login(client, name, "wrong-password-1")[0] == 401
    assert login(client, name, PASSWORD)[0] == 302
    for _ in range(4):
        assert login(html_app.test_client(), name, "wrong-password-1")[0] == 401
    assert login(html_app.test_client(), name, PASSWORD)[0] == 302


def test_an_unknown_username_is_locked_like_a_real_one(html_app: Flask, staff: Staff) -> None:
    """Otherwise the 429 would tell an attacker which usernames exist."""
    client = html_app.test_client()
    for _ in range(5):
        assert login(client, "no-such-clerk", "wrong-password-1")[0] == 401
    assert login(client, "no-such-clerk", "wrong-password-1")[0] == 429


def test_thirty_failures_from_one_address_refuse_that_address(html_app: Flask, staff: Staff) -> None:
    attacker = from_address(html_app, "203.0.113.7")
    for n in range(30):  # a different name each time: the per-username lock never trips
        assert login(attacker, f"guess-{n}", "wrong-password-1")[0] == 401
    status, page = login(attacker, staff.usernames["finance"], PASSWORD)
    assert status == 429 and "来自您所在地址的登录失败次数过多" in page
    elsewhere = from_address(html_app, "198.51.100.2")
    assert login(elsewhere, staff.usernames["finance"], PASSWORD)[0] == 302


def test_failed_and_refused_sign_ins_are_audited_without_the_password(
        html_app: Flask, staff: Staff, db: Database) -> None:
    client = from_address(html_app, "203.0.113.9")
    typed = "Secret-Guess-77"
    for _ in range(6):
        login(client, staff.usernames["finance"], typed)
    failed, refused = actions(db, "signin.failed"), actions(db, "signin.refused")
    assert len(failed) == 5 and len(refused) == 1
    for entry in failed + refused:
        assert entry.entity_id == staff.usernames["finance"]
        assert "203.0.113.9" in (entry.after or "")
        assert typed not in (entry.after or "") and typed not in (entry.before or "")
        assert typed not in entry.actor_name
    assert '"by":"username"' in (refused[0].after or "")


def test_attempts_are_kept_in_the_database_and_old_ones_purged(
        html_app: Flask, staff: Staff, db: Database, clock: Callable[[timedelta], None]) -> None:
    """The count lives in the shared database (every worker and node sees it); a day later the
    rows are gone."""
    login(html_app.test_client(), "someone", "wrong-password-1")
    with db.reading() as session:
        assert session.scalar(select(LoginAttempt.outcome).where(LoginAttempt.username == "someone")) == "failed"
    clock(timedelta(days=1, minutes=1))
    assert login(html_app.test_client(), staff.usernames["finance"], PASSWORD)[0] == 302
    with db.reading() as session:
        assert session.scalar(select(LoginAttempt.id).where(LoginAttempt.username == "someone")) is None


# --- headers and cookies ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/login", "/fees", "/problems/notice-already-paid"])
def test_pages_carry_a_strict_content_security_policy(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";")}
    assert directives["default-src"] == "default-src 'self'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_json_answers_carry_no_page_policy(client: FlaskClient) -> None:
    assert "Content-Security-Policy" not in client.get("/api/v1/fee-schedule").headers


def test_the_session_cookie_is_httponly_and_samesite_lax(html_app: Flask, staff: Staff) -> None:
    client = html_app.test_client()
    response = client.post("/login", data={"username": staff.usernames["finance"], "password": PASSWORD})
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_cookies_are_secure_unless_insecure_cookies_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SECRET_KEY", "x")
    monkeypatch.delenv("FEESVC_INSECURE_COOKIES", raising=False)
    assert load_config(str(tmp_path))["SESSION_COOKIE_SECURE"] is True
    monkeypatch.setenv("FEESVC_INSECURE_COOKIES", "1")
    assert load_config(str(tmp_path))["SESSION_COOKIE_SECURE"] is False


# --- password rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("username", "password", "message"), [
    ("wang-fang", "short-9", "密码至少 10 个字符。"),
    ("wang-fang", "wang-fang", "不能与用户名相同"),
    ("wang-fang", "my-WANG-FANG-2026", "不能包含用户名"),
    ("li", "li", "密码至少 10 个字符。"),
    ("wang-fang", "aaaaaaaaaaaa", "同一个字符"),
])
def test_passwords_that_break_the_rules_are_refused(
        staff: Staff, db: Database, username: str, password: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as refused, db.unit_of_work() as session:
        create_user(session, AUDIT_KEY, ACTOR, username=username, role="cashier", password=password)
    assert any(message in text for text in refused.value.errors["password"])
    with db.reading() as session:
        assert session.scalar(select(User.id).where(User.username == username)) is None


def test_a_short_username_may_appear_inside_a_password(staff: Staff, db: Database) -> None:
    with db.unit_of_work() as session:
        create_user(session, AUDIT_KEY, ACTOR, username="li", role="cashier", password="delicious-tea-9")


def test_a_new_password_obeys_the_same_rules(staff: Staff, db: Database) -> None:
    with pytest.raises(ValidationFailed), db.unit_of_work() as session:
        set_password(session, AUDIT_KEY, ACTOR, username=staff.usernames["finance"], password="finance-1-x")


def test_the_demo_password_obeys_the_rules() -> None:
    from core.demo import DEMO_PASSWORD, DEMO_USERS
    from core.users import password_problems

    for username, *_rest in DEMO_USERS:
        assert password_problems(DEMO_PASSWORD, username) == []


def test_a_generated_password_obeys_the_rules_for_any_username(staff: Staff, db: Database) -> None:
    from core.users import password_problems

    with db.unit_of_work() as session:
        _user, password = create_user(session, AUDIT_KEY, ACTOR, username="abcd", role="cashier")
    assert password_problems(password, "abcd") == []


# --- no inline script or style (what the policy above would block) ---------------------------------

INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "event handler attribute"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]


def inline_code(html: str) -> list[str]:
    return [label for pattern, label in INLINE if pattern.search(html)]


def test_staff_pages_contain_no_inline_script_or_style(html_app: Flask, staff: Staff) -> None:
    """Each page as its role sees it (the browser tests also fail on any CSP report)."""
    from tests.conftest import issue

    number = issue(html_app.test_client(), staff).json["number"]
    pages = {
        "window": ["/", "/notices/new", "/notices", f"/notices/{number}"],
        "cashier": ["/cashier", f"/cashier?number={number}", "/cashier/shift"],
        "finance": ["/finance", "/fees"],
        "admin": ["/admin/webhooks"],
    }
    found: dict[str, list[str]] = {}
    for who, paths in pages.items():
        client = signed_in(html_app, staff.usernames[who])
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, (who, path, response.status_code)
            if problems := inline_code(response.get_data(as_text=True)):
                found[path] = problems
    assert not found


def test_the_inline_checker_sees_what_it_looks_for() -> None:
    assert inline_code('<script>alert(1)</script><div style="x" onclick="y">') == [
        "inline <script>", "style attribute", "event handler attribute"]
    assert inline_code('<script src="/static/a.js"></script>') == []


# --- the operator commands ----------------------------------------------------------------------

def test_users_set_password_and_disable_commands_end_sessions(html_app: Flask, staff: Staff) -> None:
    name = staff.usernames["finance"]
    finance = signed_in(html_app, name)
    runner = html_app.test_cli_runner()
    refused = runner.invoke(args=["users", "set-password", name, "--password", "finance-1"])
    assert refused.exit_code != 0 and "密码" in refused.output
    assert finance.get("/finance").status_code == 200  # a refused password changes nothing
    result = runner.invoke(args=["users", "set-password", name])
    assert result.exit_code == 0, result.output
    new = result.output.strip().splitlines()[-1]
    assert goes_to_sign_in(finance.get("/finance"))
    again = html_app.test_client()
    assert login(again, name, new)[0] == 302

    assert runner.invoke(args=["users", "disable", name]).exit_code == 0
    assert goes_to_sign_in(again.get("/finance"))
    assert login(html_app.test_client(), name, new)[0] == 401
    assert runner.invoke(args=["users", "enable", name]).exit_code == 0
    assert login(html_app.test_client(), name, new)[0] == 302
    assert runner.invoke(args=["users", "disable", "nobody-here"]).exit_code != 0
