"""Bank clients and their signed callbacks (Standard Webhooks v1): verify, dedupe, apply.

The bank holds the payer's money whatever we answer, so a verified callback we cannot apply is
recorded as a flagged payment for finance — never lost, never receipted."""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from core.audit import Actor, append_audit
from core.clock import utcnow
from core.db import Executor, HotStatement, table_of
from core.errors import DomainError, NotFound, ValidationFailed, flatten_messages
from notices.numbers import InvalidNoticeNumber, normalise_notice_number
from notices.service import (
    NoticeAlreadyPaid,
    NoticeCancelled,
    NoticeExpired,
    NoticeNotFound,
    find_notice,
)
from payments.models import BANK_REFERENCE_CONFLICT, Channel, Payment, PaymentMethod, PaymentStatus
from payments.service import AmountMismatch, confirm_payment
from receipts.service import ReceiptSettings, mask_name
from webhooks.models import BankClient, BankEvent, BankSecret, SecurityEvent
from webhooks.schemas import CallbackIn

log = logging.getLogger("feeservice.webhooks")
SECRET_PREFIX = "whsec_"
DEFAULT_GRACE = timedelta(hours=24)
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_WEBHOOK_ID = 255  # bank_events.webhook_id
BANK_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class BankUnauthorized(DomainError):
    status = 401
    code = "unauthorized"
    title = _l("签名无效或银行未登记")


class MalformedCallback(DomainError):
    status = 400
    code = "malformed-callback"
    title = _l("回调内容不符合约定格式")


class CallbackNotJson(MalformedCallback):
    """A body that is not JSON at all: API.md's general `malformed-json`."""

    code = "malformed-json"
    title = _l("请求体不是有效的 JSON")


class WebhookIdReused(DomainError):
    status = 409
    code = "webhook-id-reused"
    title = _l("同一事件编号的回调内容不同")


class BankExists(DomainError):
    status = 409
    code = "bank-exists"
    title = _l("银行已登记")


FLAG_REASONS: dict[type[DomainError], str] = {
    NoticeAlreadyPaid: "notice-already-paid",
    NoticeNotFound: "unknown-notice",
    InvalidNoticeNumber: "unknown-notice",
    AmountMismatch: "amount-mismatch",
    NoticeCancelled: "notice-cancelled",
    NoticeExpired: "notice-expired",
}


def new_secret() -> str:
    import base64

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def create_bank(session: Session, audit_key: str, actor: Actor, code: str, name: str) -> str:
    code = code.strip()
    if not BANK_CODE.fullmatch(code):
        raise ValidationFailed({"code": [_("银行代码为 1–32 个字母、数字、- 或 _。")]})
    if not name.strip() or len(name) > 200:
        raise ValidationFailed({"name": [_("请填写银行名称（不超过 200 字）。")]})
    if session.scalar(select(BankClient.id).where(BankClient.code == code)) is not None:
        raise BankExists(_("银行 %(c)s 已登记；如需新密钥请用 banks rotate。", c=code))
    secret = new_secret()
    bank = BankClient(code=code, name=name.strip(), secrets=[BankSecret(secret=secret)])
    session.add(bank)
    session.flush()
    append_audit(session, audit_key, actor, "bank.created", "bank", code, after={"name": name})
    return secret


def _bank(session: Session, code: str) -> BankClient:
    bank = session.scalar(select(BankClient).where(BankClient.code == code))
    if bank is None:
        raise NotFound(_("银行 %(c)s 未登记。", c=code))
    return bank


def rotate_secret(session: Session, audit_key: str, actor: Actor, code: str,
                  grace: timedelta = DEFAULT_GRACE) -> str:
    """A new secret; the current ones keep working for `grace`."""
    bank = _bank(session, code)
    now = utcnow()
    for old in bank.secrets:
        if old.expires_at is None or old.expires_at > now + grace:
            old.expires_at = now + grace
    secret = new_secret()
    bank.secrets.append(BankSecret(secret=secret, created_at=now))
    append_audit(session, audit_key, actor, "bank.secret_rotated", "bank", code,
                 after={"old_secrets_expire_at": (now + grace).isoformat()})
    return secret


def disable_bank(session: Session, audit_key: str, actor: Actor, code: str) -> None:
    bank = _bank(session, code)
    if bank.active:
        bank.active = False
        append_audit(session, audit_key, actor, "bank.disabled", "bank", code,
                     before={"active": True}, after={"active": False})


