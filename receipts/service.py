"""Gap-free receipt numbers, verification codes, public verification, printing, certificates."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit import Actor, append_audit
from core.clock import utcnow, zone
from core.db import Executor, HotStatement, connection_of, table_of
from core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from core.models import Role, User
from core.outbox import emit
from notices.models import NoticeStatus
from notices.service import check_can_view, find_notice
from receipts.models import Certificate, Receipt, ReceiptCounter, ReceiptPrint, ReceiptStatus

VERIFICATION_CODE_LENGTH = 10


class ReceiptNotFound(NotFound):
    title = _l("收据不存在")


class InvalidReceiptNumber(DomainError):
    status = 422
    code = "invalid-receipt-number"
    title = _l("收据编号格式有误")


class PaymentRequired(DomainError):
    status = 409
    code = "payment-required"
    title = _l("尚未缴费，不能发证")


class CertificateAlreadyIssued(DomainError):
    status = 409
    code = "certificate-already-issued"
    title = _l("该事项已发证")


@dataclass(frozen=True)
class ReceiptSettings:
    timezone: str
    audit_key: str
    receipt_key: str


def receipt_settings(config: Mapping[str, Any]) -> ReceiptSettings:
    return ReceiptSettings(timezone=str(config["FEESVC_TIMEZONE"]), audit_key=str(config["FEESVC_AUDIT_KEY"]),
                           receipt_key=str(config["FEESVC_RECEIPT_KEY"]))


def verification_code(key: str, number: str) -> str:
    """10 characters of base32 (letters and digits, URL-safe) of an HMAC of the number: 50 bits
    that nobody without the key can compute."""
    digest = hmac.new(key.encode(), number.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode()[:VERIFICATION_CODE_LENGTH]


@dataclass(frozen=True)
class IssuedReceipt:
    """A receipt as just written by the payment path (no ORM object: the path is hot)."""

    id: int
    number: str
    notice_number: str
    payment_id: int
    amount: int
    verification_code: str
    issued_at: datetime
    issued_by: str
    status: str = ReceiptStatus.VALID
    voided_at: datetime | None = None
    void_reason: str | None = None


_COUNTERS = table_of(ReceiptCounter).c
_BUMP_COUNTER = HotStatement(update(table_of(ReceiptCounter)).where(_COUNTERS.year == bindparam("counter_year"))
                             .values(last_number=_COUNTERS.last_number + 1).returning(_COUNTERS.last_number))
_INSERT_RECEIPT = HotStatement.insert(table_of(Receipt))


def next_receipt_sequence(session: Executor, year: int) -> int:
    """Take the next number inside the caller's transaction; the counter row stays locked until
    commit, so a rollback gives the number back and concurrent payments queue here.

    A Core statement on the session's connection (not the ORM's bulk-update path, which would
    evaluate the statement against the session's objects); the year's row is inserted only when the
    UPDATE found none, i.e. once a year."""
    number = _BUMP_COUNTER.scalar(session, {"counter_year": year})
    if number is None:
        connection = connection_of(session)
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        # Concurrent first receipts of the year: one inserts, the others wait for it and insert nothing.
        connection.execute(insert(ReceiptCounter).values(year=year, last_number=0).on_conflict_do_nothing())
        number = _BUMP_COUNTER.scalar(session, {"counter_year": year})
    return int(number)


def issue_receipt(session: Executor, settings: ReceiptSettings, *, notice_id: int, notice_number: str,
                  payment_id: int, amount: int, issued_by: str, issued_at: datetime) -> IssuedReceipt:
    """Take the number and write the receipt at once (in the caller's transaction)."""
    year = issued_at.astimezone(zone(settings.timezone)).year
    sequence = next_receipt_sequence(session, year)
    number = f"{year}-{sequence:08d}"
    code = verification_code(settings.receipt_key, number)
    receipt_id = _INSERT_RECEIPT.scalar(session, {
        "number": number, "year": year, "sequence": sequence, "notice_id": notice_id, "payment_id": payment_id,
        "amount": amount, "verification_code": code, "issued_at": issued_at, "issued_by": issued_by,
        "status": ReceiptStatus.VALID, "voided_at": None, "voided_by_id": None, "void_reason": None})
    return IssuedReceipt(id=int(receipt_id), number=number, notice_number=notice_number, payment_id=payment_id,
                         amount=amount, verification_code=code, issued_at=issued_at, issued_by=issued_by)


def normalise_receipt_number(text: str) -> str:
    compact = text.strip()
    year, dash, sequence = compact.partition("-")
    if not (dash and len(year) == 4 and year.isdigit() and len(sequence) == 8 and sequence.isdigit()
            and compact.isascii()):
        raise InvalidReceiptNumber(_("收据编号应形如 2026-00000001。"))
    return compact


def find_receipt(session: Session, number: str) -> Receipt:
    receipt = session.scalar(select(Receipt).where(Receipt.number == normalise_receipt_number(number)))
    if receipt is None:
        raise ReceiptNotFound(_("没有编号为 %(n)s 的收据。", n=number))
    return receipt


def valid_receipt_of(session: Session, notice_id: int) -> Receipt | None:
    return session.scalar(select(Receipt).where(Receipt.notice_id == notice_id,
                                                Receipt.status == ReceiptStatus.VALID))


def latest_receipt_of(session: Session, notice_id: int) -> Receipt | None:
    return session.scalar(select(Receipt).where(Receipt.notice_id == notice_id).order_by(Receipt.id.desc()))


def mask_name(name: str | None) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***: enough to recognise, too little to identify."""
    if not name:
        return ""
    return name[0] + "*" * max(1, len(name) - 1)


def verify_public(session: Session, number: str, code: str) -> dict[str, Any]:
    """What the public may know of a receipt: only with the right code, and the payer masked."""
    try:
        receipt = find_receipt(session, number)
    except (ReceiptNotFound, InvalidReceiptNumber):
        return {"valid": False}
    if not hmac.compare_digest(receipt.verification_code.encode(), code.strip().upper().encode()):
        return {"valid": False}
    return {
        "valid": receipt.status == ReceiptStatus.VALID,
        "status": receipt.status,
        "number": receipt.number,
        "amount": receipt.amount,
        "currency": "CNY",
        "paid_at": receipt.issued_at,
        "department": receipt.notice.department.name,
        "payer_name": mask_name(receipt.notice.payer_name),
    }


def record_print(session: Session, receipt: Receipt, user: User | None) -> bool:
    """Log a printing; returns True when it is a copy (补打) because it was printed before."""
    is_copy = bool(session.scalar(select(ReceiptPrint.id).where(ReceiptPrint.receipt_id == receipt.id).limit(1)))
    session.add(ReceiptPrint(receipt_id=receipt.id, printed_by_id=user.id if user else None, is_copy=is_copy))
    return is_copy


def certificate_of(session: Session, notice_id: int) -> Certificate | None:
    return session.scalar(select(Certificate).where(Certificate.notice_id == notice_id))


def issue_certificate(session: Session, settings: ReceiptSettings, clerk: User, notice_number: str,
                      certificate_number: str | None = None) -> Certificate:
    """The gate: a certificate needs a valid receipt for the notice's full total, once."""
    notice = find_notice(session, notice_number, for_update=True)
    check_can_view(clerk, notice)
    if clerk.role != Role.WINDOW:
        raise Forbidden(_("只有开具部门的受理窗口可以发证。"))
    if certificate_of(session, notice.id) is not None:
        raise CertificateAlreadyIssued(_("通知书 %(n)s 对应的证照已经发放，不能重复发证。", n=notice.number))
    receipt = valid_receipt_of(session, notice.id)
    if notice.status != NoticeStatus.PAID or receipt is None or receipt.amount != notice.total:
        raise PaymentRequired(_("通知书 %(n)s 还没有全额缴费的有效收据，不能发证。", n=notice.number))
    number = (certificate_number or "").strip() or f"CERT-{notice.number}"
    if len(number) > 64:
        raise ValidationFailed({"certificate_number": [_("证照编号不超过 64 个字符。")]})
    if session.scalar(select(Certificate.id).where(Certificate.number == number)) is not None:
        raise ValidationFailed({"certificate_number": [_("证照编号 %(n)s 已被使用。", n=number)]})
    certificate = Certificate(notice_id=notice.id, receipt_id=receipt.id, number=number, issued_by_id=clerk.id,
                              issued_at=utcnow())
    session.add(certificate)
    session.flush()
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id), "certificate.issued",
                 "certificate", number, after={"notice": notice.number, "receipt": receipt.number})
    emit(session, "certificate.issued", {"certificate_number": number, "notice_number": notice.number,
                                         "department": notice.department.code, "receipt_number": receipt.number})
    return certificate


def verification_url(base_url: str, receipt: Receipt | IssuedReceipt) -> str:
    return f"{base_url}/verify/{receipt.number}?code={receipt.verification_code}"
