from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint

from core.api_idempotency import idempotent
from core.auth import BEARER, api_roles, api_user
from core.db import reading, unit_of_work
from core.errors import NotFound
from core.models import Role
from core.web import public_base_url
from payments import service
from payments.models import Payment
from payments.pdf import render_shift_report
from payments.schemas import (
    ConfirmationOut,
    PaymentIn,
    PaymentOut,
    RefundDueIn,
    RefundIn,
    ShiftCloseIn,
    ShiftOut,
    payment_view,
    shift_view,
)
from receipts.schemas import receipt_view
from receipts.service import receipt_settings, verification_url

blp = Blueprint("payments_api", __name__, url_prefix="/api/v1", description="收费、退款与日结")




@blp.route("/notices/<number>/payments", methods=["POST"])
@api_roles(Role.CASHIER)
@idempotent
@blp.arguments(PaymentIn())  # one instance: webargs would build the schema again per request
@blp.response(201, ConfirmationOut)
@blp.doc(security=BEARER)
def record_payment(data: dict[str, Any], number: str) -> dict[str, Any]:
    """Record a payment at the cashier window; the payment and its receipt are one transaction."""
    cashier = api_user(Role.CASHIER)
    with unit_of_work() as session:
        confirmation = service.confirm_cashier_payment(
            session, receipt_settings(current_app.config), cashier, notice_number=number, **data)
    # Built after the commit (the objects keep their values: expire_on_commit=False), so that the
    # receipt counter and audit head rows are not held while the response is put together.
    receipt = confirmation.receipt
    return {"payment": payment_view(confirmation.payment, cashier_username=cashier.username),
            "receipt": receipt_view(receipt, verification_url(public_base_url(), receipt))}


@blp.route("/payments/<int(max=2147483647):payment_id>", methods=["GET"])
@api_roles(Role.CASHIER, Role.FINANCE, Role.ADMIN)
@blp.response(200, PaymentOut)
@blp.doc(security=BEARER)
def get_payment(payment_id: int) -> dict[str, Any]:
    """One payment (cashier, finance, admin)."""
    with reading() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFound("没有该缴费记录。")
        return payment_view(payment)


@blp.route("/payments/<int(max=2147483647):payment_id>/refund-due", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent
@blp.arguments(RefundDueIn)
@blp.response(200, PaymentOut)
@blp.doc(security=BEARER)
def mark_refund_due(data: dict[str, Any], payment_id: int) -> dict[str, Any]:
    """Finance: a flagged payment is to be refunded."""
    clerk = api_user(Role.FINANCE)
    with unit_of_work() as session:
        payment = service.mark_refund_due(session, receipt_settings(current_app.config), clerk, payment_id,
                                          data["reason"])
        return payment_view(payment)


@blp.route("/payments/<int(max=2147483647):payment_id>/refund", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent
@blp.arguments(RefundIn)
@blp.response(200, PaymentOut)
@blp.doc(security=BEARER)
def record_refund(data: dict[str, Any], payment_id: int) -> dict[str, Any]:
    """Finance records that a refund_due payment was paid back."""
    clerk = api_user(Role.FINANCE)
    with unit_of_work() as session:
        payment = service.record_refund(session, receipt_settings(current_app.config), clerk, payment_id,
                                        method=data["method"], reference=data.get("reference"))
        return payment_view(payment)


@blp.route("/shifts/current", methods=["GET"])
@api_roles(Role.CASHIER)
@blp.response(200, ShiftOut)
@blp.doc(security=BEARER)
def current_shift() -> dict[str, Any]:
    """The cashier's open shift with the totals recorded so far (opened by the first payment)."""
    cashier = api_user(Role.CASHIER)
    with unit_of_work() as session:
        shift = service.current_shift(session, cashier)
        assert shift is not None
        return shift_view(shift, service.shift_totals(session, shift))


@blp.route("/shifts/current/close", methods=["POST"])
@api_roles(Role.CASHIER)
@idempotent
@blp.arguments(ShiftCloseIn)
@blp.response(200, ShiftOut)
@blp.doc(security=BEARER)
def close_shift(data: dict[str, Any]) -> dict[str, Any]:
    """日结: declare the counted cash; the difference is kept for reconciliation."""
    cashier = api_user(Role.CASHIER)
    with unit_of_work() as session:
        shift = service.close_shift(session, receipt_settings(current_app.config), cashier,
                                    declared_cash=data["declared_cash"], note=data.get("note"))
        return shift_view(shift, service.shift_totals(session, shift))


@blp.route("/shifts/<int(max=2147483647):shift_id>/pdf", methods=["GET"])
@api_roles(Role.CASHIER, Role.FINANCE)
@blp.response(200, content_type="application/pdf")
@blp.doc(security=BEARER)
def shift_pdf(shift_id: int) -> Response:
    """The shift report (a cashier: own shifts only)."""
    user = api_user(Role.CASHIER, Role.FINANCE)
    with reading() as session:
        shift = service.find_shift(session, user, shift_id)
        pdf = render_shift_report(shift, service.shift_totals(session, shift), current_app.config)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="shift-{shift_id}.pdf"'})
