"""Daily audit anchors: the chain head at the end of each business date, published.

The hash chain shows an altered or a missing entry, but not a history cut short together with its
head, nor one re-chained by an insider who has the HMAC key. Each night the head as of the end of
the previous business date (its seq, its hash, the number of entries) is recorded once, in an
append-only table, and published without sign-in (`GET /api/v1/public/audit-anchors`, the page
`/audit-anchors`). Whoever saved the published anchors — the county's supervision office, a
journalist — can later run `audit verify --anchors FILE`: rewriting or truncating history now
means changing anchors that are outside the database.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit import GENESIS_HASH, Actor, Anchor, AuditAnchor, AuditEntry, append_audit, first_broken_link
from core.clock import rfc3339, utcnow, zone
from core.errors import DomainError, NotFound
from core.schemas import ISO_DATE

LATEST = 30  # anchors listed without a date: a month, what a daily saver needs to catch up
HASH = re.compile(r"[0-9a-f]{64}")


class AuditDayNotOver(DomainError):
    status = 409
    code = "audit-day-not-over"
    title = _l("该日尚未结束")


class AuditChainBroken(DomainError):
    """The chain up to the day's head does not verify: anchoring it would publish a forgery."""

    status = 409
    code = "audit-chain-broken"
    title = _l("审计链校验失败")


class AnchorNotFound(NotFound):
    title = _l("该日没有审计锚点")


