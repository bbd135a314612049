"""Callbacks arriving at the same moment (threads released by a barrier, each with its own client
and database connection), on whichever engine the tests run: never a 5xx, never a second payment
for one event or one bank reference."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import Database
from payments.models import Payment
from receipts.models import Receipt
from tests.webhooks.conftest import Bank, now_seconds, sign
from webhooks.models import BankEvent
from webhooks.simulator import callback_body

THREADS = 8
ROUNDS = 4


def post_together(app: Flask, bank: Bank, requests: list[tuple[str, bytes]]) -> list[Any]:
    """Post (webhook-id, body) pairs at once; returns (status, json) in order."""
    barrier = threading.Barrier(len(requests))

    def one(item: tuple[str, bytes]) -> tuple[int, Any]:
        webhook_id, body = item
        client = app.test_client()
        headers = sign(bank.secret, webhook_id, body, now_seconds())
        barrier.wait(timeout=30)
        response = client.post(f"/webhooks/bank/{bank.code}", data=body, headers=headers)
        return response.status_code, response.json

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


def results(answers: list[Any]) -> Counter[str]:
    assert {status for status, _ in answers} == {200}, answers
    return Counter(body["result"] for _, body in answers)


def counts(db: Database) -> tuple[int, int, int]:
    with db.reading() as session:
        return (session.scalar(select(func.count()).select_from(Payment)) or 0,
                session.scalar(select(func.count()).select_from(Receipt)) or 0,
                session.scalar(select(func.count()).select_from(BankEvent)) or 0)


@pytest.mark.slow
def test_one_event_delivered_many_times_at_once(app: Flask, db: Database, bank: Bank,
                                                notice_factory: Callable[..., str]) -> None:
    for round_ in range(ROUNDS):
        body = callback_body(notice_factory(), 8000, bank_reference=f"R{round_}").encode()
        answers = post_together(app, bank, [(f"msg_{round_}", body)] * THREADS)
        assert results(answers) == {"confirmed": 1, "duplicate": THREADS - 1}
    assert counts(db) == (ROUNDS, ROUNDS, ROUNDS)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["one notice", "a notice each", "wrong amount"])
def test_one_bank_reference_under_several_webhook_ids_at_once(app: Flask, db: Database, bank: Bank,
                                                              notice_factory: Callable[..., str],
                                                              variant: str) -> None:
    """A bank that re-sends the same money as new events: applied once (confirmed, or flagged
    when it cannot be applied), the rest duplicates. The same reference on other notices is other
    money claimed under it: one confirmed, every other kept as a flagged conflict."""
    for round_ in range(ROUNDS):
        number = notice_factory()
        requests = []
        for i in range(THREADS):
            target = notice_factory() if variant == "a notice each" else number
            amount = 7000 if variant == "wrong amount" else 8000
            body = callback_body(target, amount, bank_reference=f"SAME{round_}")
            requests.append((f"msg_{round_}_{i}", body.encode()))
        answers = post_together(app, bank, requests)
        if variant == "a notice each":
            assert results(answers) == {"confirmed": 1, "flagged": THREADS - 1}
            assert {body.get("reason") for _, body in answers} == {None, "bank-reference-conflict"}
        else:
            first = "flagged" if variant == "wrong amount" else "confirmed"
            assert results(answers) == {first: 1, "duplicate": THREADS - 1}
    payments, receipts, _events = counts(db)
    if variant == "a notice each":
        assert (payments, receipts) == (ROUNDS * THREADS, ROUNDS)
    else:
        assert (payments, receipts) == (ROUNDS, 0 if variant == "wrong amount" else ROUNDS)


@pytest.mark.slow
def test_several_payments_of_one_notice_at_once(app: Flask, db: Database, bank: Bank,
                                                notice_factory: Callable[..., str]) -> None:
    """Different payers' money for one notice: one confirmed, the others flagged already-paid
    (never lost, never receipted)."""
    for round_ in range(ROUNDS):
        number = notice_factory()
        requests = [(f"msg_{round_}_{i}", callback_body(number, 8000, bank_reference=f"R{round_}_{i}").encode())
                    for i in range(THREADS)]
        answers = post_together(app, bank, requests)
        assert results(answers) == {"flagged": THREADS - 1, "confirmed": 1}
        assert {body.get("reason") for _, body in answers} == {None, "notice-already-paid"}
    payments, receipts, events = counts(db)
    assert (payments, receipts, events) == (ROUNDS * THREADS, ROUNDS, ROUNDS * THREADS)
