"""Issue 10, section 2: a fault at any statement of the money path's transaction, or at its COMMIT.

One clean cashier confirmation (with an Idempotency-Key, through the API and through the cashier
page's form) and one clean bank callback are recorded first: their statements, and what they added
to every table. Then, for every statement of that list in turn, the same request is sent for a
fresh notice and that statement fails as a dropped connection would: the client gets a 503 (a
problem+json from the API, never a 500), every table is as it was, and the retry adds exactly what
the clean request added. At the COMMIT there are two faults: the COMMIT fails (nothing written:
the retry runs afresh), or it took effect and its answer was lost (503 `outcome-unknown`: the
retry replays the first 201, or the bank hears "duplicate").

The list is recorded at run time, so it follows the path as it changes; each statement is a
subtest named by its index and its SQL. tests/postgres/test_fault_injection.py runs the same on
PostgreSQL, where the fault is the backend killed with pg_terminate_backend."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from core.audit import Actor
from core.db import Database
from core.models_registry import metadata
from tests.conftest import AUDIT_KEY, Staff, issue
from webhooks.service import create_bank
from webhooks.simulator import callback_body, signed_headers

PAY = {"amount": 8000, "method": "cash"}
BANK = "FAULT-BANK"

# Break the connection a statement (or the COMMIT) is about to use. On SQLite: raise the driver's
# OperationalError, as a lost disk or a dropped connection would. On PostgreSQL: kill the backend.
Breaker = Callable[[Connection | Any], None]

Snapshot = dict[str, Any]


def snapshot(db: Database) -> Snapshot:
    """Every table's row count, plus the rows that are counters rather than facts: the receipt
    numbers taken, the audit chain's head, each notice's status."""
    with db.engine.connect() as conn:
        state: Snapshot = {t.name: conn.scalar(text(f"SELECT count(*) FROM {t.name}"))
                           for t in metadata.sorted_tables}
        state["receipt counter"] = [tuple(r) for r in conn.execute(text("SELECT * FROM receipt_counters ORDER BY 1"))]
        state["audit chain head"] = [tuple(r) for r in conn.execute(text("SELECT * FROM audit_chain_head"))]
        state["notice statuses"] = sorted(tuple(r) for r in conn.execute(text("SELECT number, status FROM notices")))
    return state


def added(before: Snapshot, after: Snapshot) -> dict[str, int]:
    """What a request added, table by table (only the tables it changed)."""
    return {t.name: after[t.name] - before[t.name] for t in metadata.sorted_tables if after[t.name] != before[t.name]}


def normalised(statement: str) -> str:
    return " ".join(statement.split())


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(normalised(statement))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@contextmanager
def fault_at_statement(db: Database, index: int, expected: str, breaker: Breaker) -> Iterator[list[str]]:
    """The connection breaks just before the request's statement number `index` runs; yields the
    statements seen, so that the test can tell the fault hit the statement it meant."""
    seen: list[str] = []

    def maybe_break(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(normalised(statement))
        if len(seen) - 1 == index:
            assert seen[-1] == expected, f"the path changed under the test: {seen[-1]!r} is not {expected!r}"
            breaker(conn)

    event.listen(db.engine, "before_cursor_execute", maybe_break)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", maybe_break)


@contextmanager
def fault_at_commit(db: Database, breaker: Breaker, *, took_effect: bool) -> Iterator[list[bool]]:
    """The driver's COMMIT fails once. `took_effect`: it reached the database and committed, and its
    answer was lost on the way back; otherwise the connection broke before the COMMIT got there."""
    dialect = db.engine.dialect
    real_commit = dialect.do_commit
    failed: list[bool] = []

    def commit(dbapi_connection: Any) -> None:
        if failed:
            real_commit(dbapi_connection)
            return
        failed.append(True)
        if took_effect:
            real_commit(dbapi_connection)
            breaker(dbapi_connection)
            raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")
        breaker(dbapi_connection)
        real_commit(dbapi_connection)

    dialect.do_commit = commit  # type: ignore[method-assign]
    try:
        yield failed
    finally:
        del dialect.do_commit  # the instance attribute goes; the dialect's own method is back


def sqlite_breaker(db: Database) -> Breaker:
    def breaker(_connection: Any) -> None:
        raise db.engine.dialect.loaded_dbapi.OperationalError("disk I/O error")

    return breaker


def assert_503(response: Any, *codes: str) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert response.mimetype == "application/problem+json", body
    assert response.json["status"] == 503 and response.json["code"] in codes, body
    assert int(response.headers["Retry-After"]) > 0
    return str(response.json["code"])


@dataclass
class MoneyPath:
    """One of the two requests that turn a notice into a confirmed payment, sent the same way each
    time for a fresh notice."""

    app: Flask
    client: FlaskClient
    staff: Staff
    bank_secret: str

    def notice(self) -> str:
        response = issue(self.client, self.staff)
        assert response.status_code == 201, response.json
        return str(response.json["number"])

    def cashier(self, number: str) -> Any:
        return self.client.post(f"/api/v1/notices/{number}/payments", json=PAY,
                                headers=self.staff.headers("cashier", **{"Idempotency-Key": f"pay-{number}"}))

    def callback_body(self, number: str) -> str:
        # paid_at fixed, so the bank's retry is byte for byte the same body
        return callback_body(number, PAY["amount"], bank_reference=f"REF{number}",
                             paid_at=datetime.now(UTC).replace(microsecond=0))

    def bank(self, number: str, body: str) -> Any:
        # the webhook-id is the notice's: the bank's retry of this event carries the same one
        return self.client.post(f"/webhooks/bank/{BANK}", data=body.encode(),
                                headers=signed_headers(self.bank_secret, f"msg_{number}", body))


def money_path(app: Flask, db: Database, client: FlaskClient, staff: Staff) -> MoneyPath:
    with db.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), BANK, "故障测试银行")
    path = MoneyPath(app, client, staff, secret)
    # The first payment of the year creates the counter row and opens the cashier's shift, and the
    # token is cached from then on: the requests under test are the everyday ones.
    assert path.cashier(path.notice()).status_code == 201
    number = path.notice()
    assert path.bank(number, path.callback_body(number)).json["result"] == "confirmed"
    return path


@dataclass(frozen=True)
class Recorded:
    statements: list[str]
    effect: dict[str, int]


def record(db: Database, send: Callable[[], Any], status: int) -> Recorded:
    before = snapshot(db)
    with statements(db) as seen:
        response = send()
    assert response.status_code == status, response.get_data(as_text=True)
    effect = added(before, snapshot(db))
    assert effect["payments"] == 1 and effect["receipts"] == 1, effect
    return Recorded(list(seen), effect)


def label(index: int, statement: str) -> str:
    return f"statement {index}: {statement[:90]}"


def cashier_faults(path: MoneyPath, db: Database, breaker: Breaker, subtests: Any) -> Recorded:
    """Every statement of a keyed cashier confirmation fails in turn; then its COMMIT both ways."""
    first = path.notice()
    clean = record(db, lambda: path.cashier(first), 201)
    assert len(clean.statements) >= 5, clean.statements
    for index, statement in enumerate(clean.statements):
        with subtests.test(msg=label(index, statement)):
            number = path.notice()
            before = snapshot(db)
            with fault_at_statement(db, index, statement, breaker) as seen:
                response = path.cashier(number)
            assert len(seen) > index, f"the request stopped before statement {index}: {seen}"
            assert_503(response, "unavailable")
            assert snapshot(db) == before, "the failed request left something behind"
            retry = path.cashier(number)
            assert retry.status_code == 201, retry.get_data(as_text=True)
            assert retry.headers.get("Idempotent-Replayed") is None  # nothing was stored: it ran afresh
            assert added(before, snapshot(db)) == clean.effect
            assert path.cashier(number).headers.get("Idempotent-Replayed") == "true"
    for took_effect in (False, True):
        with subtests.test(msg=f"COMMIT {'took effect, answer lost' if took_effect else 'failed'}"):
            number = path.notice()
            before = snapshot(db)
            with fault_at_commit(db, breaker, took_effect=took_effect) as failed:
                response = path.cashier(number)
            assert failed, "the COMMIT was never reached"
            assert_503(response, "outcome-unknown")
            assert "Idempotency-Key" in response.json["detail"]
            if took_effect:
                assert added(before, snapshot(db)) == clean.effect
            else:
                assert snapshot(db) == before, "a COMMIT that failed wrote something"
            retry = path.cashier(number)
            assert retry.status_code == 201, retry.get_data(as_text=True)
            assert retry.headers.get("Idempotent-Replayed") == ("true" if took_effect else None)
            assert retry.json["receipt"]["notice_number"] == number
            assert added(before, snapshot(db)) == clean.effect
    return clean


def callback_faults(path: MoneyPath, db: Database, breaker: Breaker, subtests: Any) -> Recorded:
    """Every statement of a bank callback fails in turn; then its COMMIT both ways. The bank
    retries the same event (same webhook-id, same body) until it gets a 200."""
    first = path.notice()
    body = path.callback_body(first)
    clean = record(db, lambda: path.bank(first, body), 200)
    assert len(clean.statements) >= 5, clean.statements
    for index, statement in enumerate(clean.statements):
        with subtests.test(msg=label(index, statement)):
            number = path.notice()
            body = path.callback_body(number)
            before = snapshot(db)
            with fault_at_statement(db, index, statement, breaker) as seen:
                response = path.bank(number, body)
            assert len(seen) > index, f"the request stopped before statement {index}: {seen}"
            assert_503(response, "unavailable")
            assert snapshot(db) == before, "the failed callback left something behind"
            retry = path.bank(number, body)
            assert retry.status_code == 200 and retry.json["result"] == "confirmed", retry.get_data(as_text=True)
            assert added(before, snapshot(db)) == clean.effect
            assert path.bank(number, body).json == {"result": "duplicate"}
            assert added(before, snapshot(db))["payments"] == 1
    for took_effect in (False, True):
        with subtests.test(msg=f"COMMIT {'took effect, answer lost' if took_effect else 'failed'}"):
            number = path.notice()
            body = path.callback_body(number)
            before = snapshot(db)
            with fault_at_commit(db, breaker, took_effect=took_effect) as failed:
                response = path.bank(number, body)
            assert failed, "the COMMIT was never reached"
            assert_503(response, "outcome-unknown")
            if took_effect:
                assert added(before, snapshot(db)) == clean.effect
            else:
                assert snapshot(db) == before, "a COMMIT that failed wrote something"
            retry = path.bank(number, body)
            assert retry.status_code == 200, retry.get_data(as_text=True)
            assert retry.json["result"] == ("duplicate" if took_effect else "confirmed"), retry.json
            assert added(before, snapshot(db)) == clean.effect
    return clean


RECEIPT = re.compile(r"INSERT INTO receipts\b")


def test_every_statement_of_a_cashier_confirmation_may_fail(app: Flask, db: Database, client: FlaskClient,
                                                            staff: Staff, subtests: Any) -> None:
    path = money_path(app, db, client, staff)
    clean = cashier_faults(path, db, sqlite_breaker(db), subtests)
    # the list covered the whole transaction: the key's claim, the payment, its receipt
    assert any("idempotency_keys" in s for s in clean.statements)
    assert any(RECEIPT.search(s) for s in clean.statements)


def test_every_statement_of_a_bank_callback_may_fail(app: Flask, db: Database, client: FlaskClient,
                                                     staff: Staff, subtests: Any) -> None:
    path = money_path(app, db, client, staff)
    clean = callback_faults(path, db, sqlite_breaker(db), subtests)
    assert any("bank_events" in s for s in clean.statements)
    assert any(RECEIPT.search(s) for s in clean.statements)



def page_faults(path: MoneyPath, db: Database, page_db: Database, page: FlaskClient, breaker: Breaker,
                subtests: Any) -> Recorded:
    """The cashier page's form (its key in a hidden field) under the same faults: the page says
    503, and sending the same form again shows the receipt of the one payment."""

    def send(number: str) -> Any:
        return page.post("/cashier/pay", data={"number": number, "amount": str(PAY["amount"]), "method": "cash",
                                               "idempotency_key": f"form-{number}"})

    def paid(response: Any) -> str:
        assert response.status_code == 303, response.get_data(as_text=True)
        location = str(response.headers["Location"])
        assert "/cashier/receipts/" in location, location
        return location

    first = path.notice()
    clean = record(page_db, lambda: send(first), 303)
    faults: list[tuple[str, Callable[[], Any], bool]] = [
        (label(i, s), partial(fault_at_statement, page_db, i, s, breaker), False)
        for i, s in enumerate(clean.statements)]
    faults += [("COMMIT failed", partial(fault_at_commit, page_db, breaker, took_effect=False), False),
               ("COMMIT took effect, answer lost", partial(fault_at_commit, page_db, breaker, took_effect=True), True)]
    for name, fault, took_effect in faults:
        with subtests.test(msg=name):
            number = path.notice()
            before = snapshot(db)
            with fault():
                response = send(number)
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.mimetype == "text/html"
            if not took_effect:
                assert snapshot(db) == before, "the failed payment left something behind"
            location = paid(send(number))
            assert added(before, snapshot(db)) == clean.effect
            assert paid(send(number)) == location  # the form again: the same receipt, no second payment
            assert added(before, snapshot(db)) == clean.effect
    return clean


def test_every_statement_of_a_cashier_page_payment_may_fail(app: Flask, db: Database, client: FlaskClient,
                                                            staff: Staff, subtests: Any) -> None:
    from tests.conftest import make_test_app
    from tests.views.conftest import signed_in

    path = money_path(app, db, client, staff)
    html_app = make_test_app(app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False)
    page_db: Database = html_app.extensions["db"]
    try:
        clean = page_faults(path, db, page_db, signed_in(html_app, staff.usernames["cashier"]),
                            sqlite_breaker(page_db), subtests)
    finally:
        page_db.engine.dispose()
    assert any("idempotency_keys" in s for s in clean.statements)
    assert any(RECEIPT.search(s) for s in clean.statements)
