"""Receipt pages: staff view (void for finance), printing, public verification, the certificate."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm

from core.auth import page_roles, page_user, public
from core.db import reading, unit_of_work
from core.errors import DomainError
from core.models import Role
from core.web import public_base_url
from notices.numbers import group_digits
from payments.models import Payment, PaymentMethod
from payments.service import record_refund, void_receipt
from receipts import service
from receipts.pdf import render_receipt_pdf

bp = Blueprint("receipts", __name__, template_folder="templates")
STAFF = (Role.WINDOW, Role.CASHIER, Role.FINANCE, Role.ADMIN)


class CsrfOnly(FlaskForm):
    pass


@bp.route("/receipts/<number>")
@page_roles(*STAFF)
def show(number: str) -> Any:
    user = page_user()
    with reading() as session:
        receipt = service.find_receipt(session, number)
        service.check_can_view(user, receipt.notice)
        payment = session.get(Payment, receipt.payment_id)
        return render_template("receipts/show.html", receipt=receipt, payment=payment, notice=receipt.notice,
                               group_digits=group_digits, csrf_form=CsrfOnly(), methods=list(PaymentMethod),
                               url=service.verification_url(public_base_url(), receipt))


@bp.route("/receipts/<number>/print")
@page_roles(Role.CASHIER, Role.FINANCE, Role.ADMIN)
def print_pdf(number: str) -> Response:
    user = page_user()
    with unit_of_work() as session:
        receipt = service.find_receipt(session, number)
        is_copy = service.record_print(session, receipt, user)
        pdf = render_receipt_pdf(session, receipt, current_app.config, public_base_url(), is_copy=is_copy)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="receipt-{receipt.number}.pdf"'})


@bp.route("/receipts/<number>/void", methods=["POST"])
@page_roles(Role.FINANCE)
def void(number: str) -> Any:
    reason = request.form.get("reason", "").strip()
    if not CsrfOnly().validate_on_submit() or not reason or len(reason) > 500:
        flash(_("请填写冲红原因（不超过 500 字）。"), "error")
        return redirect(url_for("receipts.show", number=number))
    try:
        with unit_of_work() as session:
            void_receipt(session, service.receipt_settings(current_app.config), page_user(), number, reason)
        flash(_("收据已冲红；该笔缴费待退款，通知书恢复为待缴费。"), "ok")
    except DomainError as error:
        flash(error.detail or str(error.title), "error")
    return redirect(url_for("receipts.show", number=number))


@bp.route("/payments/<int(max=2147483647):payment_id>/refund", methods=["POST"])
@page_roles(Role.FINANCE)
def refund(payment_id: int) -> Any:
    back = request.form.get("back") or url_for("core.home")
    method = request.form.get("method", "")
    reference = request.form.get("reference", "").strip() or None
    if not CsrfOnly().validate_on_submit() or method not in {m.value for m in PaymentMethod} or (
            reference and len(reference) > 64):
        flash(_("请选择退款方式；退款凭证号不超过 64 个字符。"), "error")
        return redirect(back if back.startswith("/") else url_for("core.home"))
    try:
        with unit_of_work() as session:
            record_refund(session, service.receipt_settings(current_app.config), page_user(), payment_id,
                          method=method, reference=reference)
        flash(_("已登记退款。"), "ok")
    except DomainError as error:
        flash(error.detail or str(error.title), "error")
    return redirect(back if back.startswith("/") else url_for("core.home"))


@bp.route("/verify/<number>")
@public
def verify(number: str) -> Any:
    code = request.args.get("code", "")
    with reading() as session:
        result = service.verify_public(session, number, code) if code else {"valid": False}
    return render_template("receipts/verify.html", number=number, code=code, result=result)


@bp.route("/notices/<number>/certificate", methods=["POST"])
@page_roles(Role.WINDOW)
def certificate(number: str) -> Any:
    if not CsrfOnly().validate_on_submit():
        flash(_("页面已过期，请刷新后重试。"), "error")
        return redirect(url_for("notices.show", number=number))
    try:
        with unit_of_work() as session:
            issued = service.issue_certificate(session, service.receipt_settings(current_app.config), page_user(),
                                               number, request.form.get("certificate_number") or None)
            flash(_("已发证：%(n)s", n=issued.number), "ok")
    except DomainError as error:
        flash(error.detail or str(error.title), "error")
    return redirect(url_for("notices.show", number=number))