_SECRETS, _BANKS = table_of(BankSecret).c, table_of(BankClient).c
# Built once (cache keys computed once); Core, so no ORM execution around them.
_LIVE_SECRETS = HotStatement(select(_SECRETS.secret).join_from(table_of(BankSecret), table_of(BankClient))
                             .where(_BANKS.code == bindparam("secret_bank"), _BANKS.active.is_(True))
                             .where(_SECRETS.expires_at.is_(None) | (_SECRETS.expires_at > bindparam("secret_now"))))
_EVENTS = table_of(BankEvent).c
_CALLBACK_SCHEMA = CallbackIn()  # built once (a schema deep-copies its fields when made)
_PAYMENTS = table_of(Payment)
_PAYMENTS_UNDER_REFERENCE = select(_PAYMENTS.c.id, _PAYMENTS.c.notice_number_given, _PAYMENTS.c.amount).where(
    _PAYMENTS.c.bank_code == bindparam("ref_bank"), _PAYMENTS.c.bank_reference == bindparam("ref"))
_PAYMENT_BY_REFERENCE = _PAYMENTS_UNDER_REFERENCE.with_only_columns(_PAYMENTS.c.id).where(
    or_(_PAYMENTS.c.flag_reason.is_(None), _PAYMENTS.c.flag_reason != BANK_REFERENCE_CONFLICT))
_SETTLE_EVENT = HotStatement(update(table_of(BankEvent)).where(_EVENTS.id == bindparam("event_id")).values(
    result=bindparam("outcome"), reason=bindparam("outcome_reason"), payment_id=bindparam("outcome_payment"),
    response_status=bindparam("answer_status"), response_body=bindparam("answer_body")))
# The only unique key besides the id is (bank_code, webhook_id): a conflict is a known event.
_CLAIM_EVENT = HotStatement.insert(table_of(BankEvent), on_conflict_do_nothing=True)


def live_secrets(session: Executor, code: str, now: datetime) -> list[str]:
    """The secrets that verify callbacks of an active bank right now (none: unknown or disabled)."""
    if not BANK_CODE.fullmatch(code):  # never registered (and a NUL in it would be a 500 on PostgreSQL)
        return []
    return [row[0] for row in _LIVE_SECRETS.rows(session, {"secret_bank": code, "secret_now": now})]


def verify_signature(secrets_: list[str], raw_body: bytes, headers: dict[str, str]) -> None:
    """Raise BankUnauthorized unless one secret verifies one signature within ±300 s.

    standardwebhooks raises ValueError, binascii.Error or UnicodeDecodeError for malformed
    headers or bodies, not only WebhookVerificationError (PITFALLS.md): all of them are a 401.
    """
    for secret in secrets_:
        try:
            Webhook(secret).verify(raw_body, headers, json_parse=False)
            return
        except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError, TypeError):
            continue
    raise BankUnauthorized(_("签名校验未通过。"))


# Headers kept out of the stored event: credentials a bank (or a proxy) might add, and the signature.
_SECRET_HEADER_WORDS = ("auth", "cookie", "token", "secret", "key", "signature", "password")


def stored_headers(headers: dict[str, str]) -> dict[str, str]:
    """The request headers worth keeping for audit, without anything that could be a credential."""
    return {k: v for k, v in headers.items() if not any(word in k for word in _SECRET_HEADER_WORDS)}


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    body: dict[str, Any]


@dataclass
class _Outcome:
    """What a callback did, written to its bank_events row when it is done."""

    result: str = "pending"
    reason: str | None = None
    payment_id: int | None = None


