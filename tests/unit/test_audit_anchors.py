"""Daily audit anchors (issue 10, defect 3): the chain head at the end of each business date is
recorded, published without sign-in, and checked by `audit verify`, also against a saved copy.

The chain alone cannot tell a history cut short together with its head, nor one re-chained by an
insider who holds the HMAC key: these tests do exactly that, as a privileged attacker who first gets
the triggers out of the way (tests/unit/test_audit.py's `attacker`), and show that the anchors —
the database's, and above all the copy someone saved from the public API — catch it.
Runs on whatever TEST_DATABASE_URL says (SQLite by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

import core.audit
from core.audit import GENESIS_HASH, AnchorProblem, AuditAnchor, AuditChainHead, AuditEntry, verify_audit_chain
from core.audit_anchors import (
    AuditChainBroken,
    AuditDayNotOver,
    SavedAnchorsInvalid,
    anchor_audit_day,
    day_end,
    parse_saved_anchors,
)
from core.clock import today, zone
from core.db import Database
from reconciliation.scheduler import DEFAULT_JOBS, run_scheduler
from tests.conftest import AUDIT_KEY, Staff
from tests.unit.test_audit import _forge, attacker, entries, history, mac_content

TZ = "Asia/Shanghai"
EVERYTHING = ("audit_entries", "audit_chain_head", "audit_anchors")


class AuditClock:
    """What core.audit stamps entries with: a second later on every entry, from `now`."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def set(self, day: date, hour: int, minute: int = 0) -> None:
        self.now = datetime.combine(day, time(hour, minute), tzinfo=zone(TZ)).astimezone(UTC)


def days_ago(n: int) -> date:
    return today(TZ) - timedelta(days=n)


@pytest.fixture
def audit_clock(monkeypatch: pytest.MonkeyPatch) -> AuditClock:
    """Requested before `staff`, so that the seeding is stamped three days ago."""
    clock = AuditClock(datetime.now(UTC))
    clock.set(days_ago(3), 9)
    monkeypatch.setattr(core.audit, "utcnow", clock)
    return clock


def anchor(db: Database, day: date, **kwargs: Any) -> AuditAnchor:
    with db.unit_of_work() as session:
        return anchor_audit_day(session, AUDIT_KEY, day, timezone=TZ, **kwargs)


def verify(db: Database, saved: Any = ()) -> Any:
    with db.reading() as session:
        return verify_audit_chain(session, AUDIT_KEY, saved)


@dataclass
class Days:
    """Three anchored days of history (3, 2 and 1 days ago) and entries of today after them."""

    anchors: list[AuditAnchor]
    saved: bytes  # the public API's answer, as the supervision office saved it


@pytest.fixture
def days(audit_clock: AuditClock, client: FlaskClient, staff: Staff, db: Database) -> Days:
    audit_clock.set(days_ago(2), 10)
    history(client, staff)
    audit_clock.set(days_ago(1), 23, 58)  # the evening before: still yesterday in Shanghai (15:58 UTC)
    history(client, staff)
    audit_clock.set(days_ago(0), 0, 15)  # the nightly job's hour: its own entries fall on today
    anchors = [anchor(db, days_ago(n)) for n in (3, 2, 1)]
    audit_clock.set(days_ago(0), 8)
    history(client, staff)
    saved = client.get("/api/v1/public/audit-anchors")
    assert saved.status_code == 200, saved.json
    return Days(anchors=anchors, saved=saved.data)


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["audit", *args])


