"""HTML pages of the accepting window: issue, list, view, cancel and print notices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from marshmallow import ValidationError

from core.auth import page_roles, page_user
from core.clock import today
from core.db import reading, unit_of_work
from core.errors import DomainError, flatten_messages
from core.models import Role
from core.money import yuan_to_fen
from fees.service import items_in_force
from notices import service
from notices.barcode import code128_svg
from notices.numbers import group_digits
from notices.pdf import PAPER_SIZES, render_notice_pdf
from notices.schemas import NoticeIn, NoticeListArgs
from receipts.service import certificate_of, latest_receipt_of

bp = Blueprint("notices", __name__, template_folder="templates")
STAFF = (Role.WINDOW, Role.CASHIER, Role.FINANCE, Role.ADMIN)
FORM_LINES = 5
MAX_FORM_LINES = 50


class CsrfOnly(FlaskForm):
    """The notice form has a variable number of lines; NoticeIn validates it, WTF guards CSRF."""


def _today() -> Any:
    return today(current_app.config["FEESVC_TIMEZONE"])


@bp.route("/notices")
@page_roles(*STAFF)
def index() -> Any:
    user = page_user()
    errors: dict[str, list[str]] = {}
    try:
        args = NoticeListArgs().load({k: v for k, v in request.args.items() if v != ""})
    except ValidationError as exc:
        errors = flatten_messages(exc.messages)
        args = NoticeListArgs().load({})
    flt = service.NoticeFilter(
        department_id=user.department_id if user.role == Role.WINDOW else None,
        status=args.get("status"), issued_from=args.get("from_"), issued_to=args.get("to"),
        q=args.get("q") or None)
    day = _today()
    with reading() as session:
        notices, total = service.list_notices(session, current_app.config["FEESVC_TIMEZONE"], day, flt,
                                              page=args["page"], per_page=args["per_page"])
        return render_template("notices/index.html", notices=notices, total=total, args=args,
                               today=day, errors=errors, group_digits=group_digits)


def _line_count(form: Any) -> int:
    """How many line rows the form had: 5 to MAX_FORM_LINES, whatever the client sent."""
    text = str(form.get("line_count", FORM_LINES))
    return min(max(int(text), FORM_LINES), MAX_FORM_LINES) if text.isascii() and text.isdigit() else FORM_LINES


def _form_payload(form: Any) -> tuple[dict[str, Any], dict[str, list[str]], list[int]]:
    """The HTML form as the API's JSON body (yuan → fen for reductions), the errors found on the
    way, and for each line sent the form row it came from (blank rows are skipped)."""
    errors: dict[str, list[str]] = {}
    items: list[dict[str, Any]] = []
    rows: list[int] = []
    for row in range(_line_count(form)):
        code = form.get(f"items-{row}-fee_code", "").strip()
        if not code:
            continue
        line: dict[str, Any] = {"fee_code": code}
        quantity = form.get(f"items-{row}-quantity", "").strip()
        line["quantity"] = int(quantity) if quantity.isascii() and quantity.isdigit() else quantity
        override = form.get(f"items-{row}-override_amount", "").strip()
        reason = form.get(f"items-{row}-override_reason", "").strip()
        if override:
            try:
                line["override_amount"] = yuan_to_fen(override)
            except ValueError:
                errors[f"items.{len(items)}.override_amount"] = [_("减免后金额须为元，最多两位小数。")]
        if reason:
            line["override_reason"] = reason
        items.append(line)
        rows.append(row)
    payload: dict[str, Any] = {
        "department": form.get("department", ""),
        "payer": {"name": form.get("payer_name", ""), "id_number": form.get("payer_id_number") or None},
        "case_reference": form.get("case_reference") or None,
        "items": items,
    }
    if form.get("due_date"):
        payload["due_date"] = form["due_date"]
    return payload, errors, rows


def _errors_by_form_row(errors: dict[str, list[str]], rows: list[int]) -> dict[str, list[str]]:
    """items.<line>.field → items.<form row>.field, so that each error sits under its own row."""
    mapped: dict[str, list[str]] = {}
    for key, messages in errors.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[0] == "items" and parts[1].isdigit() and int(parts[1]) < len(rows):
            parts[1] = str(rows[int(parts[1])])
            key = ".".join(parts)
        mapped.setdefault(key, []).extend(messages)
    return mapped


@bp.route("/notices/new", methods=["GET", "POST"])
@page_roles(Role.WINDOW)
def new() -> Any:
    clerk = page_user()
    csrf_form = CsrfOnly()
    errors: dict[str, list[str]] = {}
    message = None
    if request.method == "POST" and csrf_form.validate_on_submit():
        payload, errors, rows = _form_payload(request.form)
        try:
            data = NoticeIn().load(payload)
        except ValidationError as exc:
            errors.update(flatten_messages(exc.messages))
        if not payload["payer"]["name"].strip():
            errors["payer.name"] = [_("请填写缴款人姓名或单位名称。")]
        if not errors:
            try:
                with unit_of_work() as session:
                    notice = service.issue_notice(
                        session, service.settings_from_config(current_app.config), clerk,
                        department_code=data["department"], payer_name=data["payer"]["name"],
                        payer_id_number=data["payer"].get("id_number"),
                        case_reference=data.get("case_reference"), due_date=data.get("due_date"),
                        items=[service.LineRequest(**line) for line in data["items"]])
                    number = notice.number
                flash(_("缴款通知书已开具：%(n)s", n=group_digits(number)), "ok")
                return redirect(url_for("notices.show", number=number))
            except DomainError as error:
                message = error.detail or str(error.title)
                errors.update(error.extra.get("errors") or {})
        errors = _errors_by_form_row(errors, rows)
        message = message or _("请更正标红的内容后再提交。")
    elif request.method == "POST":
        message = _("页面已过期，请刷新后重新提交。")
    with reading() as session:
        fees = [f for f in items_in_force(session, _today()) if f.department_id == clerk.department_id]
    default_due = _today() + timedelta(days=int(current_app.config["FEESVC_DUE_DAYS"]))
    return render_template("notices/new.html", fees=fees, errors=errors, message=message,
                           form=request.form, csrf_form=csrf_form, line_count=_line_count(request.form),
                           department=clerk.department, default_due=default_due,
                           due_days=current_app.config["FEESVC_DUE_DAYS"]), (200 if not message else 422)


@bp.route("/notices/<number>")
@page_roles(*STAFF)
def show(number: str) -> Any:
    user = page_user()
    with reading() as session:
        notice = service.find_notice(session, number)
        service.check_can_view(user, notice)
        return render_template("notices/show.html", notice=notice, status=notice.status_on(_today()),
                               barcode=code128_svg(notice.number), group_digits=group_digits,
                               csrf_form=CsrfOnly(), receipt=latest_receipt_of(session, notice.id),
                               certificate=certificate_of(session, notice.id))


@bp.route("/notices/<number>/print")
@page_roles(*STAFF)
def print_pdf(number: str) -> Response:
    user = page_user()
    size = request.args.get("size", "A4").upper()
    size = size if size in PAPER_SIZES else "A4"
    with reading() as session:
        notice = service.find_notice(session, number)
        service.check_can_view(user, notice)
        pdf = render_notice_pdf(notice, current_app.config, paper=size)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="notice-{notice.number}.pdf"'})


@bp.route("/notices/<number>/cancel", methods=["POST"])
@page_roles(Role.WINDOW)
def cancel(number: str) -> Any:
    clerk = page_user()
    if not CsrfOnly().validate_on_submit():
        flash(_("页面已过期，请刷新后重试。"), "error")
        return redirect(url_for("notices.show", number=number))
    reason = request.form.get("reason", "").strip()
    if not reason or len(reason) > 500:
        flash(_("请填写作废原因（不超过 500 字）。"), "error")
        return redirect(url_for("notices.show", number=number))
    try:
        with unit_of_work() as session:
            service.cancel_notice(session, service.settings_from_config(current_app.config), clerk,
                                  number, reason)
        flash(_("缴款通知书已作废。"), "ok")
    except DomainError as error:
        flash(error.detail or str(error.title), "error")
    return redirect(url_for("notices.show", number=number))
