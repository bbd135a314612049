"""Banks retry: 1,000 events each delivered three times, interleaved, each attempt signed anew
(a fresh webhook-timestamp; the webhook-id and the body's bytes unchanged) → 1,000 payments,
2,000 `duplicate` answers, and receipt numbers 1..1,000 without a gap."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.audit import verify_audit_chain
from core.clock import today
from core.db import Database
from core.models import User
from core.outbox import OutboxEvent
from notices.models import Notice
from notices.service import LineRequest, issue_notice, settings_from_config
from payments.models import Payment
from receipts.models import Receipt
from tests.conftest import AUDIT_KEY, Staff
from tests.webhooks.conftest import TZ, Bank, now_seconds, sign
from webhooks.models import BankEvent
from webhooks.simulator import callback_body

EVENTS = 1_000
DELIVERIES = 3


def issue_many(app: Flask, db: Database, count: int) -> list[str]:
    settings = settings_from_config(app.config)
    with db.unit_of_work() as session:
        clerk = session.scalar(select(User).where(User.username == "clerk-bdc"))
        assert clerk is not None
        return [issue_notice(session, settings, clerk, department_code="BDC", payer_name=f"缴款人{i}",
                             items=[LineRequest("BDC-ZZ", 1)]).number for i in range(count)]


@pytest.mark.slow
def test_each_event_applied_once_however_often_the_bank_retries(app: Flask, db: Database, staff: Staff,
                                                                 bank: Bank) -> None:
    numbers = issue_many(app, db, EVENTS)
    bodies = [callback_body(number, 8000, bank_reference=f"REF{i:06d}").encode() for i, number in enumerate(numbers)]
    schedule = [i for i in range(EVENTS) for _ in range(DELIVERIES)]
    random.Random(4).shuffle(schedule)

    answers: Counter[str] = Counter()
    receipts: dict[int, str] = {}
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    for i in schedule:
        webhook_id = f"msg_{i:06d}"
        response = bank.post_raw(bodies[i], sign(bank.secret, webhook_id, bodies[i], now_seconds()))
        statuses[response.status_code] += 1
        result = response.json["result"]
        answers[result] += 1
        if result == "confirmed":
            assert i not in receipts, f"event {i} confirmed twice"
            receipts[i] = response.json["receipt_number"]
    elapsed = time.perf_counter() - started
    print(f"\n{len(schedule)} callbacks in {elapsed:.1f} s ({len(schedule) / elapsed:.0f}/s)")

    assert statuses == {200: EVENTS * DELIVERIES}
    assert answers == {"confirmed": EVENTS, "duplicate": EVENTS * (DELIVERIES - 1)}
    year = today(TZ).year
    assert sorted(receipts.values()) == [f"{year}-{n:08d}" for n in range(1, EVENTS + 1)]
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == EVENTS
        assert session.scalar(select(func.count()).select_from(Payment).where(Payment.status == "confirmed")) == EVENTS
        assert session.scalar(select(func.count()).select_from(BankEvent)) == EVENTS
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == EVENTS
        sequences = list(session.scalars(select(Receipt.sequence).order_by(Receipt.sequence)))
        assert sequences == list(range(1, EVENTS + 1))
        assert set(session.scalars(select(Notice.status))) == {"paid"}
        assert verify_audit_chain(session, AUDIT_KEY).ok