def save(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "anchors.json"
    path.write_bytes(content)
    return str(path)


# --- what is anchored ------------------------------------------------------------------------


def test_an_anchor_is_the_chain_head_at_the_end_of_the_business_date(days: Days, db: Database) -> None:
    everything = entries(db)
    end_of_yesterday = day_end(days_ago(1), TZ)
    for anchored in days.anchors:
        last = [e for e in everything if e.occurred_at < day_end(anchored.business_date, TZ)][-1]
        assert (anchored.last_seq, anchored.last_hash, anchored.entries) == (last.seq, last.hash, last.seq)
    # yesterday 23:58–23:59 Shanghai is 15:58 UTC: inside yesterday, and the anchor stops there
    assert [e.seq for e in everything if e.occurred_at >= end_of_yesterday][0] == days.anchors[-1].last_seq + 1
    assert days.anchors[0].last_seq < days.anchors[1].last_seq < days.anchors[2].last_seq < everything[-1].seq


def test_anchoring_is_audited_once_and_a_second_time_changes_nothing(days: Days, db: Database) -> None:
    anchored = entries(db, "audit.anchored")
    assert [e.entity_id for e in anchored] == [days_ago(n).isoformat() for n in (3, 2, 1)]
    assert json.loads(anchored[-1].after)["last_hash"] == days.anchors[-1].last_hash
    before = len(entries(db))
    again = anchor(db, days_ago(1))
    assert (again.id, again.last_seq, again.last_hash) == (days.anchors[-1].id, days.anchors[-1].last_seq,
                                                           days.anchors[-1].last_hash)
    assert len(entries(db)) == before
    report = verify(db)
    assert report.ok, report
    assert report.anchors_checked == 3


def test_a_day_without_entries_is_anchored_at_the_genesis(app: Flask, db: Database) -> None:
    anchored = anchor(db, days_ago(5))
    assert (anchored.last_seq, anchored.last_hash, anchored.entries) == (0, GENESIS_HASH, 0)
    assert verify(db).ok


def test_today_cannot_be_anchored_before_it_is_over(app: Flask, db: Database) -> None:
    with pytest.raises(AuditDayNotOver):
        anchor(db, days_ago(0))
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(AuditAnchor)) == 0


def test_a_chain_broken_since_the_last_anchor_is_not_anchored(
        audit_clock: AuditClock, client: FlaskClient, staff: Staff, db: Database) -> None:
    anchor(db, days_ago(3))
    audit_clock.set(days_ago(2), 10)
    history(client, staff)
    target = entries(db, "notice.issued")[0]
    with attacker(db) as conn:
        conn.execute(update(AuditEntry).where(AuditEntry.seq == target.seq).values(actor_name="admin-1"))
    with pytest.raises(AuditChainBroken) as refused:
        anchor(db, days_ago(2))
    assert f"第 {target.seq} 条" in str(refused.value.detail)
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(AuditAnchor)) == 1


def test_the_database_refuses_to_change_or_delete_an_anchor(days: Days, db: Database) -> None:
    for statement in (update(AuditAnchor).values(last_hash="0" * 64), delete(AuditAnchor)):
        with pytest.raises(IntegrityError) as refused, db.engine.begin() as conn:
            conn.execute(statement)
        assert "append-only" in str(refused.value.orig)
    assert verify(db).ok


def test_the_nightly_job_anchors_each_missed_night_once(
        audit_clock: AuditClock, app: Flask, client: FlaskClient, staff: Staff, db: Database) -> None:
    [job] = [j for j in DEFAULT_JOBS if j.name == "anchor-audit"]
    audit_clock.set(days_ago(2), 10)
    history(client, staff)
    now = datetime.now(UTC)
    audit_clock.now = now  # the job's own entries: written now
    assert run_scheduler(app, once=True, jobs=[job], now=lambda: now) == 0
    with db.reading() as session:
        anchored = list(session.scalars(select(AuditAnchor).order_by(AuditAnchor.business_date)))
    assert run_scheduler(app, once=True, jobs=[job], now=lambda: now) == 0  # nothing left to do
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(AuditAnchor)) == len(anchored)
    # 00:15 each night anchors the day before; a node starting late catches up the last 7 nights
    local_now = now.astimezone(zone(TZ))
    last_night = local_now.date() - timedelta(days=0 if local_now.time() >= time(0, 15) else 1)
    assert [a.business_date for a in anchored] == [last_night - timedelta(days=n) for n in range(7, 0, -1)]
    by_day = {a.business_date: a for a in anchored}
    assert by_day[days_ago(2)].last_seq == max(e.seq for e in entries(db)
                                              if e.occurred_at < day_end(days_ago(2), TZ))
    assert verify(db).ok


