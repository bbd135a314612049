"""Fixtures of the scheduler tests: fake job tables, a fixed clock, and a PostgreSQL database of
their own (other suites truncate theirs while these run)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from core.cli import upgrade_database
from core.clock import zone
from core.db import Database
from tests.conftest import DEFAULT_POSTGRES_URL, _ensure_postgres_database, _truncate_all, make_test_app, skip_or_fail

TZ = "Asia/Shanghai"


def at(local_time: str) -> datetime:
    """'2026-03-10 09:00' in the service's zone, as an aware UTC datetime."""
    return datetime.fromisoformat(local_time).replace(tzinfo=zone(TZ)).astimezone(UTC)


def fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@pytest.fixture(scope="session")
def scheduler_postgres_url() -> str:
    """TEST_SCHEDULER_POSTGRES_URL, else `<the race tests' database>_sched` on the same server."""
    url = os.environ.get("TEST_SCHEDULER_POSTGRES_URL")
    if not url:
        base = make_url(os.environ.get("TEST_POSTGRES_URL") or (
            os.environ["TEST_DATABASE_URL"] if os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql")
            else DEFAULT_POSTGRES_URL))
        url = base.set(database=f"{base.database}_sched").render_as_string(hide_password=False)
    if not _ensure_postgres_database(url):
        skip_or_fail(f"PostgreSQL not reachable at {url}")
    upgrade_database(url)
    return url


@pytest.fixture
def sched_pg_app(scheduler_postgres_url: str) -> Iterator[Flask]:
    _truncate_all(scheduler_postgres_url)
    application = make_test_app(scheduler_postgres_url)
    with application.app_context():
        yield application
    database: Database = application.extensions["db"]
    database.engine.dispose()
