"""confirm_payment(): the one place where money becomes a confirmed payment and a receipt.
Also voids (冲红) and refunds, which change a payment and its receipt together, and shifts."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit import Actor, append_audit
from core.clock import utcnow, zone
from core.db import Executor, HotStatement, table_of
from core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from core.models import Department, Role, User
from core.outbox import emit
from notices.models import Notice, NoticeStatus
from notices.numbers import group_digits, normalise_notice_number
from notices.service import NoticeAlreadyPaid, NoticeCancelled, NoticeExpired, find_notice, notice_not_found
from payments.models import (
    PAYMENT_TRANSITIONS,
    CashierShift,
    Channel,
    Payment,
    PaymentMethod,
    PaymentStatus,
)
from receipts.models import Receipt, ReceiptStatus
from receipts.service import IssuedReceipt, ReceiptSettings, certificate_of, find_receipt, issue_receipt


class AmountMismatch(DomainError):
    status = 422
    code = "amount-mismatch"
    title = _l("缴费金额与应缴金额不符")


class CertificateIssued(DomainError):
    status = 409
    code = "certificate-issued"
    title = _l("已凭此收据发证，不能冲红")


class ReceiptAlreadyVoided(DomainError):
    status = 409
    code = "receipt-voided"
    title = _l("该收据已冲红")


class PaymentNotFound(NotFound):
    title = _l("缴费记录不存在")


class RefundNotDue(DomainError):
    status = 409
    code = "refund-not-due"
    title = _l("该笔缴费不处于待退款状态")


class ShiftNotOpen(DomainError):
    status = 409
    code = "shift-not-open"
    title = _l("当前没有未结班次")


@dataclass(frozen=True)
class ConfirmedPayment:
    """A payment as just written by confirm_payment (no ORM object: the path is hot). Read with
    payment_view like a Payment."""

    id: int
    notice_number_given: str
    channel: str
    method: str
    amount: int
    status: str
    reference: str | None
    cashier_id: int | None
    cashier_username: str | None
    shift_id: int | None
    bank_code: str | None
    bank_reference: str | None
    paid_at: datetime
    recorded_at: datetime
    currency: str = "CNY"
    flag_reason: str | None = None
    refund_due_reason: str | None = None
    refunded_at: datetime | None = None
    refund_method: str | None = None
    refund_reference: str | None = None


# The fields of a ConfirmedPayment that are columns of the row written (all but id and the username).
_WRITTEN_FIELDS = tuple(f.name for f in fields(ConfirmedPayment) if f.name not in ("id", "cashier_username"))


@dataclass(frozen=True)
class PayableNotice:
    """What the payment path reads of the notice it locks."""

    id: int
    number: str
    status: str
    total: int
    due_date: date
    department_code: str
    open_shift_id: int | None  # of the paying cashier, if any


@dataclass(frozen=True)
class Confirmation:
    payment: ConfirmedPayment
    receipt: IssuedReceipt
    notice: PayableNotice


def check_payable(notice: Notice | PayableNotice, at: datetime, timezone: str) -> None:
    """Raise the named error of API.md for a notice that cannot take money at that moment."""
    if notice.status == NoticeStatus.PAID:
        raise NoticeAlreadyPaid(_("通知书 %(n)s 已经缴费，请勿重复收费。", n=group_digits(notice.number)))
    if notice.status == NoticeStatus.CANCELLED:
        raise NoticeCancelled(_("通知书 %(n)s 已作废，不能收费。请缴款人回受理窗口。", n=group_digits(notice.number)))
    # Judged by when the money was paid: a bank payment made on the due date stays good even if
    # its callback arrives after the expiry job has marked the notice expired.
    if at.astimezone(zone(timezone)).date() > notice.due_date:
        raise NoticeExpired(_("通知书 %(n)s 已于 %(d)s 过期，不能收费。请缴款人回受理窗口重新开具。",
                              n=group_digits(notice.number), d=notice.due_date.isoformat()))


def current_shift(session: Session, cashier: User, *, open_if_none: bool = True) -> CashierShift | None:
    shift_id = open_shift_id(session, cashier, open_if_none=open_if_none)
    return None if shift_id is None else session.get(CashierShift, shift_id)


_SHIFTS = table_of(CashierShift).c
_OPEN_SHIFT_ID = select(_SHIFTS.id).where(_SHIFTS.cashier_id == bindparam("shift_cashier"), _SHIFTS.closed_at.is_(None))
_NOTICES = table_of(Notice).c
_DEPARTMENTS = table_of(Department).c
# The notice, locked, with its department's code and the paying cashier's open shift: one statement.
# FOR UPDATE on PostgreSQL; on SQLite the write transaction already began IMMEDIATE.
_PAYABLE_NOTICE = HotStatement(
    select(_NOTICES.id, _NOTICES.number, _NOTICES.status, _NOTICES.total, _NOTICES.due_date, _DEPARTMENTS.code,
           _OPEN_SHIFT_ID.scalar_subquery())
    .join_from(table_of(Notice), table_of(Department), _NOTICES.department_id == _DEPARTMENTS.id)
    .where(_NOTICES.number == bindparam("notice_number"))
    .with_for_update(of=table_of(Notice)))
_INSERT_PAYMENT = HotStatement.insert(table_of(Payment), on_conflict_do_nothing=True)
_MARK_PAID = HotStatement(update(table_of(Notice)).where(_NOTICES.id == bindparam("paid_notice"))
                          .values(status=NoticeStatus.PAID))


def open_shift_id(session: Session, cashier: User, *, open_if_none: bool = True) -> int | None:
    """The id of the cashier's open shift, opening one if there is none (and `open_if_none`)."""
    connection = session.connection()
    shift_id = connection.execute(_OPEN_SHIFT_ID, {"shift_cashier": cashier.id}).scalar()
    if shift_id is None and open_if_none:
        # Concurrent first payments of one cashier all try to open the shift: the partial unique
        # index lets one insert win, the others insert nothing and read the winner's row.
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(insert(CashierShift).values(cashier_id=cashier.id, opened_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["cashier_id"],
                                                index_where=CashierShift.closed_at.is_(None)))
        shift_id = connection.execute(_OPEN_SHIFT_ID, {"shift_cashier": cashier.id}).scalar()
    return shift_id


