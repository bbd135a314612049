"""The cashier window (收费窗口): scan, check, take the money, print the receipt; and 日结."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from core import idempotency
from core.api_idempotency import run_once
from core.auth import page_roles, page_user
from core.clock import today, utcnow
from core.db import reading, unit_of_work
from core.errors import DomainError
from core.idempotency import IdempotencyKeyInUse, IdempotencyKeyReuse
from core.models import Role
from core.money import yuan_to_fen
from notices.numbers import group_digits
from notices.service import find_notice
from payments import service
from payments.models import Payment, PaymentMethod
from payments.pdf import render_shift_report
from receipts.service import receipt_settings

bp = Blueprint("payments", __name__, template_folder="templates")
METHOD_LABELS = {"cash": "现金", "card": "银行卡", "transfer": "转账", "other": "其他"}


class CsrfOnly(FlaskForm):
    pass


def _lookup(number: str) -> tuple[Any, str | None, str | None]:
    """(notice, why it cannot be paid, error) for the number the scanner typed."""
    try:
        with reading() as session:
            notice = find_notice(session, number)
            try:
                service.check_payable(notice, utcnow(), current_app.config["FEESVC_TIMEZONE"])
                blocked = None
            except DomainError as error:
                blocked = error.detail or str(error.title)
            return notice, blocked, None
    except DomainError as error:
        return None, None, error.detail or str(error.title)


@bp.route("/cashier")
@page_roles(Role.CASHIER)
def cashier() -> Any:
    number = request.args.get("number", "").strip()
    notice = blocked = error = None
    if number:
        notice, blocked, error = _lookup(number)
    return render_template("payments/cashier.html", number=number, notice=notice, blocked=blocked, error=error,
                           status=notice.status_on(today(current_app.config["FEESVC_TIMEZONE"])) if notice else None,
                           idempotency_key=uuid.uuid4().hex, methods=METHOD_LABELS, group_digits=group_digits,
                           csrf_form=CsrfOnly())


@bp.route("/cashier/pay", methods=["POST"])
@page_roles(Role.CASHIER)
def pay() -> Any:
    cashier_user = page_user()
    number = request.form.get("number", "")
    method = request.form.get("method", "")
    key = request.form.get("idempotency_key", "")
    amount_text = request.form.get("amount", "")

    def fail(message: str) -> Any:
        notice, blocked, error = _lookup(number)
        return render_template("payments/cashier.html", number=number, notice=notice, blocked=blocked,
                               error=message, status=None, idempotency_key=uuid.uuid4().hex, methods=METHOD_LABELS,
                               group_digits=group_digits, csrf_form=CsrfOnly()), 409

    if not CsrfOnly().validate_on_submit():
        return fail(_("页面已过期，请重新扫描通知书。"))
    amount_ok = amount_text.isascii() and amount_text.isdigit()
    if method not in {m.value for m in PaymentMethod} or not amount_ok or not 1 <= len(key) <= 64:
        return fail(_("请选择缴费方式后再确认。"))
    client = f"user:{cashier_user.id}"
    form_key = "cashier-form:" + key
    print_ = idempotency.fingerprint("POST", "/cashier/pay", f'["{number}",{amount_text},"{method}"]'.encode())

    def pay_once() -> Response:
        try:
            with unit_of_work() as session:
                confirmation = service.confirm_cashier_payment(
                    session, receipt_settings(current_app.config), cashier_user, notice_number=number,
                    amount=int(amount_text), method=method)
        except DomainError as error:
            return current_app.make_response(fail(error.detail or str(error.title)))
        return Response(confirmation.receipt.number, status=303, mimetype="text/plain")

    try:
        # A refusal is not kept: the page offers a fresh key with its message.
        outcome, _replayed = run_once(client, form_key, print_, pay_once, keep_refusals=False)
    except (IdempotencyKeyReuse, IdempotencyKeyInUse) as error:
        return fail(error.detail or str(error.title))
    if outcome.status_code != 303:
        return outcome
    # First time or a double click / resubmitted form: show the receipt of the one payment.
    return redirect(url_for("payments.receipt", number=outcome.get_data(as_text=True)), 303)


@bp.route("/cashier/receipts/<number>")
@page_roles(Role.CASHIER)
def receipt(number: str) -> Any:
    from receipts.service import find_receipt

    with reading() as session:
        found = find_receipt(session, number)
        return render_template("payments/paid.html", receipt=found, notice=found.notice, group_digits=group_digits,
                               payment=session.get(Payment, found.payment_id), methods=METHOD_LABELS)


@bp.route("/cashier/shift", methods=["GET", "POST"])
@page_roles(Role.CASHIER)
def shift() -> Any:
    cashier_user = page_user()
    form = CsrfOnly()
    error = None
    closed = None
    if request.method == "POST":
        if not form.validate_on_submit():
            error = _("页面已过期，请刷新后重试。")
        else:
            try:
                declared = yuan_to_fen(request.form.get("declared_cash", ""))
                if declared < 0:
                    raise ValueError
            except ValueError:
                error = _("请填写清点的现金金额（元，最多两位小数）。")
            else:
                try:
                    with unit_of_work() as session:
                        closed = service.close_shift(session, receipt_settings(current_app.config), cashier_user,
                                                     declared_cash=declared, note=request.form.get("note") or None)
                        closed_totals = service.shift_totals(session, closed)
                    return render_template("payments/shift_closed.html", shift=closed, totals=closed_totals)
                except DomainError as exc:
                    error = exc.detail or str(exc.title)
    with unit_of_work() as session:
        current = service.current_shift(session, cashier_user, open_if_none=False)
        totals = service.shift_totals(session, current) if current else None
    return render_template("payments/shift.html", shift=current, totals=totals, error=error, csrf_form=form)


@bp.route("/cashier/shifts/<int(max=2147483647):shift_id>/print")
@page_roles(Role.CASHIER, Role.FINANCE)
def shift_report(shift_id: int) -> Response:
    user = page_user()
    with reading() as session:
        found = service.find_shift(session, user, shift_id)
        pdf = render_shift_report(found, service.shift_totals(session, found), current_app.config)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="shift-{shift_id}.pdf"'})
