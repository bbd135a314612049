from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from core.schemas import Moment, money, text
from notices.models import Notice
from notices.schemas import NoticeOut, notice_view
from payments.models import CashierShift, Payment, PaymentMethod, PaymentStatus
from payments.service import ConfirmedPayment, ShiftTotals, payment_of
from receipts.schemas import CertificateOut, ReceiptOut, certificate_view, receipt_view
from receipts.service import certificate_of, latest_receipt_of, verification_url

METHODS = [m.value for m in PaymentMethod]


class PaymentIn(Schema):
    amount = money(required=True, metadata={"description": "实收金额（分），须等于通知书合计"})
    method = fields.String(required=True, validate=validate.OneOf(METHODS, error="须为以下之一：{choices}。"))
    reference = text(64, allow_none=True, metadata={"description": "刷卡凭证号、转账流水号等"})


class RefundIn(Schema):
    method = fields.String(required=True, validate=validate.OneOf(METHODS, error="须为以下之一：{choices}。"))
    reference = text(64, allow_none=True)


class RefundDueIn(Schema):
    reason = text(500, required=True)


class PaymentOut(Schema):
    id = fields.Integer(required=True)
    notice_number = fields.String(allow_none=True)
    channel = fields.String(required=True)
    method = fields.String(required=True)
    amount = fields.Integer(required=True)
    currency = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in PaymentStatus]))
    flag_reason = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    cashier = fields.String(allow_none=True)
    bank_code = fields.String(allow_none=True)
    bank_reference = fields.String(allow_none=True)
    paid_at = Moment(required=True)
    recorded_at = Moment(required=True)
    refund_due_reason = fields.String(allow_none=True)
    refunded_at = Moment(allow_none=True)
    refund_method = fields.String(allow_none=True)
    refund_reference = fields.String(allow_none=True)


def payment_view(payment: Payment | ConfirmedPayment, cashier_username: str | None = None) -> dict[str, Any]:
    """`cashier_username`: the cashier who recorded it, when the caller knows it already (the API
    view holds the token's user), so that the cashier relationship is not loaded."""
    if payment.cashier_id is None:
        cashier = None
    elif cashier_username is not None:
        cashier = cashier_username
    elif isinstance(payment, ConfirmedPayment):
        cashier = payment.cashier_username
    else:
        cashier = payment.cashier.username if payment.cashier else None
    return {
        "id": payment.id, "notice_number": payment.notice_number_given, "channel": payment.channel,
        "method": payment.method, "amount": payment.amount, "currency": payment.currency,
        "status": payment.status, "flag_reason": payment.flag_reason, "reference": payment.reference,
        "cashier": cashier, "bank_code": payment.bank_code,
        "bank_reference": payment.bank_reference, "paid_at": payment.paid_at, "recorded_at": payment.recorded_at,
        "refund_due_reason": payment.refund_due_reason, "refunded_at": payment.refunded_at,
        "refund_method": payment.refund_method, "refund_reference": payment.refund_reference,
    }


class ShiftCloseIn(Schema):
    declared_cash = money(required=True, metadata={"description": "清点的现金（分）"})
    note = text(500, allow_none=True)


class ShiftOut(Schema):
    id = fields.Integer(required=True)
    cashier = fields.String(required=True)
    opened_at = Moment(required=True)
    closed_at = Moment(allow_none=True)
    recorded_cash = fields.Integer(required=True)
    recorded_card = fields.Integer(required=True)
    recorded_transfer = fields.Integer(required=True)
    recorded_other = fields.Integer(required=True)
    payments = fields.Integer(required=True)
    declared_cash = fields.Integer(allow_none=True)
    cash_difference = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)
    currency = fields.Constant("CNY")


def shift_view(shift: CashierShift, totals: ShiftTotals) -> dict[str, Any]:
    return {
        "id": shift.id, "cashier": shift.cashier.username, "opened_at": shift.opened_at,
        "closed_at": shift.closed_at, "recorded_cash": totals.cash, "recorded_card": totals.card,
        "recorded_transfer": totals.transfer, "recorded_other": totals.other, "payments": totals.count,
        "declared_cash": shift.declared_cash,
        "cash_difference": None if shift.declared_cash is None else shift.declared_cash - totals.cash,
        "note": shift.note,
    }


class ConfirmationOut(Schema):
    payment = fields.Nested(PaymentOut, required=True)
    receipt = fields.Nested(ReceiptOut, required=True)


class NoticeWithPaymentOut(NoticeOut):
    """The notice of API.md with what happened to it: its payment, receipt and certificate."""

    payment = fields.Nested(PaymentOut, allow_none=True)
    receipt = fields.Nested(ReceiptOut, allow_none=True)
    certificate = fields.Nested(CertificateOut, allow_none=True)


def notice_with_payment_view(session: Session, notice: Notice, today: date, base_url: str) -> dict[str, Any]:
    view = notice_view(notice, today)
    payment = payment_of(session, notice.id)
    receipt = latest_receipt_of(session, notice.id)
    certificate = certificate_of(session, notice.id)
    view["payment"] = payment_view(payment) if payment else None
    view["receipt"] = receipt_view(receipt, verification_url(base_url, receipt)) if receipt else None
    view["certificate"] = certificate_view(certificate) if certificate else None
    return view
