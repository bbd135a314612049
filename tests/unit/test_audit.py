"""The audit log: every state change is recorded, and the keyed hash chain catches whoever
alters or deletes history behind the application's back (issue 2, "Audit").

These run on whatever TEST_DATABASE_URL says (SQLite by default, PostgreSQL in CI). The attacker
is privileged: it first gets rid of the append-only triggers (SQLite: DROP TRIGGER; PostgreSQL:
ALTER TABLE … DISABLE TRIGGER USER, re-enabled in the same transaction so that no other test
ever sees the table unprotected).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable

from core.audit import GENESIS_HASH, AuditChainHead, AuditEntry, verify_audit_chain
from core.db import Database
from fees.service import import_fee_schedule
from notices.models import Notice, NoticeLine
from tests.conftest import AUDIT_KEY, DEMO_FEES, STAFF_USERS, Staff, issue

# --- helpers -----------------------------------------------------------------------------------

SEEDED = 5 + 11 + 2 * len(STAFF_USERS)  # departments, fee versions, users and their tokens


def is_postgres(db: Database) -> bool:
    return db.engine.dialect.name == "postgresql"


def entries(db: Database, action: str | None = None) -> list[AuditEntry]:
    with db.reading() as session:
        query = select(AuditEntry).order_by(AuditEntry.seq)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(session.scalars(query))


def verify(db: Database, key: str = AUDIT_KEY) -> Any:
    with db.reading() as session:
        return verify_audit_chain(session, key)


@contextmanager
def attacker(db: Database, tables: Sequence[str] = ("audit_entries", "audit_chain_head")) -> Iterator[Connection]:
    """A connection on which the append-only triggers of `tables` are out of the way."""
    with db.engine.begin() as conn:
        if is_postgres(db):
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for table in tables:
                names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                          "AND tbl_name = :t"), {"t": table}).scalars().all()
                for name in names:
                    conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn
        if is_postgres(db):
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


def as_attacker(db: Database, *statements: Executable) -> None:
    with attacker(db) as conn:
        for statement in statements:
            conn.execute(statement)


def mac_content(entry: AuditEntry) -> bytes:
    """What an entry's MAC covers, as core.audit computes it (checked by a test below)."""
    return json.dumps(
        [entry.seq, entry.occurred_at.isoformat(), entry.actor_type, entry.actor_id, entry.actor_name,
         entry.action, entry.entity_type, entry.entity_id, entry.before, entry.after, entry.prev_hash],
        ensure_ascii=False, separators=(",", ":"),
    ).encode()


def history(client: FlaskClient, staff: Staff) -> str:
    """A normal day: the seeded staff and schedule, two notices issued, one cancelled."""
    first = issue(client, staff)
    assert first.status_code == 201, first.json
    second = issue(client, staff, items=[{"fee_code": "BDC-GBF", "quantity": 3}])
    assert second.status_code == 201, second.json
    cancelled = client.post(f"/api/v1/notices/{first.json['number']}/cancel", json={"reason": "申请人撤回申请"},
                            headers=staff.headers("window"))
    assert cancelled.status_code == 200, cancelled.json
    return str(first.json["number"])


def recent(moment: datetime) -> bool:
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


# --- every state change is recorded --------------------------------------------------------


def test_seeding_records_departments_fees_users_and_tokens(staff: Staff, db: Database) -> None:
    everything = entries(db)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    by_action: dict[str, list[AuditEntry]] = {}
    for entry in everything:
        by_action.setdefault(entry.action, []).append(entry)
    assert {a: len(v) for a, v in by_action.items()} == {
        "department.created": 5, "fee.created": 11, "user.created": len(STAFF_USERS),
        "token.created": len(STAFF_USERS)}
    for entry in everything:
        assert (entry.actor_type, entry.actor_name, entry.actor_id) == ("system", "tests", None)
        assert recent(entry.occurred_at)
        assert entry.before is None
    departments = {json.loads(e.after)["code"]: json.loads(e.after) for e in by_action["department.created"]}
    assert departments["BDC"] == {"code": "BDC", "name": "县不动产登记中心"}
    fees = [json.loads(e.after) for e in by_action["fee.created"]]
    zj = sorted((f for f in fees if f["code"] == "ZJ-PTF"), key=lambda f: f["effective_from"])
    assert [(f["amount"], f["effective_from"], f["effective_to"]) for f in zj] == [
        (12000, "2025-01-01", "2026-06-30"), (13500, "2026-07-01", None)]
    assert {f["department"] for f in fees} == {"BDC", "GA", "CG", "ZJ", "RF"}
    users = {json.loads(e.after)["username"]: json.loads(e.after) for e in by_action["user.created"]}
    assert users["clerk-bdc"] == {"username": "clerk-bdc", "role": "window", "department": "BDC"}
    assert users["admin-1"] == {"username": "admin-1", "role": "admin", "department": None}
    assert {e.entity_type for e in by_action["user.created"]} == {"user"}
    tokens = [json.loads(e.after) for e in by_action["token.created"]]
    assert {t["user"] for t in tokens} == {u for u, _r, _d in STAFF_USERS.values()}
    for entry, secret in zip(by_action["token.created"], staff.tokens.values(), strict=True):
        assert entry.entity_type == "api_token"
        # The token is shown once and never stored, not even in the audit log; nor is any password.
        assert secret not in (entry.after or "")
        assert secret[10:] not in (entry.after or "")
    assert not any("password" in (e.after or "") for e in everything)


