"""Payment races (issue 3): whatever happens at once, one notice has at most one confirmed payment and
one valid receipt, receipt numbers stay gap-free, and an Idempotency-Key never pays twice.

- 50 threads, each in its own transaction on its own PostgreSQL connection, confirm one notice at
  the same moment (a barrier releases them): 1 payment, 1 receipt, 49 clean NoticeAlreadyPaid.
- The same race over HTTP against a real gunicorn (4 workers × 4 threads), on PostgreSQL and on a
  SQLite file: one 201, 49 × 409 notice-already-paid, no 5xx.
- 200 concurrent confirmations of different notices, a third failing on purpose (wrong amount,
  already paid, or rolled back after the receipt number was taken): the successes' receipt numbers
  are exactly 1..N.
- 10 concurrent requests with one Idempotency-Key: one payment; the others wait for the first's
  transaction (the key is claimed in it) and replay its answer: ten 201s, nine replayed.
After each, the audit chain verifies.

The PostgreSQL tests use a database of their own (`<test database>_payments`), emptied before each
test, so that a gunicorn serving it can live for the whole module and a concurrent run of the other
PostgreSQL tests (which TRUNCATE `feeservice_test`) cannot disturb them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

import payments.service
from core.audit import AuditEntry, verify_audit_chain
from core.cli import upgrade_database
from core.clock import today
from core.db import Database
from core.idempotency import IdempotencyRecord
from core.models import User
from notices.models import Notice, NoticeStatus
from notices.service import LineRequest, NoticeAlreadyPaid, issue_notice, settings_from_config
from payments.models import CashierShift, Payment
from payments.service import AmountMismatch, confirm_cashier_payment, current_shift
from receipts.models import Receipt, ReceiptCounter
from receipts.service import receipt_settings
from tests.conftest import (
    AUDIT_KEY,
    PROJECT_ROOT,
    Staff,
    _ensure_postgres_database,
    _truncate_all,
    make_test_app,
    skip_or_fail,
)
from tests.postgres.conftest import seed_staff

pytestmark = pytest.mark.timeout(120)

N_RACERS = 50
BARRIER_TIMEOUT = 60
TOTAL = 8000  # BDC-ZZ × 1 in demo/fee-schedule.csv
MODULE_LOCK_KEY = 0x7061_7972_6163_6573 >> 1  # "payraces", fits a bigint
# gunicorn 27's default control socket (~/.gunicorn/gunicorn.ctl) would be shared by both servers here
GUNICORN_ARGS = ["-w", "4", "--threads", "4", "--timeout", "60", "--no-control-socket"]


# --- databases and apps -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payments_pg_url(postgres_url: str) -> Iterator[str]:
    """A sibling of the test database, for this module alone.

    Held under an advisory lock for the whole module, so that two runs of this module at the same
    time (two people running the suite on one server) queue instead of emptying each other's tables."""
    parsed = make_url(postgres_url)
    url = parsed.set(database=f"{parsed.database}_payments").render_as_string(hide_password=False)
    if not _ensure_postgres_database(url):
        skip_or_fail(f"cannot create the database of {url}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MODULE_LOCK_KEY})
            upgrade_database(url)
            yield url
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MODULE_LOCK_KEY})
    finally:
        engine.dispose()


