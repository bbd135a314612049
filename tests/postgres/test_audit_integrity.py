"""TRUNCATE on PostgreSQL (issue 10, defect 3): row-level DELETE triggers never see it, so `TRUNCATE
audit_entries` used to wipe the log, and `audit verify` passed on the empty chain. Every append-only
table now refuses it (migration 0005), and a superuser who gets past the triggers still fails verify
on the anchors. Always on PostgreSQL (TEST_POSTGRES_URL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from core.audit import GENESIS_HASH, AnchorProblem, AuditAnchor, AuditEntry, verify_audit_chain
from core.audit_anchors import anchor_audit_day, day_end
from core.clock import today
from core.db import Database
from tests.conftest import AUDIT_KEY, Staff
from tests.postgres.conftest import seed_staff

TZ = "Asia/Shanghai"
# The tables of 0001–0004 with append-only triggers, the chain head and the anchors.
PROTECTED = ("audit_entries", "audit_chain_head", "audit_anchors", "notice_lines", "notices", "fee_items",
             "payments", "receipts", "cashier_shifts", "receipt_prints", "certificates", "bank_events",
             "security_events", "outbox_events", "webhook_delivery_attempts", "statement_lines", "bank_statements")
TRUNCATE_TRIGGER = 32  # pg_trigger.tgtype bit of TRIGGER_TYPE_TRUNCATE


def count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


def test_every_table_with_an_append_only_trigger_refuses_truncate(pg_db: Database) -> None:
    """Also for tables added later: a migration that makes a table append-only must call
    migrations.append_only.refuse_truncate for it too."""
    with pg_db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.relname, t.tgname, t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal")).all()
    guarded = {table for table, name, _type in rows if name.endswith(("_append_only", "_forward_only"))}
    refusing = {table for table, _name, kind in rows if kind & TRUNCATE_TRIGGER}
    assert set(PROTECTED) <= guarded
    assert guarded - refusing == set()
    assert set(PROTECTED) <= refusing


@pytest.mark.parametrize("table", PROTECTED)
def test_truncate_is_refused_and_nothing_is_lost(pg_db: Database, pg_staff: Staff, table: str) -> None:
    with pg_db.unit_of_work() as session:
        anchor_audit_day(session, AUDIT_KEY, today(TZ) - timedelta(days=1), timezone=TZ)
    before = {t: count(pg_db, t) for t in ("audit_entries", "audit_chain_head", "audit_anchors", "fee_items")}
    assert all(before.values()), before
    with pytest.raises(IntegrityError) as refused, pg_db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {table} CASCADE"))
    assert "TRUNCATE" in str(refused.value.orig) and "not allowed" in str(refused.value.orig)
    assert {t: count(pg_db, t) for t in before} == before
    with pg_db.reading() as session:
        assert verify_audit_chain(session, AUDIT_KEY).ok


def test_a_superuser_truncating_the_log_past_the_triggers_fails_verify(pg_app: Flask, pg_db: Database) -> None:
    seed_staff(pg_db)
    day = today(TZ)
    with pg_db.unit_of_work() as session:
        # Today's anchor as the nightly job will take it once the day is over.
        anchored = anchor_audit_day(session, AUDIT_KEY, day, timezone=TZ, now=day_end(day, TZ) + timedelta(minutes=15))
    assert anchored.last_seq > 0
    with pg_db.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # the triggers, out of the way
        conn.execute(text("TRUNCATE audit_entries"))
        conn.execute(text("UPDATE audit_chain_head SET last_seq = 0, last_hash = :g"), {"g": GENESIS_HASH})
    with pg_db.reading() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
        assert session.scalar(select(func.count()).select_from(AuditAnchor)) == 1
        report = verify_audit_chain(session, AUDIT_KEY)
    assert report.truncated and not report.ok
    assert [(m.anchor.last_seq, m.problem) for m in report.anchor_mismatches] == [
        (anchored.last_seq, AnchorProblem.MISSING)]
    result = pg_app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1 and "审计日志已被清空" in result.output