# --- what verify catches ---------------------------------------------------------------------


def _cut_after(db: Database, seq: int, *, drop_anchors_after: date | None = None) -> None:
    """Delete every entry after `seq` and make the head agree (deleted and re-inserted)."""
    with attacker(db, EVERYTHING) as conn:
        last = conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == seq)).scalar_one()
        conn.execute(delete(AuditEntry).where(AuditEntry.seq > seq))
        conn.execute(delete(AuditChainHead))
        conn.execute(insert(AuditChainHead).values(id=1, last_seq=seq, last_hash=last))
        if drop_anchors_after is not None:
            conn.execute(delete(AuditAnchor).where(AuditAnchor.business_date > drop_anchors_after))


def test_newest_entries_deleted_with_the_head_fail_verify(days: Days, app: Flask, db: Database) -> None:
    cut = days.anchors[1].last_seq + 1  # yesterday's and today's entries, bar one
    _cut_after(db, cut)
    report = verify(db)
    assert (report.first_altered, report.deleted, report.head_missing, report.head_mismatch) == (None, [], False,
                                                                                                 False)
    assert not report.ok  # the chain that is left is consistent: only the anchor shows the cut
    [mismatch] = report.anchor_mismatches
    assert (mismatch.anchor.business_date, mismatch.source, mismatch.problem) == (days_ago(1), "database",
                                                                                  AnchorProblem.MISSING)
    result = cli(app, "verify")
    assert result.exit_code == 1, result.output
    assert f"数据库中 {days_ago(1)} 的锚点（第 {days.anchors[2].last_seq} 条）" in result.output
    assert f"审计日志只到第 {cut} 条" in result.output and "链头落后于锚点" in result.output


def test_a_truncated_log_fails_verify(days: Days, app: Flask, db: Database) -> None:
    with attacker(db, EVERYTHING) as conn:
        conn.execute(delete(AuditEntry))
        conn.execute(update(AuditChainHead).values(last_seq=0, last_hash=GENESIS_HASH))
    report = verify(db)
    assert report.entries == 0 and report.truncated and not report.ok
    assert {m.problem for m in report.anchor_mismatches} == {AnchorProblem.MISSING}
    result = cli(app, "verify")
    assert result.exit_code == 1
    assert "审计日志已被清空" in result.output


def _rechain_with_the_key(db: Database, target_seq: int) -> None:
    """An insider with the HMAC key alters an entry and recomputes every later link and the head."""
    with attacker(db) as conn:
        _forge(conn, target_seq, lambda content: hmac.new(AUDIT_KEY.encode(), content, hashlib.sha256).hexdigest())


def test_history_rechained_with_the_key_fails_on_the_anchors(days: Days, app: Flask, db: Database) -> None:
    target = [e for e in entries(db, "notice.issued") if e.seq <= days.anchors[1].last_seq][-1]
    _rechain_with_the_key(db, target.seq)
    # The key makes a perfect forgery as far as the chain goes ...
    rechained = entries(db)
    assert [e.hash for e in rechained if e.seq == target.seq][0] != target.hash
    assert all(hmac.new(AUDIT_KEY.encode(), mac_content(e), hashlib.sha256).hexdigest() == e.hash
               for e in rechained)
    report = verify(db)
    assert (report.first_altered, report.deleted, report.head_mismatch) == (None, [], False)
    # ... but the anchors of the days after the alteration no longer match.
    assert not report.ok
    assert [(m.anchor.business_date, m.problem) for m in report.anchor_mismatches] == [
        (days_ago(2), AnchorProblem.REWRITTEN), (days_ago(1), AnchorProblem.REWRITTEN)]
    result = cli(app, "verify")
    assert result.exit_code == 1
    assert f"失败：数据库中 {days_ago(2)} 的锚点" in result.output and "历史记录被改写" in result.output