@dataclass
class Env:
    """An in-process app on the database under test (for seeding and checking) and its staff."""

    app: Flask
    staff: Staff

    @property
    def db(self) -> Database:
        database: Database = self.app.extensions["db"]
        return database

    def user(self, username: str) -> User:
        with self.db.reading() as session:
            user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        return user

    def issue(self, count: int, quantity: int = 1) -> list[str]:
        """`count` notices of BDC-ZZ × quantity, issued through the service layer in one go."""
        settings = settings_from_config(self.app.config)
        clerk = self.user("clerk-bdc")
        with self.db.unit_of_work() as session:
            return [issue_notice(session, settings, clerk, department_code="BDC", payer_name=f"竞态缴款人{i}",
                                 items=[LineRequest(fee_code="BDC-ZZ", quantity=quantity)]).number
                    for i in range(count)]

    def open_shift(self, username: str = "cashier-1") -> None:
        """The steady state at the window: the cashier's shift is already open (see the xfail test)."""
        cashier = self.user(username)
        with self.db.unit_of_work() as session:
            current_shift(session, cashier)

    def facts(self, number: str) -> tuple[int, int, str]:
        """(confirmed payments, receipts, status) of one notice."""
        with self.db.reading() as session:
            notice = session.scalar(select(Notice).where(Notice.number == number))
            assert notice is not None
            payments_ = session.scalar(select(func.count()).select_from(Payment)
                                       .where(Payment.notice_id == notice.id, Payment.status == "confirmed"))
            receipts_ = session.scalar(select(func.count()).select_from(Receipt).where(Receipt.notice_id == notice.id))
            return int(payments_ or 0), int(receipts_ or 0), notice.status

    def assert_audit_chain_ok(self) -> None:
        with self.db.reading() as session:
            report = verify_audit_chain(session, AUDIT_KEY)
        assert report.ok, report

    def receipt_sequences(self) -> list[int]:
        with self.db.reading() as session:
            return sorted(session.scalars(select(Receipt.sequence)).all())


def _env(url: str, pool_size: int) -> Generator[Env]:
    app = make_test_app(url, DATABASE_ENGINE_OPTIONS={"pool_size": pool_size, "max_overflow": 5,
                                                      "pool_timeout": BARRIER_TIMEOUT})
    try:
        with app.app_context():
            yield Env(app=app, staff=seed_staff(app.extensions["db"]))
    finally:
        app.extensions["db"].engine.dispose()


@pytest.fixture
def pg(payments_pg_url: str) -> Iterator[Env]:
    """Empty tables, the demo schedule and staff, and a pool wide enough for every racer."""
    _truncate_all(payments_pg_url)
    yield from _env(payments_pg_url, pool_size=N_RACERS)