def find_payable_notice(session: Executor, notice_number: str, *, cashier: User | None = None) -> PayableNotice:
    """The notice, locked until the end of the transaction. Raises InvalidNoticeNumber for a
    mistyped number and NoticeNotFound for an unknown one."""
    number = normalise_notice_number(notice_number)
    row = _PAYABLE_NOTICE.first(session, {"notice_number": number,
                                          "shift_cashier": cashier.id if cashier is not None else None})
    if row is None:
        raise notice_not_found(number)
    return PayableNotice(*row)


def confirm_payment(
    session: Session,
    settings: ReceiptSettings,
    actor: Actor,
    *,
    notice_number: str,
    amount: int,
    channel: Channel,
    method: PaymentMethod,
    paid_at: datetime | None = None,
    cashier: User | None = None,
    bank_code: str | None = None,
    bank_reference: str | None = None,
    payer_name: str | None = None,
    reference: str | None = None,
) -> Confirmation:
    """Lock the notice, check it, and write payment + receipt + audit + outbox event in the caller's
    transaction.

    Every refusal (not found, already paid, cancelled, expired, amount) is raised before anything is
    written, so the caller's transaction stays usable (the bank callback goes on to record a flagged
    payment). The partial unique index (one confirmed payment per notice) and the unique bank
    reference back the notice lock up: the payment is inserted ON CONFLICT DO NOTHING, and a
    conflict is the NoticeAlreadyPaid refusal, again with nothing written (the notice stays locked
    until the caller's transaction ends).

    The serialisation points — the receipt counter row and the audit chain head row, both locked
    until commit — are taken last: after them come only the INSERTs of receipt, audit entry and
    outbox event and the head's MAC, the same shape as bench/pgbench_confirm.sql. Every statement
    is a core.db.HotStatement and no ORM object is made: this runs for every payment, and the ORM
    cost more CPU than everything else in it. Callers build their responses after the commit."""
    connection = session.connection()  # once: every statement below runs on it
    notice = find_payable_notice(connection, notice_number, cashier=cashier if channel == Channel.CASHIER else None)
    now = utcnow()
    paid_at = paid_at or now
    check_payable(notice, paid_at, settings.timezone)
    if amount != notice.total:
        raise AmountMismatch(_("应缴 %(expected)s 元，实收 %(got)s 元：必须按通知书金额全额收取。",
                               expected=f"{notice.total / 100:.2f}", got=f"{amount / 100:.2f}"),
                             expected_amount=notice.total, actual_amount=amount)
    shift_id = notice.open_shift_id
    if channel == Channel.CASHIER and cashier is not None and shift_id is None:
        shift_id = open_shift_id(session, cashier)
    row: dict[str, Any] = {
        "notice_id": notice.id, "notice_number_given": notice.number, "channel": channel, "method": method,
        "amount": amount, "currency": "CNY", "status": PaymentStatus.CONFIRMED, "flag_reason": None,
        "reference": reference, "cashier_id": cashier.id if cashier else None, "shift_id": shift_id,
        "bank_code": bank_code, "bank_reference": bank_reference, "payer_name": payer_name, "paid_at": paid_at,
        "recorded_at": now, "refund_due_at": None, "refund_due_reason": None, "refunded_at": None,
        "refunded_by_id": None, "refund_method": None, "refund_reference": None,
    }
    # ON CONFLICT DO NOTHING: the partial unique index (one confirmed payment per notice) or the
    # bank reference's says someone else was faster; nothing is written and no error aborts the
    # transaction, so a caller may carry on after the refusal without a savepoint.
    payment_id = _INSERT_PAYMENT.scalar(connection, row)
    if payment_id is None:
        raise NoticeAlreadyPaid(_("通知书 %(n)s 已经缴费，请勿重复收费。", n=notice.number))
    _MARK_PAID.rows(connection, {"paid_notice": notice.id})
    # The receipt counter and the audit head are serialisation points: take them last, so that
    # their row locks are held for as short a time as possible.
    receipt = issue_receipt(connection, settings, notice_id=notice.id, notice_number=notice.number,
                            payment_id=payment_id, amount=amount,
                            issued_by=cashier.display_name if cashier else (bank_code or actor.name), issued_at=now)
    append_audit(connection, settings.audit_key, actor, "payment.confirmed", "payment", payment_id,
                 before={"notice_status": notice.status},
                 after={"notice": notice.number, "amount": amount, "channel": channel, "method": method,
                        "receipt": receipt.number, "bank_reference": bank_reference})
    emit(connection, "notice.paid", {
        "notice_number": notice.number, "department": notice.department_code, "amount": amount, "currency": "CNY",
        "channel": channel, "receipt_number": receipt.number, "paid_at": paid_at.isoformat()})
    payment = ConfirmedPayment(id=int(payment_id), cashier_username=cashier.username if cashier else None,
                               **{name: row[name] for name in _WRITTEN_FIELDS})
    return Confirmation(payment=payment, receipt=receipt, notice=notice)


