"""The confirm path's shape (bench/RESULTS-payments.md): the receipt counter and the audit chain head
are taken last, nothing but the final writes follows them, no lazy loads; and the bearer-token
cache forgets a revoked token at once in this process and within its TTL elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text

import core.auth
from core.audit import Actor
from core.db import Database
from core.models import ApiToken
from core.users import hash_token, revoke_token
from tests.conftest import AUDIT_KEY, Staff, issue

# What may follow the first serialisation point: the second one, and the final writes (on
# PostgreSQL the audit entry and the head's hash are one statement, WITH new_entry AS (INSERT …) UPDATE).
AFTER_COUNTER = re.compile(
    r"^(UPDATE audit_chain_head|INSERT INTO (receipts|audit_entries|outbox_events)|UPDATE bank_events"
    r"|WITH new_entry AS \(INSERT INTO audit_entries .*\) UPDATE audit_chain_head)\b")


def inserted_tables(statements: list[str]) -> set[str]:
    return {table for s in statements for table in re.findall(r"INSERT INTO (\w+)", s)}


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def new_notice(client: FlaskClient, staff: Staff) -> str:
    response = issue(client, staff)
    assert response.status_code == 201, response.json
    return str(response.json["number"])


def after_counter(seen: list[str]) -> list[str]:
    first = next(i for i, s in enumerate(seen) if s.startswith("UPDATE receipt_counters"))
    return seen[first + 1:]


def test_a_cashier_confirmation_takes_the_counter_and_the_audit_head_last(client: FlaskClient, staff: Staff,
                                                                         db: Database) -> None:
    first, second = new_notice(client, staff), new_notice(client, staff)
    # the first payment of the year inserts the counter row and opens the shift
    assert client.post(f"/api/v1/notices/{first}/payments", json={"amount": 8000, "method": "cash"},
                       headers=staff.headers("cashier")).status_code == 201
    with statements(db) as seen:
        response = client.post(f"/api/v1/notices/{second}/payments", json={"amount": 8000, "method": "cash"},
                               headers=staff.headers("cashier"))
    assert response.status_code == 201, response.json
    assert response.json["payment"]["cashier"] == staff.usernames["cashier"]
    assert response.json["receipt"]["notice_number"] == second
    tail = after_counter(seen)
    assert all(AFTER_COUNTER.match(s) for s in tail), tail
    assert sum("UPDATE audit_chain_head" in s for s in tail) == 2
    assert inserted_tables(tail) == {"receipts", "audit_entries", "outbox_events"}
    # before it: the notice locked (with the cashier's open shift in the same SELECT), the payment,
    # the notice marked paid; the token came from the cache
    head = seen[:len(seen) - len(tail) - 1]
    assert [s.split()[0] for s in head if not s.startswith(("BEGIN", "SAVEPOINT", "RELEASE"))] == [
        "SELECT", "INSERT", "UPDATE"], head
    assert "cashier_shifts" in head[-3], head
    assert "notice_lines" not in " ".join(seen) and "FROM users" not in " ".join(seen)


def test_an_idempotency_key_is_claimed_in_one_statement(client: FlaskClient, staff: Staff, db: Database) -> None:
    number = new_notice(client, staff)
    with statements(db) as seen:
        response = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                               headers=staff.headers("cashier", **{"Idempotency-Key": "k-1"}))
    assert response.status_code == 201
    idempotency = [s for s in seen if "idempotency_keys" in s]
    assert [s.split()[0] for s in idempotency] == ["INSERT", "UPDATE"], idempotency
    replay = client.post(f"/api/v1/notices/{number}/payments", json={"amount": 8000, "method": "cash"},
                         headers=staff.headers("cashier", **{"Idempotency-Key": "k-1"}))
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json == response.json


def _shifts(client: FlaskClient, staff: Staff) -> int:
    return int(client.get("/api/v1/shifts/current", headers=staff.headers("cashier")).status_code)


def _token_id(db: Database, token: str) -> int:
    with db.reading() as session:
        token_id = session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token)))
        assert token_id is not None
        return int(token_id)


def test_a_token_revoked_in_this_process_is_refused_at_once(client: FlaskClient, staff: Staff,
                                                            db: Database) -> None:
    assert _shifts(client, staff) == 200  # now cached
    with db.unit_of_work() as session:
        revoke_token(session, AUDIT_KEY, Actor.system("tests"), _token_id(db, staff.tokens["cashier"]))
    assert _shifts(client, staff) == 401


def test_a_token_revoked_elsewhere_works_at_most_for_the_cache_ttl(client: FlaskClient, staff: Staff,
                                                                   db: Database,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert _shifts(client, staff) == 200  # now cached
    # another process (a CLI command, another worker) revokes it: this process hears nothing
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE token_hash = :h"),
                     {"h": hash_token(staff.tokens["cashier"])})
    assert _shifts(client, staff) == 200
    later = core.auth.time.monotonic() + core.auth.TOKEN_CACHE_SECONDS + 0.1
    monkeypatch.setattr(core.auth.time, "monotonic", lambda: later)
    assert _shifts(client, staff) == 401


def test_without_the_token_cache_a_revocation_elsewhere_is_seen_at_once(app: Flask, client: FlaskClient,
                                                                       staff: Staff, db: Database,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "FEESVC_TOKEN_CACHE_SECONDS", 0)
    assert _shifts(client, staff) == 200
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE token_hash = :h"),
                     {"h": hash_token(staff.tokens["cashier"])})
    assert _shifts(client, staff) == 401


def test_unknown_tokens_are_not_cached(app: Flask, client: FlaskClient, staff: Staff) -> None:
    for i in range(20):
        assert client.get("/api/v1/shifts/current", headers={"Authorization": f"Bearer fs_nope{i}"}).status_code == 401
    assert len(app.extensions.get("feeservice.token_cache", {})) == 0