# --- gunicorn -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    """A real gunicorn serving wsgi:app on a free port; always terminated by stop()."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        executable = PROJECT_ROOT / ".venv" / "bin" / "gunicorn"
        if not executable.exists():
            pytest.fail(f"{executable} missing: run `make install`")
        self.log_path = log_path
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "test-secret",
               "FEESVC_AUDIT_KEY": AUDIT_KEY}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(executable), *GUNICORN_ARGS, "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        with requests.Session() as http:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
                try:
                    with http.get(f"{self.base}/api/v1/fee-schedule", timeout=5) as response:
                        if response.status_code == 200:
                            return
                except requests.RequestException:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer within {seconds} s:\n{self.log()}")
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Servers:
    """One gunicorn per backend, started on first use and kept for the module."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, Gunicorn] = {}

    def get(self, name: str, database_url: str) -> Gunicorn:
        if name not in self.running:
            server = Gunicorn(database_url, self.directory / f"gunicorn-{name}.log")
            self.running[name] = server
            server.wait_ready()
        return self.running[name]

    def stop_all(self) -> list[str]:
        """Stop every server; return the logs that show a traceback."""
        bad = []
        for server in self.running.values():
            server.stop()
            if "Traceback" in server.log():
                bad.append(server.log())
        return bad


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(tmp_path_factory.mktemp("gunicorn"))
    bad: list[str] = []
    try:
        yield pool
    finally:
        bad = pool.stop_all()
    assert not bad, "gunicorn logged a traceback:\n" + "\n----\n".join(bad)


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file shared by the SQLite HTTP tests (each works on notices of its own)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'payments.sqlite3'}"
    upgrade_database(url)
    return url


@dataclass
class Http:
    env: Env
    base: str
    backend: str


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def http(request: pytest.FixtureRequest, servers: Servers) -> Iterator[Http]:
    """gunicorn on the backend named by the parameter, and an in-process app on the same database."""
    if request.param == "postgresql":
        url = request.getfixturevalue("payments_pg_url")
        _truncate_all(url)  # harmless for the running gunicorn: it keeps nothing between requests
        envs = _env(url, pool_size=5)
    else:
        url = request.getfixturevalue("sqlite_file")
        envs = _sqlite_env(url)
    env = next(envs)
    try:
        yield Http(env=env, base=servers.get(request.param, url).base, backend=request.param)
    finally:
        envs.close()


_sqlite_staff: dict[str, Staff] = {}


def _sqlite_env(url: str) -> Generator[Env]:
    """Like _env, but the staff are seeded once per file (users are unique; no TRUNCATE here)."""
    app = make_test_app(url)
    try:
        with app.app_context():
            if url not in _sqlite_staff:
                _sqlite_staff[url] = seed_staff(app.extensions["db"])
            yield Env(app=app, staff=_sqlite_staff[url])
    finally:
        app.extensions["db"].engine.dispose()


@dataclass
class Reply:
    status: int
    body: str
    content_type: str
    replayed: bool

    @property
    def problem(self) -> str:
        """The problem code at the end of `type`, or '' for a success."""
        if self.status < 400:
            return ""
        return str(json.loads(self.body).get("type", "")).rsplit("/", 1)[-1]


def post_concurrently(url: str, bodies: list[Any], headers: list[dict[str, str]]) -> list[Reply]:
    """One thread and one connection per request, all released together by a barrier."""
    barrier = threading.Barrier(len(bodies))
    replies: list[Reply | None] = [None] * len(bodies)
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            with requests.Session() as http:
                barrier.wait(timeout=BARRIER_TIMEOUT)
                with http.post(url, json=bodies[i], headers=headers[i], timeout=120) as response:
                    replies[i] = Reply(response.status_code, response.text, response.headers.get("Content-Type", ""),
                                       response.headers.get("Idempotent-Replayed") == "true")
        except BaseException as exc:  # reported by the test, never lost in a thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=post, args=(i,), name=f"client-{i}") for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_TIMEOUT + 120)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert not errors, errors[:3]
    done = [r for r in replies if r is not None]
    assert len(done) == len(bodies)
    return done


# --- service-layer races, PostgreSQL --------------------------------------------------------------


@dataclass
class RaceResult:
    receipts: dict[int, str] = field(default_factory=dict)  # task index → receipt number
    refused: dict[int, BaseException] = field(default_factory=dict)  # task index → expected domain error
    errors: list[BaseException] = field(default_factory=list)  # anything else
    backend_pids: set[int] = field(default_factory=set)


def race_confirmations(env: Env, tasks: list[tuple[str, int]], *, expected: tuple[type[BaseException], ...],
                       hold_connection: bool) -> RaceResult:
    """One thread per (notice number, amount), each in its own unit of work, released together.

    With hold_connection, every thread checks out its connection before the barrier (so that all
    transactions really overlap; the pool must be as wide as the task list). Without it, the threads
    queue for the pool's connections after the barrier."""
    settings = receipt_settings(env.app.config)
    cashier = env.user("cashier-1")  # read first, outside the write transaction, like the API
    barrier = threading.Barrier(len(tasks))
    result = RaceResult()
    lock = threading.Lock()

    def confirm(i: int) -> None:
        number, amount = tasks[i]
        try:
            # A request context, as in the API: the domain errors' messages are translated.
            with env.app.test_request_context():
                if not hold_connection:
                    barrier.wait(timeout=BARRIER_TIMEOUT)
                with env.db.unit_of_work() as session:
                    if hold_connection:
                        pid = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
                        with lock:
                            result.backend_pids.add(pid)
                        barrier.wait(timeout=BARRIER_TIMEOUT)
                    confirmation = confirm_cashier_payment(session, settings, cashier, notice_number=number,
                                                           amount=amount, method="cash")
                    receipt_number = confirmation.receipt.number
            with lock:
                result.receipts[i] = receipt_number
        except expected as exc:
            with lock:
                result.refused[i] = exc
        except BaseException as exc:  # collected and reported by the test
            with lock:
                result.errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=confirm, args=(i,), name=f"cashier-{i}") for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=BARRIER_TIMEOUT + 60)
    assert not any(t.is_alive() for t in threads), "a confirming thread hung"
    return result