def test_rewritten_history_and_anchors_fail_against_the_saved_anchors(
        days: Days, app: Flask, db: Database, tmp_path: Path) -> None:
    """The point of publishing: the insider rewrites the database's anchors too, not the saved copy."""
    target = [e for e in entries(db, "notice.issued") if e.seq <= days.anchors[1].last_seq][-1]
    _rechain_with_the_key(db, target.seq)
    with attacker(db, ("audit_anchors",)) as conn:
        for anchored in days.anchors:
            new_hash = conn.execute(select(AuditEntry.hash).where(AuditEntry.seq == anchored.last_seq)).scalar_one()
            conn.execute(update(AuditAnchor).where(AuditAnchor.id == anchored.id).values(last_hash=new_hash))
    assert verify(db).ok  # nothing inside the database tells any more
    result = cli(app, "verify", "--anchors", save(tmp_path, days.saved))
    assert result.exit_code == 1, result.output
    assert "已核对锚点文件" in result.output and "3 个" in result.output
    first = next(line for line in result.output.splitlines() if line.startswith("失败："))
    assert f"锚点文件中 {days_ago(2)} 的锚点（第 {days.anchors[1].last_seq} 条）" in first
    assert "历史记录被改写" in first
    assert "与数据库中该日的锚点" in result.output  # the database's anchors were changed too


def test_a_cut_that_also_deletes_the_anchors_fails_against_the_saved_anchors(
        days: Days, app: Flask, db: Database, tmp_path: Path) -> None:
    _cut_after(db, days.anchors[0].last_seq, drop_anchors_after=days_ago(3))
    assert verify(db).ok
    with db.reading() as session:
        report = verify_audit_chain(session, AUDIT_KEY, parse_saved_anchors(days.saved))
    assert not report.ok
    assert {(m.anchor.business_date, m.problem) for m in report.anchor_mismatches} == {
        (days_ago(2), AnchorProblem.UNRECORDED), (days_ago(2), AnchorProblem.MISSING),
        (days_ago(1), AnchorProblem.UNRECORDED), (days_ago(1), AnchorProblem.MISSING)}
    result = cli(app, "verify", "--anchors", save(tmp_path, days.saved))
    assert result.exit_code == 1
    assert "数据库中已没有该日的锚点" in result.output


def test_verify_with_the_saved_anchors_says_what_it_checked(
        days: Days, app: Flask, db: Database, tmp_path: Path) -> None:
    result = cli(app, "verify", "--anchors", save(tmp_path, days.saved))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    last_seq = entries(db)[-1].seq
    assert lines[0].startswith(f"已检查审计记录 {last_seq} 条（序号 1–{last_seq}）")
    assert f"每日审计锚点 3 个（最新：{days_ago(1)}，第 {days.anchors[-1].last_seq} 条）" in lines[1]
    assert "anchors.json 中的锚点 3 个" in lines[2]
    assert lines[-1] == f"OK：审计日志完整，共 {last_seq} 条。"


@pytest.mark.parametrize("content, fragment", [
    (b"not json", "不是有效的 JSON"),
    (b'"x"', "应为锚点列表"),
    (b'[{"date": "2026-02-30", "last_seq": 1, "last_hash": "' + b"a" * 64 + b'"}]', "第 1 项：date"),
    (b'{"items": [{"date": "2026-W01-1", "last_seq": 1, "last_hash": "x"}]}', "第 1 项：date"),
    (b'[{"date": "2026-01-01", "last_seq": -1, "last_hash": "' + b"a" * 64 + b'"}]', "last_seq 须为非负整数"),
    (b'[{"date": "2026-01-01", "last_seq": true, "last_hash": "' + b"a" * 64 + b'"}]', "last_seq 须为非负整数"),
    (b'[{"date": "2026-01-01", "last_seq": 1, "last_hash": "ABC"}]', "last_hash"),
])
def test_an_unusable_anchors_file_is_refused_naming_the_problem(
        app: Flask, tmp_path: Path, content: bytes, fragment: str) -> None:
    with pytest.raises(SavedAnchorsInvalid) as refused:
        parse_saved_anchors(content)
    assert fragment in str(refused.value)
    result = cli(app, "verify", "--anchors", save(tmp_path, content))
    assert result.exit_code == 2
    assert fragment in result.stderr and "Traceback" not in result.output
    missing = cli(app, "verify", "--anchors", str(tmp_path / "nowhere.json"))
    assert missing.exit_code == 2 and "无法读取锚点文件" in missing.stderr