def handle_callback(session: Session, settings: ReceiptSettings, bank_code: str, headers: dict[str, str],
                    raw_body: bytes) -> CallbackAnswer:
    """The whole callback, in the caller's transaction. Raises BankUnauthorized (401),
    MalformedCallback (400) or WebhookIdReused (409); anything else the bank gets is a 200."""
    headers = {k.lower(): v for k, v in headers.items()}
    now = utcnow()
    connection = session.connection()  # once: the hot statements below run on it
    verify_signature(live_secrets(connection, bank_code, now), raw_body, headers)
    webhook_id = headers["webhook-id"]
    if len(webhook_id) > MAX_WEBHOOK_ID or not webhook_id.isprintable():
        raise MalformedCallback(_("webhook-id 须为不超过 %(n)d 个可打印字符。", n=MAX_WEBHOOK_ID))
    body_hash = hashlib.sha256(raw_body).hexdigest()
    try:
        document = _parse_json(raw_body, lambda: _("回调请求体不是有效的 JSON。"))
        try:
            data = _CALLBACK_SCHEMA.load(document)
        except ValidationError as error:
            raise MalformedCallback(_("回调内容不符合约定格式。"),
                                    errors=flatten_messages(error.messages)) from error
    except MalformedCallback:
        # A known webhook-id is judged as a repeat whatever its body (another body: 409).
        known = _known_event(session, bank_code, webhook_id)
        if known is not None:
            return _repeat(session, known, body_hash, bank_code, webhook_id)
        raise

    # Claim the identity first, in one statement: a concurrent delivery of the same event waits
    # on the unique index until this transaction ends, then inserts nothing and answers duplicate.
    event_id = _claim_event(connection, {
        "bank_code": bank_code, "webhook_id": webhook_id, "body": raw_body.decode(), "body_sha256": body_hash,
        "headers": json.dumps(stored_headers(headers), ensure_ascii=False), "received_at": now,
        "result": "pending", "reason": None, "payment_id": None, "response_status": 200, "response_body": "{}"})
    if event_id is None:
        known = _known_event(session, bank_code, webhook_id)
        assert known is not None
        return _repeat(session, known, body_hash, bank_code, webhook_id)

    outcome = _Outcome()
    answer = _apply(session, settings, bank_code, webhook_id, data, outcome)
    _SETTLE_EVENT.rows(connection, {
        "event_id": event_id, "outcome": outcome.result, "outcome_reason": outcome.reason,
        "outcome_payment": outcome.payment_id, "answer_status": answer.status,
        "answer_body": json.dumps(answer.body, ensure_ascii=False)})
    return answer