def test_issuing_and_cancelling_a_notice_record_the_clerk_and_the_change(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    before = len(entries(db))
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 2},
                                           {"fee_code": "BDC-GBF", "quantity": 1,
                                            "override_amount": 0, "override_reason": "首本免收"}],
                     case_reference="2026-BDC-001")
    assert response.status_code == 201, response.json
    number = response.json["number"]
    [issued] = entries(db, "notice.issued")
    assert issued.seq == before + 1
    assert (issued.actor_type, issued.actor_name) == ("user", "clerk-bdc")
    assert issued.actor_id is not None
    assert (issued.entity_type, issued.entity_id) == ("notice", number)
    assert recent(issued.occurred_at)
    assert issued.before is None
    after = json.loads(issued.after)
    assert after["department"] == "BDC"
    assert after["payer_name"] == "张三"
    assert after["total"] == 16000
    assert after["due_date"] == response.json["due_date"]
    assert [line[0] for line in after["lines"]] == ["BDC-ZZ", "BDC-GBF"]
    assert after["lines"][1][-1] == "首本免收"  # the override and its reason are on record

    cancel = client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "申请人撤回申请"},
                         headers=staff.headers("window"))
    assert cancel.status_code == 200, cancel.json
    [cancelled] = entries(db, "notice.cancelled")
    assert cancelled.seq == before + 2
    assert (cancelled.actor_type, cancelled.actor_name, cancelled.actor_id) == ("user", "clerk-bdc",
                                                                               issued.actor_id)
    assert (cancelled.entity_type, cancelled.entity_id) == ("notice", number)
    assert json.loads(cancelled.before) == {"status": "issued"}
    assert json.loads(cancelled.after) == {"status": "cancelled", "reason": "申请人撤回申请"}


def test_refused_requests_record_nothing(client: FlaskClient, staff: Staff, db: Database) -> None:
    before = len(entries(db))
    assert issue(client, staff, items=[{"fee_code": "GA-SFZ", "quantity": 1}]).status_code == 422
    assert issue(client, staff, items=[{"fee_code": "NOPE", "quantity": 1}]).status_code == 422
    number = issue(client, staff).json["number"]
    assert client.post(f"/api/v1/notices/{number}/cancel", json={"reason": "x"},
                       headers=staff.headers("window_other")).status_code == 403
    assert [e.action for e in entries(db)][before:] == ["notice.issued"]


def test_fee_changes_and_department_renames_record_before_and_after(staff: Staff, db: Database) -> None:
    content = DEMO_FEES.read_text(encoding="utf-8").rstrip("\n") + "\n"
    changed = (content.replace("县不动产登记中心", "县不动产登记服务中心")
               .replace("居民身份证工本费收费标准（示例）,2025-01-01,\n",
                        "居民身份证工本费收费标准（2026 修订）,2025-01-01,2026-12-31\n", 1)
               + "GA-SFZ,居民身份证工本费,GA,县公安局户政窗口,证,2500,新标准,2027-01-01,\n")
    before = len(entries(db))
    with db.unit_of_work() as session:
        from core.audit import Actor

        summary = import_fee_schedule(session, AUDIT_KEY, Actor.system("fees import"), changed.encode())
    assert summary.departments_renamed == ["BDC"]
    assert summary.updated == ["GA-SFZ@2025-01-01"]
    assert summary.created == ["GA-SFZ@2027-01-01"]
    new = entries(db)[before:]
    assert sorted(e.action for e in new) == ["department.renamed", "fee.created", "fee.updated"]
    for entry in new:
        assert (entry.actor_type, entry.actor_name) == ("system", "fees import")
    [renamed] = [e for e in new if e.action == "department.renamed"]
    assert renamed.entity_type == "department"
    assert json.loads(renamed.before) == {"name": "县不动产登记中心"}
    assert json.loads(renamed.after) == {"name": "县不动产登记服务中心"}
    [updated] = [e for e in new if e.action == "fee.updated"]
    assert updated.entity_type == "fee_item"
    old, now = json.loads(updated.before), json.loads(updated.after)
    assert (old["legal_basis"], old["effective_to"]) == ("居民身份证工本费收费标准（示例）", None)
    assert (now["legal_basis"], now["effective_to"]) == ("居民身份证工本费收费标准（2026 修订）", "2026-12-31")
    assert old["amount"] == now["amount"] == 2000
    [created] = [e for e in new if e.action == "fee.created"]
    assert json.loads(created.after)["amount"] == 2500
    assert verify(db).ok


