"""Sign-in, sign-out, the staff home page, and the problem type pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from core.auth import public
from core.db import reading
from core.errors import HTTP_PROBLEMS, DomainError
from core.users import authenticate

bp = Blueprint("core", __name__)


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
    error = None
    if form.validate_on_submit():
        with reading() as session:
            user = authenticate(session, form.username.data or "", form.password.data or "")
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        error = _("用户名或密码不正确。")
    return render_template("core/login.html", form=form, error=error), 200 if error is None else 401



@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    logout_user()
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
