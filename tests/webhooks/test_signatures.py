"""The signature matrix of issue 4: only a callback signed by this bank's live secret, over these exact
bytes, within ±300 s, is accepted. Every refusal is a 401 problem+json, one security log line, and
nothing written to any table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.audit import Actor
from core.clock import utcnow
from core.db import Database
from tests.conftest import AUDIT_KEY, table_counts
from tests.webhooks.conftest import Bank, now_seconds, sign
from webhooks.models import BankEvent
from webhooks.service import disable_bank, new_secret, rotate_secret
from webhooks.simulator import callback_body

WEBHOOK_ID = "msg_matrix"


@dataclass
class Case:
    """What a test sends: to which bank's endpoint, these headers, these bytes."""

    code: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Ctx:
    bank: Bank
    other: Bank
    number: str
    db: Database
    monkeypatch: pytest.MonkeyPatch

    @property
    def body(self) -> bytes:
        return callback_body(self.number, 8000, bank_reference="REF-matrix").encode()

    def signed(self, secret: str | None = None, *, skew: int = 0, body: bytes | None = None,
               webhook_id: str = WEBHOOK_ID) -> Case:
        body = self.body if body is None else body
        return Case(self.bank.code, sign(secret or self.bank.secret, webhook_id, body, now_seconds() + skew), body)

    def rotate(self, grace: timedelta = timedelta(hours=24)) -> str:
        with self.db.unit_of_work() as session:
            return rotate_secret(session, AUDIT_KEY, Actor.system("tests"), self.bank.code, grace)

    def after(self, delay: timedelta) -> None:
        """Move the service's clock (not the signature's) forward: a secret's grace runs out."""
        later = utcnow() + delay
        self.monkeypatch.setattr("webhooks.service.utcnow", lambda: later)


def _without(name: str) -> Callable[[Ctx], Case]:
    def build(ctx: Ctx) -> Case:
        case = ctx.signed()
        del case.headers[name]
        return case

    return build


def _with_signature(make: Callable[[str], str]) -> Callable[[Ctx], Case]:
    """Keep the valid signature's base64 value `v`, send `make(v)` as the header instead."""
    def build(ctx: Ctx) -> Case:
        case = ctx.signed()
        valid = case.headers["webhook-signature"].split(",", 1)[1]
        case.headers["webhook-signature"] = make(valid)
        return case

    return build


def _flipped_byte(ctx: Ctx) -> Case:
    case = ctx.signed()
    body = bytearray(case.body)
    position = body.index(b"8000")  # the amount: 8000 → 9000 still parses, only the signature tells
    body[position] ^= 0x01
    return Case(case.code, case.headers, bytes(body))


