"""Serial allocation under real concurrency (issue 2: "50 notices issued concurrently get 50
distinct valid numbers, and `audit verify` says OK afterwards").

Three ways in: 50 threads calling the service layer directly, each in its own unit of work on its
own connection (PostgreSQL, and one SQLite file to prove BEGIN IMMEDIATE + the busy timeout never
surface "database is locked"), and 50 concurrent HTTP requests to a real gunicorn with 4 worker
processes on PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import event, func, select, text, update

from core.audit import Actor, AuditEntry, verify_audit_chain
from core.cli import upgrade_database
from core.db import Database
from core.models import User
from fees.models import FeeItem
from fees.service import FeeScheduleChanged, FeeScheduleRefused, import_fee_schedule
from notices.models import Notice, NoticeLine, NoticeSerial
from notices.numbers import compose_notice_number, is_valid_notice_number
from notices.service import LineRequest, issue_notice, settings_from_config
from tests.conftest import AUDIT_KEY, DEMO_FEES, PROJECT_ROOT, Staff, make_test_app
from tests.postgres.conftest import seed_staff

N = 50
BARRIER_TIMEOUT = 60


@dataclass
class Outcome:
    numbers: list[str] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)
    backend_pids: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    seconds: float = 0.0


def seed_used_schedule(database: Database) -> Staff:
    """Staff and schedule, with every fee already used by earlier notices (the steady state).

    A fee's first use sets its `in_use` flag, whose row lock would serialise the racing issuers
    before they reach the serial counter and hide a broken allocate_serial."""
    staff = seed_staff(database)
    with database.unit_of_work() as session:
        session.execute(update(FeeItem).values(in_use=True))
    return staff


def issue_concurrently(app: Flask, clerk_username: str, *, postgres: bool) -> Outcome:
    """N threads, released together by a barrier, each issuing one notice in its own session."""
    database: Database = app.extensions["db"]
    settings = settings_from_config(app.config)
    barrier = threading.Barrier(N)
    outcome = Outcome()
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            with app.app_context():
                # Like an API request: the clerk is read first, outside the write transaction.
                with database.reading() as session:
                    clerk = session.scalar(select(User).where(User.username == clerk_username))
                assert clerk is not None
                with database.unit_of_work() as session:
                    pid = None
                    if postgres:
                        # Check out this thread's own connection before the start signal, so that
                        # all N transactions really overlap. (On SQLite the first statement would
                        # already take the write lock, so there we only begin after the barrier.)
                        pid = session.scalar(text("SELECT pg_backend_pid()"))
                    barrier.wait(timeout=BARRIER_TIMEOUT)
                    notice = issue_notice(session, settings, clerk, department_code="BDC",
                                          payer_name=f"并发缴款人{i}",
                                          items=[LineRequest(fee_code="BDC-ZZ", quantity=1)])
                    number, serial = notice.number, notice.serial
            with lock:
                outcome.numbers.append(number)
                outcome.serials.append(serial)
                if pid is not None:
                    outcome.backend_pids.append(pid)
        except BaseException as exc:  # collected and reported by the test, never lost in a thread
            with lock:
                outcome.errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), name=f"issuer-{i}") for i in range(N)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_TIMEOUT + 60)
    outcome.seconds = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "an issuing thread hung"
    return outcome


def assert_fifty_good_notices(database: Database, app: Flask, numbers: list[str]) -> None:
    """50 distinct valid numbers, serials 1..50 without a gap, and an intact audit chain."""
    assert len(numbers) == N
    assert len(set(numbers)) == N, "two notices got the same number"
    invalid = [n for n in numbers if not is_valid_notice_number(n)]
    assert not invalid, f"numbers with wrong check digits: {invalid}"
    region = app.config["FEESVC_REGION_CODE"]
    with database.reading() as session:
        rows = session.execute(select(Notice.number, Notice.region_code, Notice.year, Notice.serial)).all()
        counter = session.scalar(select(NoticeSerial.last_serial).where(NoticeSerial.region_code == region))
        issued_entries = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "notice.issued"))
        report = verify_audit_chain(session, AUDIT_KEY)
    assert sorted(r.number for r in rows) == sorted(numbers)
    assert sorted(r.serial for r in rows) == list(range(1, N + 1))
    year = date.today().year
    for row in rows:
        assert row.region_code == region
        assert row.number == compose_notice_number(region, row.year, row.serial)
        assert row.year in (year - 1, year)  # tolerate a run across midnight on 31 December
    assert counter == N
    assert issued_entries == N
    assert report.ok, report
    assert report.entries > N


# --- service layer, PostgreSQL ----------------------------------------------------------------


@pytest.mark.postgres
def test_fifty_threads_issue_fifty_distinct_contiguous_numbers_on_postgres(
        pg_app: Flask, postgres_url: str) -> None:
    seed_used_schedule(pg_app.extensions["db"])
    # A pool wide enough for every thread to hold its own connection at the same time.
    app = make_test_app(postgres_url, DATABASE_ENGINE_OPTIONS={"pool_size": N, "max_overflow": 5})
    database: Database = app.extensions["db"]
    try:
        outcome = issue_concurrently(app, "clerk-bdc", postgres=True)
        assert not outcome.errors, outcome.errors[:3]
        assert len(set(outcome.backend_pids)) == N, "threads shared connections: not a real race"
        assert_fifty_good_notices(database, app, outcome.numbers)
        assert sorted(outcome.serials) == list(range(1, N + 1))
    finally:
        database.engine.dispose()


# --- service layer, SQLite ------------------------------------------------------------------


def test_fifty_threads_on_one_sqlite_file_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'concurrent.sqlite3'}"
    upgrade_database(url)
    app = make_test_app(url, DATABASE_ENGINE_OPTIONS={"pool_size": N, "max_overflow": 5})
    database: Database = app.extensions["db"]
    try:
        with app.app_context():
            seed_used_schedule(database)
        outcome = issue_concurrently(app, "clerk-bdc", postgres=False)
        locked = [e for e in outcome.errors if "locked" in str(e)]
        assert not locked, f"{len(locked)} × database is locked: {locked[0]!r}"
        assert not outcome.errors, outcome.errors[:3]
        with app.app_context():
            assert_fifty_good_notices(database, app, outcome.numbers)
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        database.engine.dispose()


# --- HTTP, gunicorn with 4 worker processes, PostgreSQL ---------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn_url(pg_app: Flask, postgres_url: str, tmp_path: Path) -> Iterator[str]:
    gunicorn = PROJECT_ROOT / ".venv" / "bin" / "gunicorn"
    if not gunicorn.exists():
        pytest.fail(f"{gunicorn} missing: run `make install`")
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": postgres_url, "SECRET_KEY": "test-secret",
           "FEESVC_AUDIT_KEY": AUDIT_KEY}
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(gunicorn), "-w", "4", "--bind", f"127.0.0.1:{port}", "--timeout", "60",
             # its default control socket in ~/.gunicorn is shared with any other gunicorn here
             "--no-control-socket", "wsgi:app"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    served = ""
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if requests.get(f"{base}/api/v1/fee-schedule", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still booting
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within 60 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
        served = log_path.read_text(errors="replace")  # what the workers logged while serving
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in served, served


@pytest.mark.postgres
def test_fifty_concurrent_http_requests_to_gunicorn_get_fifty_201s(
        pg_app: Flask, gunicorn_url: str) -> None:
    database: Database = pg_app.extensions["db"]
    staff = seed_used_schedule(database)
    barrier = threading.Barrier(N)
    statuses: list[int] = []
    numbers: list[str] = []
    bodies: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def post(i: int) -> None:
        body = {"department": "BDC", "payer": {"name": f"并发缴款人{i}"},
                "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]}
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT)
            response = requests.post(f"{gunicorn_url}/api/v1/notices", json=body,
                                     headers=staff.headers("window"), timeout=120)
            with lock:
                statuses.append(response.status_code)
                bodies.append(response.text[:300])
                if response.status_code == 201:
                    numbers.append(response.json()["number"])
        except BaseException as exc:
            with lock:
                errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_TIMEOUT + 150)
    assert not errors, errors[:3]
    assert not [s for s in statuses if s >= 500], bodies
    assert statuses == [201] * N, sorted(zip(statuses, bodies, strict=True))[:3]
    with pg_app.app_context():
        assert_fifty_good_notices(database, pg_app, numbers)


# --- a notice and a fee schedule import racing for the same fee version (PostgreSQL) ----------
#
# API.md: an import may change a version's amount "only while no notice used it". The two orders
# in which a notice's first use and an amount-changing import can interleave are forced below by
# pausing the notice's transaction at the moment it claims the version (SQLAlchemy cursor events
# on an engine only the notice uses).


def _raised_bdc_zz() -> bytes:
    lines = DEMO_FEES.read_text(encoding="utf-8").rstrip("\n").split("\n")
    return ("\n".join([lines[0], lines[1].replace(",8000,", ",9000,"), *lines[2:]]) + "\n").encode()


class PausedNotice:
    """Issues one BDC-ZZ notice in a thread, pausing before or after it claims the fee version."""

    def __init__(self, postgres_url: str, *, pause: str) -> None:
        self.app = make_test_app(postgres_url)
        self.reached = threading.Event()
        self.release = threading.Event()
        self.number: str | None = None
        self.error: BaseException | None = None
        self._paused = False
        engine = self.app.extensions["db"].engine

        def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE FEE_ITEMS") and not self._paused:
                self._paused = True
                self.reached.set()
                self.release.wait(timeout=30)

        event.listen(engine, "before_cursor_execute" if pause == "before-claim" else "after_cursor_execute", hook)
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        database: Database = self.app.extensions["db"]
        try:
            with self.app.app_context():
                with database.reading() as session:
                    clerk = session.scalar(select(User).where(User.username == "clerk-bdc"))
                assert clerk is not None
                with database.unit_of_work() as session:
                    notice = issue_notice(session, settings_from_config(self.app.config), clerk,
                                          department_code="BDC", payer_name="张三",
                                          items=[LineRequest(fee_code="BDC-ZZ", quantity=1)])
                    self.number = notice.number
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> PausedNotice:
        self.thread.start()
        assert self.reached.wait(timeout=30), "the notice never reached the fee version"
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self.thread.join(timeout=30)
        self.app.extensions["db"].engine.dispose()


def _import(app: Flask, content: bytes) -> BaseException | None:
    try:
        with app.app_context(), app.extensions["db"].unit_of_work() as session:
            import_fee_schedule(session, AUDIT_KEY, Actor.system("fees import"), content)
    except BaseException as exc:
        return exc
    return None


def _bdc_zz(database: Database) -> tuple[int, bool, list[int]]:
    with database.reading() as session:
        fee = session.scalar(select(FeeItem).where(FeeItem.code == "BDC-ZZ"))
        assert fee is not None
        used_at = list(session.scalars(select(NoticeLine.unit_amount).where(NoticeLine.fee_item_id == fee.id)))
        return fee.amount, fee.in_use, used_at


@pytest.mark.postgres
def test_an_import_that_changes_the_price_before_the_notice_claims_it_makes_the_notice_retry(
        pg_app: Flask, postgres_url: str) -> None:
    database: Database = pg_app.extensions["db"]
    seed_staff(database)
    with PausedNotice(postgres_url, pause="before-claim") as paused:
        # The notice has priced BDC-ZZ at 8000 but not claimed it yet: the import may still
        # change the amount, since no notice has used the version.
        assert _import(pg_app, _raised_bdc_zz()) is None
    assert isinstance(paused.error, FeeScheduleChanged), repr(paused.error)
    assert paused.number is None
    amount, in_use, used_at = _bdc_zz(database)
    assert (amount, in_use, used_at) == (9000, False, [])
    with database.reading() as session:
        assert verify_audit_chain(session, AUDIT_KEY).ok


@pytest.mark.postgres
def test_an_import_that_changes_the_price_after_the_notice_claimed_it_waits_and_is_refused(
        pg_app: Flask, postgres_url: str) -> None:
    database: Database = pg_app.extensions["db"]
    seed_staff(database)
    outcome: list[BaseException | None] = []
    with PausedNotice(postgres_url, pause="after-claim") as paused:
        importer = threading.Thread(target=lambda: outcome.append(_import(pg_app, _raised_bdc_zz())))
        importer.start()
        importer.join(timeout=1.5)
        assert importer.is_alive(), "the import must wait for the notice's transaction"
    importer.join(timeout=30)
    assert paused.error is None, repr(paused.error)
    assert paused.number is not None
    [error] = outcome
    assert isinstance(error, FeeScheduleRefused), repr(error)
    assert "第 2 行" in str(error) and "BDC-ZZ" in str(error)
    # The version keeps the price the notice was issued at.
    assert _bdc_zz(database) == (8000, True, [8000])
    with database.reading() as session:
        assert verify_audit_chain(session, AUDIT_KEY).ok
