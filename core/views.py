"""Sign-in, sign-out, the staff home page, and the problem type pages."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from core import signin
from core.auth import SESSION_ID_KEY, audit_key, idle_limit, public
from core.clock import utcnow
from core.db import reading, unit_of_work
from core.errors import HTTP_PROBLEMS, DomainError
from core.users import authenticate

bp = Blueprint("core", __name__)

# No inline script or style anywhere (the pages' JavaScript and CSS are static files), so the
# strict policy needs no nonce or hash; frame-ancestors stops clickjacking in browsers that
# ignore X-Frame-Options' successor rules. img-src allows nothing but our own files: barcodes are
# inline SVG, QR codes live in the PDFs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@bp.after_app_request
def _content_security_policy(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


class LoginForm(FlaskForm):
    username = StringField("用户名", validators=[DataRequired(message="请输入用户名。"), Length(max=64)])
    password = PasswordField("密码", validators=[DataRequired(message="请输入密码。"), Length(max=200)])


def _safe_next(target: str | None) -> str:
    if target and not urlsplit(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("core.home")


@bp.route("/")
@public
def home() -> Any:
    if not current_user.is_authenticated:
        return render_template("core/public_home.html")
    return render_template("core/home.html")



@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("core/login.html", form=form, error=None)
    username, password = (form.username.data or "").strip(), form.password.data or ""
    address = request.remote_addr or "unknown"
    now = utcnow()
    # Counted (and committed) before the password is checked: see core.signin.
    with unit_of_work() as db_session:
        attempt_id, refusal = signin.begin_attempt(db_session, audit_key(), username=username, address=address,
                                                   now=now)
    if refusal is not None or attempt_id is None:
        return _refused(form, refusal, now)
    with reading() as db_session:
        user = authenticate(db_session, username, password)
    with unit_of_work() as db_session:
        if user is None:
            signin.fail_attempt(db_session, audit_key(), attempt_id, username=username, address=address)
        else:
            token = signin.succeed_attempt(db_session, audit_key(), attempt_id, user, address=address, now=now)
    if user is None:
        return render_template("core/login.html", form=form, error=_("用户名或密码不正确。")), 401
    target = _safe_next(request.args.get("next"))
    # A fresh cookie: nothing chosen before sign-in (a planted session) survives it.
    session.clear()
    session[SESSION_ID_KEY] = token
    login_user(user)
    return redirect(target)


def _refused(form: LoginForm, refusal: signin.Refusal | None, now: datetime) -> Any:
    until = refusal.until if refusal is not None else now
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    if refusal is not None and refusal.by == "address":
        error = _("来自您所在地址的登录失败次数过多，请 %(n)d 分钟后再试。", n=minutes)
    else:
        error = _("该账号登录失败次数过多，已暂时锁定，请 %(n)d 分钟后再试（输入正确的密码也无法登录）。", n=minutes)
    response = Response(render_template("core/login.html", form=form, error=error), status=429)
    response.headers["Retry-After"] = str(minutes * 60)
    return response


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    token = session.get(SESSION_ID_KEY)
    if isinstance(token, str):
        now = utcnow()
        with reading() as db_session:
            check = signin.check_session(db_session, token, now, idle_limit())
        if check.session_id is not None:
            with unit_of_work() as db_session:
                signin.end_session(db_session, audit_key(), check.session_id, "logout", now)
    logout_user()
    session.clear()
    return redirect(url_for("core.login"))


@bp.route("/problems/<code>")
@public
def problem(code: str) -> Any:
    known = {c: str(t) for c, t in HTTP_PROBLEMS.values()}
    known.update({cls.code: str(cls.title) for cls in _all_subclasses(DomainError)})
    if code not in known:
        abort(404)
    return render_template("core/problem.html", code=code, title=known[code])



def _all_subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    found: list[type[DomainError]] = []
    sub: type[DomainError]
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found