def _non_utf8(ctx: Ctx) -> Case:
    """Correctly signed over the raw bytes (by hand: the library signs text), but not UTF-8."""
    body = ctx.body.replace(b"REF-matrix", b"REF-\xff\xfe")
    timestamp = str(now_seconds())
    key = base64.b64decode(ctx.bank.secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{WEBHOOK_ID}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {"content-type": "application/json", "webhook-id": WEBHOOK_ID, "webhook-timestamp": timestamp,
               "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    return Case(ctx.bank.code, headers, body)


def _other_id(ctx: Ctx) -> Case:
    """A valid signature of another webhook-id: the id is part of what is signed."""
    case = ctx.signed(webhook_id="msg_other")
    case.headers["webhook-id"] = WEBHOOK_ID
    return case


def _other_timestamp(ctx: Ctx) -> Case:
    """Signed at one moment, sent with another (fresh) timestamp: the timestamp is signed too."""
    case = ctx.signed(skew=-10)
    case.headers["webhook-timestamp"] = str(now_seconds())
    return case


def _with_timestamp(value: str) -> Callable[[Ctx], Case]:
    def build(ctx: Ctx) -> Case:
        case = ctx.signed()
        case.headers["webhook-timestamp"] = value
        return case

    return build


def _other_bank_key(ctx: Ctx) -> Case:
    return ctx.signed(ctx.other.secret)


def _own_key_on_other_endpoint(ctx: Ctx) -> Case:
    case = ctx.signed()
    return Case(ctx.other.code, case.headers, case.body)


def _several(order: str) -> Callable[[Ctx], Case]:
    """A header with several signatures (as during rotation), `order` naming each: the valid
    one (v), a well-formed wrong v1 (w), or a signature of another scheme (x)."""
    def build(ctx: Ctx) -> Case:
        case = ctx.signed()
        wrong = ctx.signed(new_secret()).headers["webhook-signature"]
        valid = case.headers["webhook-signature"]
        parts = {"v": valid, "w": wrong, "x": "v1a,bm90LWFuLWVkMjU1MTktc2lnbmF0dXJl"}
        case.headers["webhook-signature"] = " ".join(parts[c] for c in order)
        return case

    return build


def _rotated_old(ctx: Ctx) -> Case:
    ctx.rotate()
    return ctx.signed()  # the old secret, within its grace period


def _rotated_new(ctx: Ctx) -> Case:
    return ctx.signed(ctx.rotate())


def _rotated_both(ctx: Ctx) -> Case:
    """A bank mid-rotation signs with both secrets; either matching is enough."""
    new = ctx.rotate()
    case = ctx.signed()
    second = sign(new, WEBHOOK_ID, case.body, int(case.headers["webhook-timestamp"]))
    case.headers["webhook-signature"] += " " + second["webhook-signature"]
    return case


def _rotated_old_after_grace(ctx: Ctx) -> Case:
    ctx.rotate()
    ctx.after(timedelta(hours=24, seconds=1))
    return ctx.signed()


def _rotated_new_after_grace(ctx: Ctx) -> Case:
    new = ctx.rotate()
    ctx.after(timedelta(hours=24, seconds=1))
    return ctx.signed(new)


def _rotated_old_short_grace(ctx: Ctx) -> Case:
    ctx.rotate(timedelta(hours=1))
    ctx.after(timedelta(minutes=61))
    return ctx.signed()


def _rotated_twice_first(ctx: Ctx) -> Case:
    """Rotating again does not extend the first secret's grace beyond its own."""
    ctx.rotate()
    ctx.after(timedelta(hours=23))
    ctx.rotate()
    ctx.after(timedelta(hours=24, seconds=1))
    return ctx.signed()


def _disabled(ctx: Ctx) -> Case:
    with ctx.db.unit_of_work() as session:
        disable_bank(session, AUDIT_KEY, Actor.system("tests"), ctx.bank.code)
    return ctx.signed()


def _unknown_bank(ctx: Ctx) -> Case:
    case = ctx.signed()
    return Case("NO-SUCH-BANK", case.headers, case.body)


def _bank_code(code: str) -> Callable[[Ctx], Case]:
    def build(ctx: Ctx) -> Case:
        case = ctx.signed()
        return Case(code, case.headers, case.body)

    return build


ACCEPTED: dict[str, Callable[[Ctx], Case]] = {
    "valid": lambda ctx: ctx.signed(),
    "299 s old": lambda ctx: ctx.signed(skew=-299),
    "299 s ahead": lambda ctx: ctx.signed(skew=299),
    "wrong then valid": _several("wv"),
    "valid then wrong": _several("vw"),
    "other scheme then valid": _several("xv"),
    "rotation: old secret in grace": _rotated_old,
    "rotation: new secret": _rotated_new,
    "rotation: both signatures": _rotated_both,
    "rotation: new secret after grace": _rotated_new_after_grace,
    "header names in capitals": lambda ctx: Case(ctx.bank.code, {k.title(): v for k, v in
                                                                  ctx.signed().headers.items()}, ctx.body),
}

REFUSED: dict[str, Callable[[Ctx], Case]] = {
    "flipped body byte": _flipped_byte,
    "wrong key": lambda ctx: ctx.signed(new_secret()),
    "another bank's key": _other_bank_key,
    "own key on another bank's endpoint": _own_key_on_other_endpoint,
    "missing webhook-id": _without("webhook-id"),
    "missing webhook-timestamp": _without("webhook-timestamp"),
    "missing webhook-signature": _without("webhook-signature"),
    "empty webhook-signature": _with_signature(lambda v: ""),
    "signature without comma": _with_signature(lambda v: "v1" + v),
    "signature with two commas": _with_signature(lambda v: f"v1,{v},x"),
    "signature bad base64": _with_signature(lambda v: "v1," + v[:-3]),
    "signature v2 only": _with_signature(lambda v: "v2," + v),
    "signature without scheme": _with_signature(lambda v: v),
    "several, none valid": _several("wxw"),
    "non-UTF-8 body": _non_utf8,
    "signature of another webhook-id": _other_id,
    "timestamp changed after signing": _other_timestamp,
    "timestamp not a number": _with_timestamp("yesterday"),
    "timestamp NaN": _with_timestamp("nan"),
    "timestamp infinite": _with_timestamp("inf"),
    "301 s old": lambda ctx: ctx.signed(skew=-301),
    "301 s ahead": lambda ctx: ctx.signed(skew=301),
    "a day old": lambda ctx: ctx.signed(skew=-86400),
    "rotation: old secret after grace": _rotated_old_after_grace,
    "rotation: old secret after a 1 h grace": _rotated_old_short_grace,
    "rotation: first secret after rotating twice": _rotated_twice_first,
    "disabled bank": _disabled,
    "unknown bank": _unknown_bank,
    "bank code with NUL": _bank_code("ICBC-T%00"),
    "bank code too long": _bank_code("ICBC-T" + "X" * 40),
    "bank code in another case": _bank_code("icbc-t"),
}


@pytest.fixture
def ctx(bank: Bank, other_bank: Bank, notice_factory: Callable[..., str], db: Database,
        monkeypatch: pytest.MonkeyPatch) -> Ctx:
    return Ctx(bank, other_bank, notice_factory(), db, monkeypatch)


@pytest.mark.parametrize("build", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(ctx: Ctx, build: Callable[[Ctx], Case], db: Database) -> None:
    case = build(ctx)
    response = ctx.bank.post_raw(case.body, case.headers, code=case.code)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["result"] == "confirmed"
    with db.reading() as session:
        event = session.scalar(select(BankEvent))
        assert event is not None and event.webhook_id == WEBHOOK_ID and event.body.encode() == case.body
        assert "webhook-signature" not in event.headers.lower()


@pytest.mark.parametrize("build", REFUSED.values(), ids=REFUSED.keys())
def test_refused(ctx: Ctx, build: Callable[[Ctx], Case], db: Database, caplog: pytest.LogCaptureFixture) -> None:
    case = build(ctx)
    before = table_counts(db)
    with caplog.at_level(logging.WARNING, logger="feeservice.security"):
        response = ctx.bank.post_raw(case.body, case.headers, code=case.code)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem["status"] == 401 and problem["type"].endswith("/unauthorized")
    assert problem["title"] and problem["detail"]
    assert table_counts(db) == before, "a refused callback must record nothing"
    refusals = [r for r in caplog.records if r.name == "feeservice.security"]
    assert len(refusals) == 1
    message = refusals[0].getMessage()
    assert case.code.split("%")[0] in message and message.isprintable(), "one line, no control characters"
    for secret in (ctx.bank.secret, ctx.other.secret):
        assert secret.removeprefix("whsec_") not in caplog.text


def test_a_refused_attempt_does_not_spoil_the_event(ctx: Ctx, db: Database) -> None:
    """A forged or stale attempt records nothing, so the bank's genuine delivery of the same
    webhook-id afterwards is processed normally (not answered duplicate or 409)."""
    stale = ctx.signed(skew=-400)
    assert ctx.bank.post_raw(stale.body, stale.headers).status_code == 401
    forged = _flipped_byte(ctx)
    assert ctx.bank.post_raw(forged.body, forged.headers).status_code == 401
    genuine = ctx.signed()
    response = ctx.bank.post_raw(genuine.body, genuine.headers)
    assert response.status_code == 200 and response.json["result"] == "confirmed"
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(BankEvent)) == 1


def test_the_manual_signer_agrees_with_the_library(ctx: Ctx) -> None:
    """The non-UTF-8 case signs by hand; on a UTF-8 body that hand signature is the library's."""
    by_hand = _non_utf8(ctx)
    body = by_hand.body.replace(b"REF-\xff\xfe", b"REF-matrix")
    key = base64.b64decode(ctx.bank.secret.removeprefix("whsec_"))
    timestamp = int(by_hand.headers["webhook-timestamp"])
    mac = hmac.new(key, f"{WEBHOOK_ID}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    assert sign(ctx.bank.secret, WEBHOOK_ID, body, timestamp)["webhook-signature"] == \
        "v1," + base64.b64encode(mac).decode()
