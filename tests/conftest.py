"""Shared fixtures.

The database is chosen by TEST_DATABASE_URL (default: a SQLite file per test). On PostgreSQL
every test starts from empty tables (TRUNCATE with the append-only triggers silenced for that one
transaction, see _truncate_all); on SQLite every test gets a copy of a freshly migrated template file.
Under CI=true, a test that would be skipped for a missing PostgreSQL, browser or font fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.app import create_app
from core.audit import Actor
from core.cli import upgrade_database
from core.db import Database
from core.models_registry import metadata

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_FEES = PROJECT_ROOT / "demo" / "fee-schedule.csv"
AUDIT_KEY = "test-audit-key"
PASSWORD = "correct-horse-9"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://root@127.0.0.1:5432/feeservice_test"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI=true a missing service, browser or font is a failure."""
    if IN_CI:
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def _ensure_postgres_database(url: str) -> bool:
    parsed = make_url(url)
    admin = parsed.set(database="postgres")
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                 {"n": parsed.database})
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        engine.dispose()
        return True
    except Exception:
        return False


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        # The append-only tables refuse TRUNCATE (migration 0005). The replica role skips ordinary
        # triggers, the refusals included, for this transaction only (SET LOCAL; the tests connect
        # as a superuser): nothing else ever sees an unprotected table, and unlike ALTER TABLE …
        # DISABLE TRIGGER it is no DDL to undo if the process dies half-way.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO audit_chain_head (id, last_seq, last_hash) "
                          "VALUES (1, 0, :h)"), {"h": "0" * 64})
    engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """scrypt costs ~70 ms a user; the tests create several users per test."""
    import core.users

    original = core.users.PASSWORD_HASH_METHOD
    core.users.PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"
    yield
    core.users.PASSWORD_HASH_METHOD = original


@pytest.fixture(scope="session")
def database_url_factory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Returns a function giving each test an empty, migrated database URL."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured and configured.startswith("postgresql"):
        if not _ensure_postgres_database(configured):
            pytest.fail(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {configured}")
        upgrade_database(configured)

        def postgres(_name: str) -> str:
            _truncate_all(configured)
            return configured

        return postgres
    template_dir = tmp_path_factory.mktemp("template")
    template = template_dir / "template.sqlite3"
    upgrade_database(f"sqlite:///{template}")

    def sqlite(name: str) -> str:
        target = tmp_path_factory.mktemp("db") / f"{name[:40]}.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"

    return sqlite


def make_test_app(url: str, **overrides: Any) -> Flask:
    config = {
        "TESTING": True,
        "DATABASE_URL": url,
        "SECRET_KEY": "test-secret",
        "FEESVC_AUDIT_KEY": AUDIT_KEY,
        "SESSION_COOKIE_SECURE": False,
        "REMEMBER_COOKIE_SECURE": False,
        "SERVER_NAME": None,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(request: pytest.FixtureRequest, database_url_factory: Any) -> Iterator[Flask]:
    url = database_url_factory(request.node.name.replace("[", "_").replace("]", "_").replace("/", "_"))
    application = make_test_app(url)
    with application.app_context():
        yield application
    db: Database = application.extensions["db"]
    db.engine.dispose()


@pytest.fixture
def db(app: Flask) -> Database:
    database: Database = app.extensions["db"]
    return database


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Staff:
    """The demo schedule plus one user of each role (and a second window of another department)."""

    tokens: dict[str, str]
    usernames: dict[str, str]

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}


STAFF_USERS = {
    "window": ("clerk-bdc", "window", "BDC"),
    "window_other": ("clerk-ga", "window", "GA"),
    "window_zj": ("clerk-zj", "window", "ZJ"),
    "cashier": ("cashier-1", "cashier", None),
    "finance": ("finance-1", "finance", None),
    "admin": ("admin-1", "admin", None),
}


@pytest.fixture
def staff(app: Flask, db: Database) -> Staff:
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule

    actor = Actor.system("tests")
    tokens, usernames = {}, {}
    with db.unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        for key, (username, role, department) in STAFF_USERS.items():
            create_user(session, AUDIT_KEY, actor, username=username, role=role,
                        department_code=department, password=PASSWORD)
            tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
            usernames[key] = username
    return Staff(tokens=tokens, usernames=usernames)


def issue(client: FlaskClient, staff: Staff, *, items: list[dict[str, Any]] | None = None,
          department: str = "BDC", who: str = "window", **fields: Any) -> Any:
    """POST a notice through the API and return the response."""
    body = {"department": department, "payer": {"name": "张三"},
            "items": items if items is not None else [{"fee_code": "BDC-ZZ", "quantity": 1}]}
    body.update(fields)
    return client.post("/api/v1/notices", json=body, headers=staff.headers(who))


def table_counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t.name: conn.scalar(text(f"SELECT count(*) FROM {t.name}")) or 0
                for t in metadata.sorted_tables}


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL database for the tests that need real row locks and concurrency."""
    url = os.environ.get("TEST_POSTGRES_URL") or (
        os.environ["TEST_DATABASE_URL"] if os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql")
        else DEFAULT_POSTGRES_URL)
    if not _ensure_postgres_database(url):
        skip_or_fail(f"PostgreSQL not reachable at {url}")
    upgrade_database(url)
    return url


@pytest.fixture
def pg_app(postgres_url: str) -> Iterator[Flask]:
    """An app on PostgreSQL with empty tables, whatever TEST_DATABASE_URL says."""
    _truncate_all(postgres_url)
    application = make_test_app(postgres_url)
    with application.app_context():
        yield application
    application.extensions["db"].engine.dispose()