def _claim_event(session: Executor, values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the new row's id, or None when the event is
    known (no savepoint needed: a conflict is not an error)."""
    event_id = _CLAIM_EVENT.scalar(session, values)
    return None if event_id is None else int(event_id)


def _parse_json(raw_body: bytes, message: Callable[[], str]) -> Any:
    """`message` is translated only when the body is refused (the valid callback needs no text)."""
    # RecursionError: a validly signed `[[[[…]]]]` nested deeper than the parser goes.
    try:
        return json.loads(raw_body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise CallbackNotJson(message()) from error


def _known_event(session: Session, bank_code: str, webhook_id: str) -> BankEvent | None:
    return session.scalar(select(BankEvent).where(BankEvent.bank_code == bank_code,
                                                  BankEvent.webhook_id == webhook_id))


def _repeat(session: Session, known: BankEvent, body_hash: str, bank_code: str, webhook_id: str) -> CallbackAnswer:
    if known.body_sha256 != body_hash:
        # The caller rolls this transaction back, then records the security event on its own.
        raise WebhookIdReused(_("事件编号 %(id)s 已用于内容不同的回调，未作处理，已通知财务。", id=webhook_id),
                              first_body_sha256=known.body_sha256, body_sha256=body_hash)
    return CallbackAnswer(200, {"result": "duplicate"})


def _apply(session: Session, settings: ReceiptSettings, bank_code: str, webhook_id: str, data: dict[str, Any],
           event: _Outcome) -> CallbackAnswer:
    payment_data = data["data"]
    reference = payment_data["bank_reference"]
    actor = Actor("bank", bank_code)
    try:
        # confirm_payment raises every refusal before it writes anything (a payment whose bank
        # reference is already recorded conflicts on the unique index and is refused as already
        # paid, unwritten), so this transaction carries on without a savepoint.
        confirmation = confirm_payment(
            session, settings, actor, notice_number=payment_data["notice_number"],
            amount=payment_data["amount"], channel=Channel.BANK, method=PaymentMethod.TRANSFER,
            paid_at=payment_data["paid_at"], bank_code=bank_code, bank_reference=reference,
            payer_name=payment_data.get("payer_name"), reference=payment_data.get("payer_account"))
    except tuple(FLAG_REASONS) as error:
        reason = FLAG_REASONS[type(error)]
        answer = _money_already_under(session, bank_code, payment_data, event)
        if answer is None:
            try:
                answer = _flag(session, settings, actor, webhook_id, payment_data, reason, event)
            except IntegrityError:
                # A concurrent event recorded this reference between the look and the write.
                answer = (_money_already_under(session, bank_code, payment_data, event)
                          or _flag(session, settings, actor, webhook_id, payment_data, reason, event))
        return answer
    event.result, event.payment_id = "confirmed", confirmation.payment.id
    return CallbackAnswer(200, {"result": "confirmed", "receipt_number": confirmation.receipt.number})


def _flag(session: Session, settings: ReceiptSettings, actor: Actor, webhook_id: str, payment_data: dict[str, Any],
          reason: str, event: _Outcome) -> CallbackAnswer:
    """Keep money the bank holds that cannot be applied. Under a reference that already names
    other money it is a conflict (a bank's fault or a forged event): flagged as such, and a
    security event for finance."""
    bank_code, reference = actor.name, payment_data["bank_reference"]
    conflict = _payment_by_reference(session, bank_code, reference) is not None
    with session.begin_nested():
        payment = _record_flagged(session, settings, actor, bank_code, payment_data,
                                  BANK_REFERENCE_CONFLICT if conflict else reason)
    if conflict:
        record_security_event(session, BANK_REFERENCE_CONFLICT, bank_code, webhook_id, _(
            "银行流水号 %(ref)s 已用于另一笔款项；本次回调（通知书 %(n)s，%(amount)s 分）已作为待处理款项交财务核查。",
            ref=reference, n=payment_data["notice_number"], amount=payment_data["amount"]))
    event.result, event.reason, event.payment_id = "flagged", payment.flag_reason, payment.id
    return CallbackAnswer(200, {"result": "flagged", "reason": payment.flag_reason})


def _payment_by_reference(session: Session, bank_code: str, reference: str) -> int | None:
    """The payment this bank reference names (a conflicting claim on it is not that payment)."""
    found = session.connection().execute(_PAYMENT_BY_REFERENCE, {"ref_bank": bank_code, "ref": reference}).scalar()
    return None if found is None else int(found)


def _money_already_under(session: Session, bank_code: str, payment_data: dict[str, Any],
                         event: _Outcome) -> CallbackAnswer | None:
    """The same transfer re-sent under a new webhook-id (same reference, notice and amount), or a
    concurrent event with it that committed while this one waited: it was applied once."""
    given = _digits_of(payment_data["notice_number"])
    for payment_id, number, amount in session.connection().execute(
            _PAYMENTS_UNDER_REFERENCE, {"ref_bank": bank_code, "ref": payment_data["bank_reference"]}):
        if amount == payment_data["amount"] and _digits_of(number) == given:
            event.result, event.reason, event.payment_id = "duplicate", "bank-reference-seen", payment_id
            return CallbackAnswer(200, {"result": "duplicate"})
    return None


def _digits_of(notice_number: str) -> str:
    """A notice number as the bank may write it (grouped with spaces) compared by what it says."""
    return "".join(notice_number.split())


def _record_flagged(session: Session, settings: ReceiptSettings, actor: Actor, bank_code: str,
                    data: dict[str, Any], reason: str) -> Payment:
    notice_id = None
    try:
        notice_id = find_notice(session, data["notice_number"]).id
    except (NoticeNotFound, InvalidNoticeNumber):
        pass
    payment = Payment(notice_id=notice_id, notice_number_given=data["notice_number"][:64], channel=Channel.BANK,
                      method=PaymentMethod.TRANSFER, amount=data["amount"], currency="CNY",
                      status=PaymentStatus.FLAGGED, flag_reason=reason, bank_code=bank_code,
                      bank_reference=data["bank_reference"], payer_name=data.get("payer_name"),
                      reference=data.get("payer_account"), paid_at=data["paid_at"], recorded_at=utcnow())
    session.add(payment)
    session.flush()
    append_audit(session, settings.audit_key, actor, "payment.flagged", "payment", payment.id,
                 after={"notice_number": data["notice_number"], "amount": data["amount"], "reason": reason,
                        "bank_reference": data["bank_reference"]})
    return payment


def answer_query(session: Session, bank_code: str, headers: dict[str, str], raw_body: bytes,
                 today: Any) -> dict[str, Any]:
    """What is due on a notice, for a bank about to collect (signed like a callback)."""
    headers = {k.lower(): v for k, v in headers.items()}
    verify_signature(live_secrets(session, bank_code, utcnow()), raw_body, headers)
    document = _parse_json(raw_body, lambda: _("查询请求体不是有效的 JSON。"))
    number = document.get("notice_number") if isinstance(document, dict) else None
    if not isinstance(number, str):
        raise MalformedCallback(_("请提供 notice_number。"), errors={"notice_number": ["必填。"]})
    notice = find_notice(session, normalise_notice_number(number))
    return {"notice_number": notice.number, "status": notice.status_on(today), "total": notice.total,
            "currency": "CNY", "payer_name": mask_name(notice.payer_name), "department": notice.department.name,
            "due_date": notice.due_date.isoformat()}


def record_security_event(session: Session, kind: str, bank_code: str, webhook_id: str | None, detail: str) -> None:
    session.add(SecurityEvent(kind=kind, bank_code=_printable(bank_code)[:32],
                              webhook_id=_printable(webhook_id or "")[:255] or None, detail=_printable(detail)[:2000]))


def _printable(text: str) -> str:
    """What came from the request, safe to store (PostgreSQL refuses NUL in text)."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)