def day_end(day: date, timezone: str) -> datetime:
    """The first moment after the business date, in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone(timezone)).astimezone(UTC)


def anchor_audit_day(session: Session, key: str, day: date, *, timezone: str,
                     actor: Actor | None = None, now: datetime | None = None) -> AuditAnchor:
    """Record the chain head as of the end of `day` (a business date in `timezone`) and return it;
    the existing anchor when the day was anchored already.

    The entries since the previous anchor are verified first (the ones before it were, when it was
    recorded), so a chain broken since then is refused, not published. The anchoring itself is
    audited; its entry falls on a later day than the one it anchors."""
    moment = now or utcnow()
    existing = session.scalar(select(AuditAnchor).where(AuditAnchor.business_date == day))
    if existing is not None:
        return existing
    if moment < day_end(day, timezone):
        raise AuditDayNotOver(_("%(day)s 尚未结束，只能为已结束的营业日记录审计锚点。", day=day.isoformat()))
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).where(AuditEntry.occurred_at < day_end(day, timezone))
        .order_by(AuditEntry.seq.desc()).limit(1)).one_or_none()
    last_seq, last_hash = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS_HASH)
    previous = session.execute(
        select(AuditAnchor.last_seq, AuditAnchor.last_hash).where(AuditAnchor.business_date < day)
        .order_by(AuditAnchor.business_date.desc()).limit(1)).one_or_none()
    start = (int(previous[0]), str(previous[1])) if previous is not None else (0, GENESIS_HASH)
    if start[0] > last_seq:
        raise AuditChainBroken(_("上一个锚点记录到第 %(seq)d 条，但 %(day)s 结束时审计日志只到第 %(last)d 条。",
                                 seq=start[0], day=day.isoformat(), last=last_seq))
    broken = first_broken_link(session, key, start, last_seq)
    if broken is not None:
        raise AuditChainBroken(_("第 %(seq)d 条审计记录缺失或被篡改，不能为 %(day)s 记录锚点；请运行 audit verify。",
                                 seq=broken, day=day.isoformat()))
    entries = int(session.scalar(select(func.count()).select_from(AuditEntry)
                                 .where(AuditEntry.seq <= last_seq)) or 0)
    values = {"business_date": day, "last_seq": last_seq, "last_hash": last_hash, "entries": entries,
              "created_at": moment}
    # ON CONFLICT DO NOTHING: a command and the scheduler anchoring the same day at once give one
    # anchor (the second waits for the first's commit on PostgreSQL, then finds it).
    dml = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    anchor_id = session.scalar(dml(AuditAnchor).values(values)
                               .on_conflict_do_nothing(index_elements=["business_date"]).returning(AuditAnchor.id))
    anchor = session.scalars(select(AuditAnchor).where(AuditAnchor.business_date == day)).one()
    if anchor_id is not None:
        append_audit(session, key, actor or Actor.system("audit anchor"), "audit.anchored", "audit_anchor",
                     day.isoformat(), after=anchor_view(anchor, timezone))
    return anchor


def latest_anchors(session: Session, limit: int = LATEST) -> list[AuditAnchor]:
    return list(session.scalars(select(AuditAnchor).order_by(AuditAnchor.business_date.desc()).limit(limit)))


def find_anchor(session: Session, day: date) -> AuditAnchor:
    anchor = session.scalar(select(AuditAnchor).where(AuditAnchor.business_date == day))
    if anchor is None:
        raise AnchorNotFound(_("%(day)s 没有审计锚点（锚点在次日凌晨记录）。", day=day.isoformat()))
    return anchor


def anchor_view(anchor: AuditAnchor, timezone: str) -> dict[str, Any]:
    """The published shape (API, page, the audit entry of the anchoring, a saved file's items)."""
    return {"date": anchor.business_date.isoformat(), "last_seq": anchor.last_seq, "last_hash": anchor.last_hash,
            "entries": anchor.entries, "created_at": rfc3339(anchor.created_at, timezone)}


class SavedAnchorsInvalid(ValueError):
    """A file of saved anchors that cannot be read; the message, in Chinese, names the item."""


def parse_saved_anchors(data: bytes) -> list[Anchor]:
    """Anchors saved from the public API: its answer `{"items": [...]}`, a list of such items, or
    one item; each needs date, last_seq and last_hash (entries is checked when present)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise SavedAnchorsInvalid(_("不是有效的 JSON 文件。")) from error
    if isinstance(document, dict) and "items" in document:
        document = document["items"]
    elif isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise SavedAnchorsInvalid(_("应为锚点列表，或含 items 列表的对象。"))
    anchors: dict[date, Anchor] = {}
    for index, item in enumerate(document):
        anchor = _saved_anchor(item, index)
        known = anchors.setdefault(anchor.business_date, anchor)
        if known != anchor:
            raise SavedAnchorsInvalid(_("第 %(n)d 项：%(day)s 出现了两个不同的锚点。", n=index + 1,
                                        day=anchor.business_date.isoformat()))
    return sorted(anchors.values(), key=lambda a: a.business_date)


def _saved_anchor(item: Any, index: int) -> Anchor:
    where = _("第 %(n)d 项", n=index + 1)
    if not isinstance(item, dict):
        raise SavedAnchorsInvalid(_("%(where)s 不是 JSON 对象。", where=where))
    text = item.get("date")
    try:
        day = date.fromisoformat(text) if isinstance(text, str) and ISO_DATE.fullmatch(text) else None
    except ValueError:  # 2026-02-30
        day = None
    if day is None:
        raise SavedAnchorsInvalid(_("%(where)s：date 须为 YYYY-MM-DD 格式的日期。", where=where))
    numbers = {}
    for name in ("last_seq", "entries"):
        value = item.get(name)
        if value is None and name == "entries":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SavedAnchorsInvalid(_("%(where)s（%(day)s）：%(field)s 须为非负整数。", where=where,
                                        day=day.isoformat(), field=name))
        numbers[name] = value
    last_hash = item.get("last_hash")
    if not isinstance(last_hash, str) or not HASH.fullmatch(last_hash):
        raise SavedAnchorsInvalid(_("%(where)s（%(day)s）：last_hash 须为 64 位十六进制小写字符。", where=where,
                                    day=day.isoformat()))
    return Anchor(day, numbers["last_seq"], last_hash, numbers.get("entries"))