def confirm_cashier_payment(session: Session, settings: ReceiptSettings, cashier: User, *, notice_number: str,
                            amount: int, method: str, reference: str | None = None) -> Confirmation:
    if cashier.role != Role.CASHIER:
        raise Forbidden(_("只有收费员可以收费。"))
    return confirm_payment(session, settings, Actor("user", cashier.username, cashier.id),
                           notice_number=notice_number, amount=amount, channel=Channel.CASHIER,
                           method=PaymentMethod(method), cashier=cashier, reference=reference)


def _move(payment: Payment, to: PaymentStatus) -> None:
    if to not in PAYMENT_TRANSITIONS[payment.status]:
        raise RefundNotDue(_("缴费记录 %(id)d 的状态为 %(s)s，不能改为 %(t)s。", id=payment.id, s=payment.status, t=to))
    payment.status = to


def void_receipt(session: Session, settings: ReceiptSettings, clerk: User, receipt_number: str,
                 reason: str) -> Receipt:
    """冲红: the receipt keeps its number and reads voided; the payment is refund_due; the notice
    is payable again. Refused once a certificate was issued on it."""
    if clerk.role != Role.FINANCE:
        raise Forbidden(_("只有财务人员可以冲红收据。"))
    if not reason:
        raise ValidationFailed({"reason": [_("请填写冲红原因。")]})
    receipt = find_receipt(session, receipt_number)
    notice = find_notice(session, receipt.notice.number, for_update=True)
    session.refresh(receipt)
    if receipt.status == ReceiptStatus.VOIDED:
        raise ReceiptAlreadyVoided(_("收据 %(n)s 已于此前冲红。", n=receipt.number))
    if certificate_of(session, notice.id) is not None:
        raise CertificateIssued(_("已凭收据 %(n)s 发证，不能冲红；请先按规定收回证照。", n=receipt.number))
    payment = session.get(Payment, receipt.payment_id)
    assert payment is not None
    now = utcnow()
    receipt.status = ReceiptStatus.VOIDED
    receipt.voided_at = now
    receipt.voided_by_id = clerk.id
    receipt.void_reason = reason
    _move(payment, PaymentStatus.REFUND_DUE)
    payment.refund_due_at = now
    payment.refund_due_reason = reason
    notice.status = NoticeStatus.ISSUED
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id), "receipt.voided",
                 "receipt", receipt.number,
                 before={"receipt": ReceiptStatus.VALID, "payment": PaymentStatus.CONFIRMED,
                         "notice": NoticeStatus.PAID},
                 after={"receipt": ReceiptStatus.VOIDED, "payment": PaymentStatus.REFUND_DUE,
                        "notice": NoticeStatus.ISSUED, "reason": reason})
    emit(session, "receipt.voided", {"receipt_number": receipt.number, "notice_number": notice.number,
                                     "department": notice.department.code, "amount": receipt.amount,
                                     "reason": reason})
    return receipt


