"""Banks and cashiers paying one notice at the same moment on PostgreSQL: one confirmed payment,
one receipt; the other bank events are flagged notice-already-paid, the other cashiers refused."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from core.audit import Actor, verify_audit_chain
from core.db import Database
from core.models import User
from notices.service import LineRequest, NoticeAlreadyPaid, issue_notice, settings_from_config
from payments.models import Payment, PaymentStatus
from payments.service import confirm_cashier_payment
from receipts.models import Receipt
from receipts.service import receipt_settings
from tests.conftest import AUDIT_KEY, _truncate_all, make_test_app
from tests.postgres.conftest import seed_staff
from webhooks.service import create_bank, handle_callback
from webhooks.simulator import callback_body, signed_headers

pytestmark = pytest.mark.postgres
BANK_THREADS = 20
CASHIER_THREADS = 20


@pytest.fixture
def race_app(postgres_url: str) -> Iterator[Flask]:
    _truncate_all(postgres_url)
    app = make_test_app(postgres_url, DATABASE_ENGINE_OPTIONS={"pool_size": BANK_THREADS + CASHIER_THREADS + 5})
    with app.app_context():
        yield app
    app.extensions["db"].engine.dispose()


def test_banks_and_cashiers_racing_on_one_notice_make_one_payment(race_app: Flask) -> None:
    database: Database = race_app.extensions["db"]
    staff = seed_staff(database)
    with database.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), "RACE-BANK", "竞速银行")
        clerk = session.scalar(select(User).where(User.username == staff.usernames["window"]))
        assert clerk is not None
        number = issue_notice(session, settings_from_config(race_app.config), clerk, department_code="BDC",
                              payer_name="张三", items=[LineRequest("BDC-ZZ", 1)]).number
    with database.reading() as session:
        cashier = session.scalar(select(User).where(User.username == staff.usernames["cashier"]))
    settings = receipt_settings(race_app.config)
    barrier = threading.Barrier(BANK_THREADS + CASHIER_THREADS)
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def bank(i: int) -> None:
        body = callback_body(number, 8000, bank_reference=f"RACE-{i}")
        headers = signed_headers(secret, f"race_{i}", body)
        try:
            with race_app.app_context(), database.unit_of_work() as session:
                session.execute(text("SELECT 1"))  # hold a connection before the start signal
                barrier.wait(timeout=30)
                answer = handle_callback(session, settings, "RACE-BANK", headers, body.encode())
            with lock:
                results.append(f"bank:{answer.body['result']}:{answer.body.get('reason', '')}")
        except BaseException as error:
            with lock:
                errors.append(error)
            barrier.abort()

    def cash(_i: int) -> None:
        try:
            with race_app.app_context(), database.unit_of_work() as session:
                session.execute(text("SELECT 1"))
                barrier.wait(timeout=30)
                assert cashier is not None
                confirm_cashier_payment(session, settings, cashier, notice_number=number, amount=8000,
                                        method="cash")
            with lock:
                results.append("cashier:confirmed")
        except NoticeAlreadyPaid:
            with lock:
                results.append("cashier:already-paid")
        except BaseException as error:
            with lock:
                errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=bank, args=(i,)) for i in range(BANK_THREADS)]
    threads += [threading.Thread(target=cash, args=(i,)) for i in range(CASHIER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors
    counts = Counter(results)
    confirmed = counts["bank:confirmed:"] + counts["cashier:confirmed"]
    assert confirmed == 1, counts
    assert counts["bank:flagged:notice-already-paid"] + counts["bank:confirmed:"] == BANK_THREADS, counts
    assert counts["cashier:already-paid"] + counts["cashier:confirmed"] == CASHIER_THREADS, counts
    with database.reading() as session:
        statuses = Counter(session.scalars(select(Payment.status)))
        assert statuses[PaymentStatus.CONFIRMED] == 1
        assert statuses[PaymentStatus.FLAGGED] == BANK_THREADS - counts["bank:confirmed:"]
        assert session.scalar(select(func.count()).select_from(Receipt)) == 1
        assert verify_audit_chain(session, AUDIT_KEY).ok