def test_a_saved_file_may_be_the_api_answer_a_list_or_one_anchor(days: Days) -> None:
    items = json.loads(days.saved)["items"]
    parsed = parse_saved_anchors(days.saved)
    assert [a.business_date for a in parsed] == [days_ago(n) for n in (3, 2, 1)]
    assert parse_saved_anchors(json.dumps(items).encode()) == parsed
    assert parse_saved_anchors(json.dumps(items[0]).encode()) == parsed[-1:]


# --- the anchor command and the public API and page -------------------------------------------


def test_the_anchor_command_records_yesterday_and_refuses_a_bad_date(app: Flask, db: Database) -> None:
    result = cli(app, "anchor")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{days_ago(1)} 的审计锚点：第 0 条")
    refused = cli(app, "anchor", "--date", "2026-13-01")
    assert refused.exit_code == 1 and "YYYY-MM-DD" in refused.stderr
    not_over = cli(app, "anchor", "--date", days_ago(0).isoformat())
    assert not_over.exit_code == 1 and "尚未结束" in not_over.stderr


def test_the_public_api_lists_the_latest_anchors_newest_first(days: Days, client: FlaskClient) -> None:
    response = client.get("/api/v1/public/audit-anchors")
    assert response.status_code == 200
    items = response.json["items"]
    assert [i["date"] for i in items] == [days_ago(n).isoformat() for n in (1, 2, 3)]
    newest = days.anchors[-1]
    assert items[0] == {"date": days_ago(1).isoformat(), "last_seq": newest.last_seq, "last_hash": newest.last_hash,
                        "entries": newest.entries, "created_at": items[0]["created_at"]}
    assert datetime.fromisoformat(items[0]["created_at"]).utcoffset() == timedelta(hours=8)
    one = client.get(f"/api/v1/public/audit-anchors?date={days_ago(2)}")
    assert one.status_code == 200 and one.json["items"] == [items[1]]


@pytest.mark.parametrize("value", ["2026-13-01", "20260101", "2026-W01-1", "yesterday", ""])
def test_a_malformed_date_is_a_422_with_errors(client: FlaskClient, value: str) -> None:
    response = client.get(f"/api/v1/public/audit-anchors?date={value}")
    assert response.status_code == 422, response.data
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/validation")
    assert list(response.json["errors"]) == ["date"]


def test_a_date_without_an_anchor_is_a_404(days: Days, client: FlaskClient) -> None:
    response = client.get(f"/api/v1/public/audit-anchors?date={days_ago(0)}")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("/not-found") and "没有审计锚点" in response.json["detail"]


def test_the_public_page_shows_the_anchors(days: Days, client: FlaskClient) -> None:
    page = client.get("/audit-anchors")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "审计锚点公示" in text and "audit verify --anchors" in text
    for anchored in days.anchors:
        assert anchored.business_date.isoformat() in text
        assert anchored.last_hash[:32] in text and anchored.last_hash[32:] in text
    seqs = [0] + [a.last_seq for a in days.anchors]
    day_counts = [later - earlier for earlier, later in zip(seqs, seqs[1:], strict=False)]
    assert all(f'<td class="num">{n}</td>' in text for n in day_counts)

