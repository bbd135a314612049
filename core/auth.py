"""Who is calling: bearer tokens for the API, Flask-Login sessions for the pages, and roles."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import LoginManager, current_user
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from core import signin
from core.audit import Actor
from core.clock import utcnow
from core.db import reading, unit_of_work
from core.errors import Forbidden, Unauthorized
from core.models import ApiToken, User
from core.users import hash_token, user_for_token

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
# OpenAPI security requirement of staff endpoints (the scheme is declared in core.app).
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_BEARER_KEY = "feeservice.bearer_user"

# Bearer token → user, per app and process, for a few seconds: the lookup is a read transaction of
# its own (~1 ms of worker CPU and three round trips per API request). A token revoked or a user
# disabled *in this process* is dropped at once (the attribute events below); in the other workers
# and after a CLI revocation it keeps working for at most TOKEN_CACHE_SECONDS.
# app.config["FEESVC_TOKEN_CACHE_SECONDS"] overrides it; 0 turns the cache off.
TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_MAX = 10_000
_CACHE_KEY = "feeservice.token_cache"
_CHANGED_KEY = "feeservice.auth_changed"
_generation = itertools.count(1)
_current_generation = 0


def _invalidate_token_cache() -> None:
    global _current_generation
    _current_generation = next(_generation)


def _on_auth_change(target: Any, *_args: Any) -> None:
    """A token revoked or a user's access changed: forget every cached token now and again when the
    change commits (so that a lookup between the change and its commit cannot keep the old answer)."""
    _invalidate_token_cache()
    session = object_session(target)
    if session is not None:
        session.info[_CHANGED_KEY] = True


for _attribute in (ApiToken.revoked_at, ApiToken.user_id, User.active, User.role, User.department_id):
    event.listen(_attribute, "set", _on_auth_change)


@event.listens_for(Session, "after_commit")
def _after_auth_commit(session: Session) -> None:
    if session.info.pop(_CHANGED_KEY, False):
        _invalidate_token_cache()


def _user_for_bearer(token: str) -> User | None:
    ttl = float(current_app.config.get("FEESVC_TOKEN_CACHE_SECONDS", TOKEN_CACHE_SECONDS))
    if ttl <= 0:
        with reading() as session:
            return user_for_token(session, token)
    cache: dict[str, tuple[float, int, User]] = current_app.extensions.setdefault(_CACHE_KEY, {})
    key = hash_token(token)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and hit[0] > now and hit[1] == _current_generation:
        return hit[2]
    generation = _current_generation
    with reading() as session:
        user = user_for_token(session, token)
    if user is None:  # unknown tokens are not cached: nobody can fill the cache with them
        cache.pop(key, None)
        return None
    if len(cache) >= TOKEN_CACHE_MAX:
        cache.clear()
    # Detached, fully loaded (department is joined) and only ever read: safe to share between requests.
    cache[key] = (now + ttl, generation, user)
    return user


def init_auth(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "core.login"
    login_manager.login_message = None  # the login page explains itself


# The page session's id in the (signed) Flask session cookie; the server keeps its state.
SESSION_ID_KEY = "feesvc_sid"


def idle_limit() -> timedelta:
    return timedelta(minutes=float(current_app.config.get("FEESVC_SESSION_IDLE_MINUTES", 30)))


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    """The signed-in user only while the server-side session is open: a cookie kept after logout,
    idle time, a disable or a password change is refused (issue 10, defect 4)."""
    token = session.get(SESSION_ID_KEY)
    if not isinstance(token, str):
        return None  # a cookie from before server-side sessions, or forged without an id
    now = utcnow()
    with reading() as db_session:
        check = signin.check_session(db_session, token, now, idle_limit())
    if check.verdict in {"touch", "idle", "revoked"} and check.session_id is not None:
        with unit_of_work() as db_session:
            if check.verdict == "touch":
                signin.touch_session(db_session, check.session_id, now)
            else:
                signin.end_session(db_session, audit_key(), check.session_id, check.verdict, now)
    if check.user is None or str(check.user.id) != user_id:
        _forget_session(check.verdict)
        return None
    return check.user


def _forget_session(verdict: str) -> None:
    """Drop the dead session from the cookie and say why on the sign-in page."""
    session.pop(SESSION_ID_KEY, None)
    session.pop("_user_id", None)
    session.pop("_fresh", None)
    if not g.get("feesvc_session_flashed"):
        g.feesvc_session_flashed = True
        if verdict == "idle":
            flash(_("您已长时间未操作，为安全起见已自动退出，请重新登录。"), "error")
        elif verdict in {"revoked", "ended"}:
            flash(_("登录已失效，请重新登录。"), "error")


def bearer_user() -> User | None:
    # Cached on the request itself: `g` may outlive one request when an app context is already
    # pushed (CLI, tests), and a user must never leak into another request.
    if _BEARER_KEY not in request.environ:
        header = request.headers.get("Authorization", "")
        scheme, _sep, token = header.partition(" ")
        user = None
        if scheme.lower() == "bearer" and token.strip():
            user = _user_for_bearer(token.strip())
        request.environ[_BEARER_KEY] = user
    return cast(User | None, request.environ[_BEARER_KEY])


def api_user(*roles: str) -> User:
    """The token's user, who must hold one of `roles` (any staff role when none given)."""
    user = bearer_user()
    if user is None:
        raise Unauthorized(_("缺少或无效的访问令牌（Authorization: Bearer …）。"))
    if roles and user.role not in roles:
        raise Forbidden(_("当前角色无权执行此操作。"))
    return user


def api_roles(*roles: str) -> Callable[[F], F]:
    """Decorator for API views: a valid bearer token of one of these roles."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            api_user(*roles)
            return view(*args, **kwargs)

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def page_roles(*roles: str) -> Callable[[F], F]:
    """Decorator for HTML views: signed in, with one of these roles."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return redirect(url_for("core.login", next=request.full_path))
            if roles and current_user.role not in roles:
                raise Forbidden(_("当前角色无权访问此页面。"))
            return view(*args, **kwargs)

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def public(view: F) -> F:
    """Marks a view that needs no sign-in (the authorisation test table checks the marks)."""
    view.public = True  # type: ignore[attr-defined]
    return view


def actor_of(user: User) -> Actor:
    return Actor(kind="user", name=user.username, id=user.id)


def page_user() -> User:
    return cast(User, current_user._get_current_object())


def audit_key() -> str:
    return str(current_app.config["FEESVC_AUDIT_KEY"])
