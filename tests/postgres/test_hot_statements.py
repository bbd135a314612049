"""core.db.HotStatement on PostgreSQL: the money path's statements run on the psycopg cursor, in
the session's transaction, and a connection lost half way through is still a clean 503 with
nothing written, followed by a normal payment once the database answers again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session

from core.db import Database, HotStatement, table_of
from notices.models import Notice, NoticeStatus
from payments.models import Payment
from receipts.models import Receipt
from tests.conftest import Staff, issue

_NOTICE_COUNT = HotStatement(select(func.count()).select_from(table_of(Notice)))


def test_without_listeners_a_hot_statement_runs_on_the_driver_cursor(pg_db: Database) -> None:
    assert not pg_db.engine._has_events  # the app registers no connection events on PostgreSQL
    with pg_db.unit_of_work() as session:
        rows = _NOTICE_COUNT.rows(session)
        # psycopg's own row type (a tuple), not SQLAlchemy's Row: the cursor was used directly
        assert type(rows[0]) is tuple and rows[0] == (0,)
        # in the session's transaction: it sees what the session wrote and has not committed
        session.execute(text("CREATE TEMPORARY TABLE seen_here (x int) ON COMMIT DROP"))
        assert HotStatement(text("SELECT count(*) FROM seen_here")).scalar(session) == 0


def test_with_a_listener_it_is_an_ordinary_execute_the_listener_sees(pg_app: Flask) -> None:
    engine = create_engine(pg_app.config["DATABASE_URL"])
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    try:
        with Session(engine) as session:
            assert _NOTICE_COUNT.scalar(session) == 0
        assert any("count(*)" in statement for statement in seen), seen
    finally:
        engine.dispose()


def test_a_driver_error_is_wrapped_like_any_other(pg_db: Database) -> None:
    from sqlalchemy.exc import ProgrammingError

    with pytest.raises(ProgrammingError), pg_db.unit_of_work() as session:
        HotStatement(text("SELECT no_such_column FROM notices")).rows(session)


@pytest.fixture
def connection_killed_after_begin(pg_db: Database) -> Iterator[list[int]]:
    """Terminates the backend of the next transaction right after it begins (from another
    connection), so that the payment's first hot statement meets a dead connection. A Session
    event, not a connection event: the hot statements keep their driver path."""
    killed: list[int] = []
    admin = create_engine(str(pg_db.engine.url), isolation_level="AUTOCOMMIT")

    def kill(_session: Session, _transaction: Any, connection: Any) -> None:
        if killed:
            return
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with admin.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killed.append(pid)

    event.listen(Session, "after_begin", kill)
    try:
        yield killed
    finally:
        event.remove(Session, "after_begin", kill)
        admin.dispose()


def test_a_connection_lost_mid_payment_is_a_503_and_the_retry_pays_once(
        pg_app: Flask, pg_db: Database, pg_staff: Staff, connection_killed_after_begin: list[int]) -> None:
    client = pg_app.test_client()
    killed = connection_killed_after_begin
    killed.append(0)  # not yet: issuing the notice must go through
    number = issue(client, pg_staff).json["number"]
    # the cashier's token looked up (and cached) and the shift opened: the next transaction to
    # begin is the payment's own, and its first statement is the hot SELECT … FOR UPDATE
    assert client.get("/api/v1/shifts/current", headers=pg_staff.headers("cashier")).status_code == 200
    killed.clear()
    response = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                           headers=pg_staff.headers("cashier"))
    assert killed and killed[0] > 0, "the backend was not terminated"
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    with pg_db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 0
        assert session.scalar(select(func.count()).select_from(Receipt)) == 0
        assert session.scalar(select(Notice.status).where(Notice.number == number)) == NoticeStatus.ISSUED
    retried = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                          headers=pg_staff.headers("cashier"))
    assert retried.status_code == 201, retried.get_data(as_text=True)
    assert retried.json["receipt"]["number"].endswith("-00000001")
