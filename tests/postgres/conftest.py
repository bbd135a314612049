"""Fixtures for the PostgreSQL tests: the same staff as tests/conftest.py's `staff`, seeded on
whichever database they are given (pg_app, or a SQLite file of a test's own)."""

from __future__ import annotations

import pytest
from flask import Flask

from core.audit import Actor
from core.db import Database
from tests.conftest import AUDIT_KEY, DEMO_FEES, PASSWORD, STAFF_USERS, Staff


def seed_staff(database: Database) -> Staff:
    """Load the demo fee schedule and create one user (with a token) of each role."""
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule

    actor = Actor.system("tests")
    tokens, usernames = {}, {}
    with database.unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        for key, (username, role, department) in STAFF_USERS.items():
            create_user(session, AUDIT_KEY, actor, username=username, role=role,
                        department_code=department, password=PASSWORD)
            tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
            usernames[key] = username
    return Staff(tokens=tokens, usernames=usernames)


@pytest.fixture
def pg_db(pg_app: Flask) -> Database:
    database: Database = pg_app.extensions["db"]
    return database


@pytest.fixture
def pg_staff(pg_db: Database) -> Staff:
    return seed_staff(pg_db)