def mark_refund_due(session: Session, settings: ReceiptSettings, clerk: User, payment_id: int,
                    reason: str) -> Payment:
    """A flagged bank payment that cannot be applied: the money goes back to the payer."""
    payment = _payment_for_finance(session, clerk, payment_id)
    if payment.status != PaymentStatus.FLAGGED:
        # A confirmed payment has a valid receipt: refunding it means voiding that receipt (冲红).
        raise RefundNotDue(_("只有待处理（flagged）的银行缴费可以直接标记为待退款；已确认的缴费请先冲红其收据。"))
    before = payment.status
    _move(payment, PaymentStatus.REFUND_DUE)
    payment.refund_due_at = utcnow()
    payment.refund_due_reason = reason
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id), "payment.refund_due",
                 "payment", payment.id, before={"status": before},
                 after={"status": payment.status, "reason": reason})
    return payment


def record_refund(session: Session, settings: ReceiptSettings, clerk: User, payment_id: int, *, method: str,
                  reference: str | None) -> Payment:
    payment = _payment_for_finance(session, clerk, payment_id)
    _move(payment, PaymentStatus.REFUNDED)
    payment.refunded_at = utcnow()
    payment.refunded_by_id = clerk.id
    payment.refund_method = PaymentMethod(method)
    payment.refund_reference = reference
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id), "payment.refunded",
                 "payment", payment.id, before={"status": PaymentStatus.REFUND_DUE},
                 after={"status": payment.status, "method": method, "reference": reference})
    return payment


def _payment_for_finance(session: Session, clerk: User, payment_id: int) -> Payment:
    if clerk.role != Role.FINANCE:
        raise Forbidden(_("只有财务人员可以办理退款。"))
    payment = session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update(of=Payment))
    if payment is None:
        raise PaymentNotFound(_("没有编号为 %(id)d 的缴费记录。", id=payment_id))
    return payment


@dataclass(frozen=True)
class ShiftTotals:
    cash: int
    card: int
    transfer: int
    other: int
    count: int


def shift_totals(session: Session, shift: CashierShift) -> ShiftTotals:
    """Money the cashier took during the shift, by method (voided later or not: it was taken)."""
    rows = session.execute(
        select(Payment.method, func.coalesce(func.sum(Payment.amount), 0), func.count())
        .where(Payment.shift_id == shift.id, Payment.channel == Channel.CASHIER)
        .group_by(Payment.method)
    ).all()
    by_method = {method: (int(total), int(count)) for method, total, count in rows}
    return ShiftTotals(
        cash=by_method.get(PaymentMethod.CASH, (0, 0))[0], card=by_method.get(PaymentMethod.CARD, (0, 0))[0],
        transfer=by_method.get(PaymentMethod.TRANSFER, (0, 0))[0],
        other=by_method.get(PaymentMethod.OTHER, (0, 0))[0], count=sum(c for _t, c in by_method.values()),
    )


def close_shift(session: Session, settings: ReceiptSettings, cashier: User, *, declared_cash: int,
                note: str | None = None) -> CashierShift:
    if cashier.role != Role.CASHIER:
        raise Forbidden(_("只有收费员可以日结。"))
    shift = session.scalar(select(CashierShift).where(CashierShift.cashier_id == cashier.id,
                                                      CashierShift.closed_at.is_(None)).with_for_update(of=CashierShift))
    if shift is None:
        raise ShiftNotOpen(_("当前没有未结的班次：本班次还没有收过费，或已日结。"))
    totals = shift_totals(session, shift)
    shift.closed_at = utcnow()
    shift.declared_cash = declared_cash
    shift.recorded_cash = totals.cash
    shift.recorded_card = totals.card
    shift.recorded_transfer = totals.transfer
    shift.recorded_other = totals.other
    shift.note = note
    append_audit(session, settings.audit_key, Actor("user", cashier.username, cashier.id), "shift.closed",
                 "cashier_shift", shift.id,
                 after={"declared_cash": declared_cash, "recorded_cash": totals.cash, "card": totals.card,
                        "transfer": totals.transfer, "other": totals.other, "difference": shift.cash_difference})
    return shift


def payment_of(session: Session, notice_id: int) -> Payment | None:
    """The notice's confirmed payment, else its latest one."""
    return session.scalar(select(Payment).where(Payment.notice_id == notice_id)
                          .order_by((Payment.status == PaymentStatus.CONFIRMED).desc(), Payment.id.desc()))


def find_shift(session: Session, user: User, shift_id: int) -> CashierShift:
    shift = session.get(CashierShift, shift_id)
    if shift is None:
        raise NotFound(_("没有该班次。"))
    if user.role == Role.CASHIER and shift.cashier_id != user.id:
        raise Forbidden(_("只能查看自己的班次。"))
    return shift
