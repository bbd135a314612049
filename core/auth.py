"""Who is calling: bearer tokens for the API, Flask-Login sessions for the pages, and roles."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import LoginManager, current_user

from core.audit import Actor
from core.db import reading
from core.errors import Forbidden, Unauthorized
from core.models import User
from core.users import user_for_token

F = TypeVar("F", bound=Callable[..., Any])

login_manager = LoginManager()
# OpenAPI security requirement of staff endpoints (the scheme is declared in core.app).
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_BEARER_KEY = "feeservice.bearer_user"


def init_auth(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "core.login"
    login_manager.login_message = None  # the login page explains itself


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    with reading() as session:
        user = session.get(User, int(user_id))
        return user if user is not None and user.active else None


def bearer_user() -> User | None:
    # Cached on the request itself: `g` may outlive one request when an app context is already
    # pushed (CLI, tests), and a user must never leak into another request.
    if _BEARER_KEY not in request.environ:
        header = request.headers.get("Authorization", "")
        scheme, _sep, token = header.partition(" ")
        user = None
        if scheme.lower() == "bearer" and token.strip():
            with reading() as session:
                user = user_for_token(session, token.strip())
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