@pytest.mark.postgres
def test_fifty_threads_confirming_one_notice_make_one_payment_and_forty_nine_already_paid(pg: Env) -> None:
    (number,) = pg.issue(1)
    result = race_confirmations(pg, [(number, TOTAL)] * N_RACERS, expected=(NoticeAlreadyPaid,),
                                hold_connection=True)
    assert not result.errors, result.errors[:3]
    assert len(result.backend_pids) == N_RACERS, "threads shared connections: not a real race"
    assert len(result.receipts) == 1
    assert len(result.refused) == N_RACERS - 1
    assert all(isinstance(e, NoticeAlreadyPaid) for e in result.refused.values())
    assert list(result.receipts.values()) == [f"{today(pg.app.config['FEESVC_TIMEZONE']).year}-00000001"]
    assert pg.facts(number) == (1, 1, NoticeStatus.PAID)
    with pg.db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 1
        assert session.scalar(select(func.sum(ReceiptCounter.last_number))) == 1
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "payment.confirmed")) == 1
    pg.assert_audit_chain_ok()


class LateFailure(RuntimeError):
    """Raised on purpose after the receipt number was taken: the transaction must give it back."""


@pytest.mark.postgres
def test_two_hundred_concurrent_confirmations_a_third_failing_leave_receipt_numbers_without_gaps(
        pg: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    good, wrong_amount, late = pg.issue(133), pg.issue(23), pg.issue(22)
    duplicates = good[::6][:22]  # paid twice at once: one of the two is refused as already paid
    tasks = ([(n, TOTAL) for n in good] + [(n, TOTAL) for n in duplicates]
             + [(n, TOTAL - 1) for n in wrong_amount] + [(n, TOTAL) for n in late])
    assert len(tasks) == 200
    tasks = tasks[::2] + tasks[1::2]  # interleave the kinds
    pg.open_shift()

    doomed = set(late)
    real_append_audit = payments.service.append_audit

    def append_audit_or_fail(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("after", {}).get("notice") in doomed:
            raise LateFailure("failing after the receipt counter was taken")
        return real_append_audit(*args, **kwargs)

    monkeypatch.setattr(payments.service, "append_audit", append_audit_or_fail)
    # 200 threads share 16 connections (PostgreSQL allows 100 clients in all): they queue for them.
    narrow = make_test_app(pg.db.url, DATABASE_ENGINE_OPTIONS={"pool_size": 16, "max_overflow": 0,
                                                              "pool_timeout": BARRIER_TIMEOUT})
    try:
        result = race_confirmations(Env(app=narrow, staff=pg.staff), tasks,
                                    expected=(NoticeAlreadyPaid, AmountMismatch, LateFailure), hold_connection=False)
    finally:
        narrow.extensions["db"].engine.dispose()
    monkeypatch.undo()

    assert not result.errors, result.errors[:3]
    kinds = Counter(type(e).__name__ for e in result.refused.values())
    assert kinds == {"NoticeAlreadyPaid": 22, "AmountMismatch": 23, "LateFailure": 22}, kinds
    assert len(result.receipts) == 133
    sequences = sorted(int(number.rsplit("-", 1)[1]) for number in result.receipts.values())
    assert sequences == list(range(1, 134)), "receipt numbers of the successes have gaps or repeats"
    assert pg.receipt_sequences() == list(range(1, 134))
    with pg.db.reading() as session:
        assert session.scalar(select(func.sum(ReceiptCounter.last_number))) == 133
    paid_numbers = {tasks[i][0] for i in result.receipts}
    assert paid_numbers == set(good)
    for number in good[:5] + duplicates[:5]:
        assert pg.facts(number) == (1, 1, NoticeStatus.PAID)
    for number in wrong_amount[:5] + late[:5]:
        assert pg.facts(number) == (0, 0, NoticeStatus.ISSUED)
    pg.assert_audit_chain_ok()


@pytest.mark.postgres
def test_concurrent_first_payments_of_a_shift_all_succeed(pg: Env) -> None:
    numbers = pg.issue(10)
    result = race_confirmations(pg, [(n, TOTAL) for n in numbers], expected=(), hold_connection=True)
    if result.errors:
        raise result.errors[0]
    assert len(result.receipts) == 10
    with pg.db.reading() as session:
        assert session.scalar(select(func.count()).select_from(CashierShift)) == 1


# --- the same races over HTTP, gunicorn with 4 workers × 4 threads ---------------------------------


def test_fifty_concurrent_http_payments_of_one_notice_get_one_201_and_forty_nine_409s(http: Http) -> None:
    env = http.env
    (number,) = env.issue(1)
    receipts_before = env.receipt_sequences()
    replies = post_concurrently(f"{http.base}/api/v1/notices/{number}/payments",
                                [{"amount": TOTAL, "method": "cash"}] * N_RACERS,
                                [env.staff.headers("cashier")] * N_RACERS)
    assert not [r for r in replies if r.status >= 500], [r.body[:300] for r in replies if r.status >= 500][:3]
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 1, 409: N_RACERS - 1}, (statuses, replies[0].body[:400])
    refused = [r for r in replies if r.status == 409]
    assert {r.problem for r in refused} == {"notice-already-paid"}
    assert all(r.content_type.startswith("application/problem+json") for r in refused)
    (won,) = [r for r in replies if r.status == 201]
    receipt = json.loads(won.body)["receipt"]
    assert receipt["notice_number"] == number
    expected_sequence = (receipts_before[-1] if receipts_before else 0) + 1
    assert int(receipt["number"].rsplit("-", 1)[1]) == expected_sequence
    assert env.facts(number) == (1, 1, NoticeStatus.PAID)
    assert env.receipt_sequences() == list(range(1, expected_sequence + 1))
    env.assert_audit_chain_ok()


def test_one_idempotency_key_sent_ten_times_at_once_pays_once(http: Http) -> None:
    env = http.env
    (number,) = env.issue(1)
    key = f"race-{http.backend}-{number}"
    url = f"{http.base}/api/v1/notices/{number}/payments"
    body: dict[str, Any] = {"amount": TOTAL, "method": "card"}
    headers = env.staff.headers("cashier", **{"Idempotency-Key": key})
    replies = post_concurrently(url, [body] * 10, [headers] * 10)

    assert not [r for r in replies if r.status >= 500], [r.body[:300] for r in replies if r.status >= 500][:3]
    created = [r for r in replies if r.status == 201]
    assert len(created) == 10, Counter(r.status for r in replies)
    assert len({r.body for r in created}) == 1, "a replay differs from the first answer"
    assert sum(not r.replayed for r in created) == 1, "the view ran more than once"
    assert env.facts(number) == (1, 1, NoticeStatus.PAID)

    # Once settled, the key replays the first answer byte for byte, and refuses another body.
    with requests.Session() as client:
        with client.post(url, json=body, headers=headers, timeout=30) as again:
            assert (again.status_code, again.text) == (201, created[0].body)
            assert again.headers.get("Idempotent-Replayed") == "true"
        with client.post(url, json={**body, "method": "cash"}, headers=headers, timeout=30) as reuse:
            assert reuse.status_code == 422
            assert reuse.json()["type"].endswith("/idempotency-key-reuse")
    with env.db.reading() as session:
        records = session.scalars(select(IdempotencyRecord).where(IdempotencyRecord.key == key)).all()
    assert len(records) == 1 and records[0].completed_at is not None and records[0].response_status == 201
    assert env.facts(number) == (1, 1, NoticeStatus.PAID)
    env.assert_audit_chain_ok()
