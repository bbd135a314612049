"""Sign-in throttling under concurrency on PostgreSQL: guesses sent at the same moment by several
workers are each counted, so no more than 5 ever reach the password check (core.signin)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from sqlalchemy import func, select

from core.audit import Actor
from core.models import LoginAttempt
from core.users import create_user
from tests.conftest import AUDIT_KEY, PASSWORD, make_test_app

GUESSES = 12


def test_simultaneous_guesses_get_five_answers_and_the_rest_are_refused(pg_app: Flask) -> None:
    with pg_app.extensions["db"].unit_of_work() as session:
        create_user(session, AUDIT_KEY, Actor.system("tests"), username="target", role="finance", password=PASSWORD)
    served = make_test_app(pg_app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False,
                           DATABASE_ENGINE_OPTIONS={"pool_size": GUESSES, "max_overflow": 0})
    start = threading.Barrier(GUESSES)

    def guess(n: int) -> int:
        client = served.test_client()
        start.wait()
        return client.post("/login", data={"username": "target", "password": f"wrong-guess-{n}"}).status_code

    try:
        with ThreadPoolExecutor(GUESSES) as pool:
            statuses = sorted(pool.map(guess, range(GUESSES)))
    finally:
        served.extensions["db"].engine.dispose()
    assert statuses == [401] * 5 + [429] * (GUESSES - 5)
    with pg_app.extensions["db"].reading() as session:
        counted = session.scalar(select(func.count()).select_from(LoginAttempt)
                                 .where(LoginAttempt.outcome == "failed"))
    assert counted == 5
