"""Issue 10, section 2, on PostgreSQL: the faults of tests/api/test_fault_injection.py, each made by
killing the transaction's backend (pg_terminate_backend, from a second connection) just before the
statement runs, or around the COMMIT. The client gets a 503, nothing is left behind, the cashier's
retry with the same Idempotency-Key (or the page's form sent again) pays once, the bank's retry of
the same webhook-id gives one payment.

With a listener on the engine the hot statements run through Connection.execute rather than on
the psycopg cursor (core.db.HotStatement); both wrap a driver error the same way, and
tests/postgres/test_hot_statements.py kills a connection on the cursor path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from core.db import Database
from tests.api.test_fault_injection import (
    RECEIPT,
    Breaker,
    callback_faults,
    cashier_faults,
    money_path,
    page_faults,
)
from tests.conftest import Staff

pytestmark = pytest.mark.postgres


def backend_pid(connection: Any) -> int:
    """The server process behind a SQLAlchemy Connection or a pooled DBAPI connection."""
    pooled = connection.connection if isinstance(connection, Connection) else connection
    return int(pooled.dbapi_connection.info.backend_pid)


@pytest.fixture
def kill_backend(pg_db: Database) -> Iterator[Breaker]:
    with killing(pg_db) as breaker:
        yield breaker


@contextmanager
def killing(database: Database) -> Iterator[Breaker]:
    """Terminates the backend a statement or COMMIT is about to use, and waits until it is gone."""
    admin = create_engine(database.engine.url, isolation_level="AUTOCOMMIT")
    killed: list[int] = []

    def breaker(connection: Any) -> None:
        pid = backend_pid(connection)
        with admin.connect() as other:
            assert other.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}), pid
        killed.append(pid)

    try:
        yield breaker
    finally:
        admin.dispose()
    assert killed, "no backend was killed"


def test_a_backend_killed_at_any_statement_of_a_cashier_confirmation(
        pg_app: Flask, pg_db: Database, pg_staff: Staff, kill_backend: Breaker, subtests: Any) -> None:
    path = money_path(pg_app, pg_db, pg_app.test_client(), pg_staff)
    clean = cashier_faults(path, pg_db, kill_backend, subtests)
    assert any("idempotency_keys" in s for s in clean.statements)
    assert any(RECEIPT.search(s) for s in clean.statements)


def test_a_backend_killed_at_any_statement_of_a_bank_callback(
        pg_app: Flask, pg_db: Database, pg_staff: Staff, kill_backend: Breaker, subtests: Any) -> None:
    path = money_path(pg_app, pg_db, pg_app.test_client(), pg_staff)
    clean = callback_faults(path, pg_db, kill_backend, subtests)
    assert any("bank_events" in s for s in clean.statements)
    assert any(RECEIPT.search(s) for s in clean.statements)


def test_a_backend_killed_at_any_statement_of_a_cashier_page_payment(
        pg_app: Flask, pg_db: Database, pg_staff: Staff, postgres_url: str, subtests: Any) -> None:
    from tests.conftest import make_test_app
    from tests.views.conftest import signed_in

    path = money_path(pg_app, pg_db, pg_app.test_client(), pg_staff)
    html_app = make_test_app(postgres_url, WTF_CSRF_ENABLED=False)
    page_db: Database = html_app.extensions["db"]
    try:
        with killing(page_db) as breaker:
            clean = page_faults(path, pg_db, page_db, signed_in(html_app, pg_staff.usernames["cashier"]), breaker,
                                subtests)
    finally:
        page_db.engine.dispose()
    assert any("idempotency_keys" in s for s in clean.statements)