# --- the chain ---------------------------------------------------------------------------


def test_the_mirror_of_the_mac_matches_core_audit(staff: Staff, db: Database) -> None:
    """The forgeries below are only meaningful if they hash exactly what core.audit hashes."""
    everything = entries(db)
    prev = GENESIS_HASH
    for entry in everything:
        assert entry.prev_hash == prev
        assert hmac.new(AUDIT_KEY.encode(), mac_content(entry), hashlib.sha256).hexdigest() == entry.hash
        prev = entry.hash
    with db.reading() as session:
        head = session.get(AuditChainHead, 1)
        assert head is not None
        assert (head.last_seq, head.last_hash) == (everything[-1].seq, everything[-1].hash)


def test_a_normal_history_verifies(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    report = verify(db)
    assert report.ok, report
    assert report.entries == len(entries(db)) == SEEDED + 3
    assert (report.first_altered, report.deleted, report.head_missing) == (None, [], False)


def test_an_empty_log_verifies(app: Flask, db: Database) -> None:
    report = verify(db)
    assert report.ok and report.entries == 0


def test_the_wrong_key_fails_at_the_first_entry(staff: Staff, db: Database) -> None:
    report = verify(db, key="not-the-key")
    assert not report.ok
    assert report.first_altered == 1


TAMPERINGS: dict[str, Callable[[AuditEntry], dict[str, Any]]] = {
    "after": lambda e: {"after": e.after.replace('"total":', '"total":1')},
    "before": lambda e: {"before": json.dumps({"status": "paid"})},
    "actor_name": lambda e: {"actor_name": "admin-1"},
    "actor_id": lambda e: {"actor_id": (e.actor_id or 0) + 1},
    "action": lambda e: {"action": "notice.viewed"},
    "entity_id": lambda e: {"entity_id": "0" * 20},
    "occurred_at": lambda e: {"occurred_at": e.occurred_at - timedelta(days=1)},
    "prev_hash": lambda e: {"prev_hash": "f" * 64},
    "hash": lambda e: {"hash": "0" * 64},
}


@pytest.mark.parametrize("column", list(TAMPERINGS))
def test_altering_one_field_of_one_entry_is_reported_at_exactly_that_entry(
        client: FlaskClient, staff: Staff, db: Database, column: str) -> None:
    history(client, staff)
    target = entries(db, "notice.issued")[-1]  # an entry in the middle of the chain
    change = TAMPERINGS[column](target)
    assert all(getattr(target, k) != v for k, v in change.items())
    as_attacker(db, update(AuditEntry).where(AuditEntry.seq == target.seq).values(**change))
    report = verify(db)
    assert not report.ok
    assert report.first_altered == target.seq
    assert report.deleted == []
    assert report.head_missing is False


def test_the_first_of_several_altered_entries_is_reported(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    as_attacker(db, *(update(AuditEntry).where(AuditEntry.seq == seq).values(actor_name="x")
                      for seq in (SEEDED + 3, 7, 18)))
    assert verify(db).first_altered == 7


def _forge(conn: Connection, target_seq: int, digest: Callable[[bytes], str]) -> None:
    """Alter an entry and recompute its hash and every later link and the head, with `digest`."""
    rows = list(conn.execute(select(AuditEntry).where(AuditEntry.seq >= target_seq).order_by(AuditEntry.seq)))
    prev_hash = rows[0].prev_hash
    for row in rows:
        entry = AuditEntry(**{c: getattr(row, c) for c in row._fields})
        if entry.seq == target_seq:
            entry.after = entry.after.replace('"total":', '"total":1')
        entry.prev_hash = prev_hash
        entry.hash = digest(mac_content(entry))
        conn.execute(update(AuditEntry).where(AuditEntry.seq == entry.seq)
                     .values(after=entry.after, prev_hash=entry.prev_hash, hash=entry.hash))
        prev_hash = entry.hash
    conn.execute(update(AuditChainHead).values(last_hash=prev_hash))


FORGERS: dict[str, Callable[[bytes], str]] = {
    "plain-sha256": lambda content: hashlib.sha256(content).hexdigest(),
    "hmac-with-a-guessed-key": lambda content: hmac.new(b"secret", content, hashlib.sha256).hexdigest(),
}


@pytest.mark.parametrize("forger", list(FORGERS))
def test_recomputing_the_chain_without_the_key_does_not_fool_verify(
        client: FlaskClient, staff: Staff, db: Database, forger: str) -> None:
    history(client, staff)
    target = entries(db, "notice.issued")[0]
    digest = FORGERS[forger]

    with attacker(db) as conn:
        _forge(conn, target.seq, digest)

    # The forgery is complete: every link and the head agree, and each hash is `digest` of its
    # entry, which is exactly what an unkeyed chain would check.
    forged = entries(db)
    prev = GENESIS_HASH
    for entry in forged:
        assert entry.prev_hash == prev
        if entry.seq >= target.seq:
            assert entry.hash == digest(mac_content(entry))
        prev = entry.hash
    if forger == "hmac-with-a-guessed-key":
        assert verify(db, key="secret").first_altered == 1  # the genuine entries fail that key

    report = verify(db)
    assert not report.ok
    assert report.first_altered == target.seq
    assert report.deleted == []


def test_deleting_a_middle_entry_is_reported_as_deleted(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    last = entries(db)[-1].seq
    middle = last // 2
    as_attacker(db, delete(AuditEntry).where(AuditEntry.seq == middle))
    report = verify(db)
    assert not report.ok
    assert report.deleted == [middle]
    assert report.first_altered is None
    assert report.entries == last - 1


def test_deleting_several_entries_including_the_first_is_reported(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    as_attacker(db, delete(AuditEntry).where(AuditEntry.seq.in_([1, 10, 11, 12])))
    report = verify(db)
    assert report.deleted == [1, 10, 11, 12]
    assert report.first_altered is None


def test_deleting_the_last_entry_is_reported_as_deleted(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    last = entries(db)[-1].seq
    as_attacker(db, delete(AuditEntry).where(AuditEntry.seq == last))
    report = verify(db)
    assert not report.ok
    assert report.deleted == [last]
    assert report.first_altered is None


def test_deleting_the_tail_and_rewinding_only_the_head_counter_is_reported(
        app: Flask, client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    last = entries(db)[-1].seq
    as_attacker(db, delete(AuditEntry).where(AuditEntry.seq == last),
                update(AuditChainHead).values(last_seq=last - 1))
    report = verify(db)
    assert not report.ok
    assert report.head_mismatch
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "链头" in result.output


def test_a_head_wound_back_below_existing_entries_is_reported(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    as_attacker(db, update(AuditChainHead).values(last_seq=3))
    report = verify(db)
    assert not report.ok
    assert report.head_mismatch


def test_deleting_the_head_row_is_reported(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    as_attacker(db, delete(AuditChainHead))
    report = verify(db)
    assert not report.ok
    assert report.head_missing


# --- the append-only triggers (the first line of defence) ----------------------------------


def _refused(db: Database, statement: Executable) -> str:
    with pytest.raises(IntegrityError) as caught, db.engine.begin() as conn:
        conn.execute(statement)
    return str(caught.value.orig)


def test_the_database_refuses_to_update_or_delete_audit_entries(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    snapshot = [(e.seq, e.after, e.hash) for e in entries(db)]
    assert "append-only" in _refused(db, update(AuditEntry).where(AuditEntry.seq == 3).values(after="{}"))
    assert "append-only" in _refused(db, update(AuditEntry).values(actor_name="x"))
    assert "append-only" in _refused(db, delete(AuditEntry).where(AuditEntry.seq == 3))
    assert "append-only" in _refused(db, delete(AuditEntry))
    assert [(e.seq, e.after, e.hash) for e in entries(db)] == snapshot
    assert verify(db).ok


HEAD_MOVES: dict[str, Callable[[AuditEntry, AuditEntry], dict[str, Any]]] = {
    # (the newest entry, the one before it) → the head's new values
    "wound-back": lambda last, before: {"last_seq": before.seq},
    "wound-back-to-an-entry": lambda last, before: {"last_seq": before.seq, "last_hash": before.hash},
    "reset-to-genesis": lambda last, before: {"last_seq": 0, "last_hash": GENESIS_HASH},
    "another-hash": lambda last, before: {"last_hash": "f" * 64},
    "an-older-entrys-hash": lambda last, before: {"last_hash": before.hash},
    "skipped-forward": lambda last, before: {"last_seq": last.seq + 5},
    "forward-with-another-hash": lambda last, before: {"last_seq": last.seq + 1, "last_hash": "f" * 64},
}


@pytest.mark.parametrize("move", list(HEAD_MOVES))
def test_the_database_lets_the_head_move_only_forward(client: FlaskClient, staff: Staff, db: Database,
                                                     move: str) -> None:
    """Issue 10: the newest entries deleted with the head wound back (or the head deleted) passed
    verify. The head now takes only the two steps of an append (core.audit.append_audit)."""
    history(client, staff)
    *_, before, last = entries(db)
    assert "only moves forward" in _refused(db, update(AuditChainHead).values(**HEAD_MOVES[move](last, before)))
    with db.reading() as session:
        head = session.get(AuditChainHead, 1)
        assert head is not None and (head.last_seq, head.last_hash) == (last.seq, last.hash)
    assert verify(db).ok


def test_the_database_refuses_to_delete_the_head(client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    assert "append-only" in _refused(db, delete(AuditChainHead))
    assert verify(db).ok


def test_a_head_bumped_without_its_entry_shows_as_a_deleted_entry(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    """The bump is half of every append, so the database lets it through; verify sees the gap."""
    history(client, staff)
    last = entries(db)[-1].seq
    with db.engine.begin() as conn:
        conn.execute(update(AuditChainHead).values(last_seq=AuditChainHead.last_seq + 1))
    assert verify(db).deleted == [last + 1]


def test_the_database_refuses_to_update_or_delete_notice_lines(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    assert "append-only" in _refused(db, update(NoticeLine).values(amount=1))
    assert "append-only" in _refused(db, update(NoticeLine).values(quantity=2, amount=NoticeLine.unit_amount * 2))
    assert "append-only" in _refused(db, delete(NoticeLine))
    with db.reading() as session:
        assert sorted(session.scalars(select(NoticeLine.amount))) == [3000, 8000]


@pytest.mark.parametrize("change", [
    {"total": 1}, {"total": Notice.total + 100}, {"number": "99000126000000009999"},
    {"payer_name": "李四"}, {"due_date": datetime(2030, 1, 1).date()}, {"department_id": 2},
    {"issued_at": datetime(2020, 1, 1, tzinfo=UTC)}, {"case_reference": "X"},
])
def test_the_database_refuses_to_change_a_notices_facts(
        client: FlaskClient, staff: Staff, db: Database, change: dict[str, Any]) -> None:
    history(client, staff)
    with db.reading() as session:
        snapshot = [(n.number, n.total, n.payer_name, n.due_date) for n in session.scalars(select(Notice))]
    assert "immutable" in _refused(db, update(Notice).values(**change))
    with db.reading() as session:
        assert [(n.number, n.total, n.payer_name, n.due_date) for n in session.scalars(select(Notice))] == snapshot


def test_the_database_refuses_to_delete_notices_but_lets_the_status_move(
        client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    assert "append-only" in _refused(db, delete(Notice))
    with db.engine.begin() as conn:
        conn.execute(update(Notice).where(Notice.status == "issued").values(status="expired"))
    with db.reading() as session:
        assert sorted(session.scalars(select(Notice.status))) == ["cancelled", "expired"]


# --- `flask audit verify` ------------------------------------------------------------------


def test_audit_verify_command_says_ok_on_a_normal_history(
        app: Flask, client: FlaskClient, staff: Staff) -> None:
    history(client, staff)
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.splitlines()[-1] == f"OK：审计日志完整，共 {SEEDED + 3} 条。"  # the entries checked


def test_audit_verify_command_names_the_altered_entry_and_exits_1(
        app: Flask, client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    target = entries(db, "notice.issued")[0]
    as_attacker(db, update(AuditEntry).where(AuditEntry.seq == target.seq).values(actor_name="admin-1"))
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert "OK" not in result.output
    assert f"第 {target.seq} 条" in result.output
    assert "篡改" in result.output


def test_audit_verify_command_lists_deleted_entries_and_exits_1(
        app: Flask, client: FlaskClient, staff: Staff, db: Database) -> None:
    history(client, staff)
    last = entries(db)[-1].seq
    as_attacker(db, delete(AuditEntry).where(AuditEntry.seq.in_([12, last])))
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert "删除" in result.output
    assert f"12, {last}" in result.output
    assert "篡改" not in result.output
