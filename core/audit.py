"""The append-only, hash-chained audit log.

One global chain, keyed with HMAC-SHA256: every entry carries a contiguous sequence number and
the previous entry's MAC, and a single head row holds the newest. An altered entry fails its MAC;
a deleted entry leaves a gap in the sequence (or a head that runs past the last entry). We chose
one chain over per-stream chains because a deletion anywhere in it is a gap, whichever stream it
belonged to; the price is one serialisation point (the head row, locked until commit), which
the payment benchmark measures.

What the chain alone cannot show is a cut at the end: whoever deletes the newest entries and
winds the head back (or truncates everything) leaves a shorter chain that is still consistent,
and an insider with the key can even re-chain altered history. Hence the database refuses
TRUNCATE and lets the head only move forward (migration 0005), and every business date's final
head is recorded and published as an anchor (core.audit_anchors): a chain that no longer reaches
an anchor, or reaches it with another hash, fails `verify_audit_chain`, and a copy of the anchors
kept outside the database cannot be rewritten by anyone inside it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Date, Integer, String, Text, bindparam, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import utcnow
from core.db import Executor, HotStatement, column_binds, connection_of, table_of
from core.models import Base, UTCDateTime

GENESIS_HASH = "0" * 64


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditAnchor(Base):
    """The chain head at the end of one business date (last_seq 0: no entry yet), as published."""

    __tablename__ = "audit_anchors"
    __table_args__ = (CheckConstraint("last_seq >= 0", name="last_seq_not_negative"),
                      CheckConstraint("entries >= 0", name="entries_not_negative"))

    id: Mapped[int] = mapped_column(primary_key=True)
    business_date: Mapped[date] = mapped_column(Date, unique=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))
    #: entries in the chain up to last_seq (equal to it while nothing is missing)
    entries: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Actor:
    """Who did it: a staff user, a bank client, or the system (jobs, commands)."""

    kind: str
    name: str
    id: int | None = None

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(kind="system", name=name)


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _mac(key: str, entry: Mapping[str, Any]) -> str:
    """The entry's MAC over its columns (by column key) and the previous entry's MAC."""
    content = json.dumps(
        [entry[column] if column != "occurred_at" else entry[column].isoformat() for column in _MAC_COLUMNS],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hmac.new(key.encode(), content.encode(), hashlib.sha256).hexdigest()


_MAC_COLUMNS = ("seq", "occurred_at", "actor_type", "actor_id", "actor_name", "action", "entity_type", "entity_id",
                "before", "after", "prev_hash")


def _columns_of(entry: AuditEntry) -> dict[str, Any]:
    return {column: getattr(entry, column) for column in _MAC_COLUMNS}


_HEAD = table_of(AuditChainHead).c
_BUMP_HEAD = HotStatement(update(table_of(AuditChainHead)).where(_HEAD.id == 1).values(last_seq=_HEAD.last_seq + 1)
                          .returning(_HEAD.last_seq, _HEAD.last_hash))
_ENTRIES = table_of(AuditEntry)
_INSERT_ENTRY = HotStatement.insert(_ENTRIES)
_SET_HEAD_HASH = HotStatement(update(table_of(AuditChainHead)).where(_HEAD.id == 1)
                              .values(last_hash=bindparam("new_hash")))
# PostgreSQL: the entry and the head's new hash in one statement (a data-modifying CTE), one round
# trip less while the head row is locked. SQLite has no INSERT in a WITH: two statements there.
_NEW_ENTRY = (insert(_ENTRIES)
              .values(column_binds(_ENTRIES))
              .returning(_ENTRIES.c.id).cte("new_entry"))
_WRITE_ENTRY_AND_HEAD = HotStatement(update(table_of(AuditChainHead)).where(_HEAD.id == 1)
                                     .values(last_hash=bindparam("new_hash"))
                                     .returning(select(_NEW_ENTRY.c.id).scalar_subquery()))


def append_audit(
    session: Executor,
    key: str,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str | int,
    *,
    before: Any = None,
    after: Any = None,
) -> int:
    """Append one entry in the caller's transaction and return its sequence number; the head row
    stays locked until commit.

    Core statements on the session's connection (core.db.HotStatement) — take the head (seq,
    previous MAC), then write the entry and the head's new MAC (one statement on PostgreSQL, two
    on SQLite): no ORM object, no flush."""
    row = _BUMP_HEAD.first(session)
    if row is None:
        raise RuntimeError("audit chain head missing: run `flask --app wsgi init-db`")
    seq, prev_hash = row
    entry: dict[str, Any] = {
        "seq": seq, "occurred_at": utcnow(), "actor_type": actor.kind, "actor_id": actor.id, "actor_name": actor.name,
        "action": action, "entity_type": entity_type, "entity_id": str(entity_id),
        "before": _canonical(before), "after": _canonical(after), "prev_hash": prev_hash,
    }
    entry["hash"] = _mac(key, entry)
    if connection_of(session).dialect.name == "postgresql":
        _WRITE_ENTRY_AND_HEAD.rows(session, {**entry, "new_hash": entry["hash"]})
    else:
        _INSERT_ENTRY.rows(session, entry)
        _SET_HEAD_HASH.rows(session, {"new_hash": entry["hash"]})
    return int(seq)


@dataclass(frozen=True)
class Anchor:
    """A chain head someone saved: from the audit_anchors table, or from a file of published ones."""

    business_date: date
    last_seq: int
    last_hash: str
    entries: int | None = None  # a saved copy may leave it out


class AnchorProblem(StrEnum):
    MISSING = "missing"  #: the log ends before the anchor's entry: the newest entries were cut off
    REWRITTEN = "rewritten"  #: the entry at the anchor's seq has another hash: history was rewritten
    COUNT = "count"  #: fewer (or more) entries up to the anchor's seq than when it was taken
    UNRECORDED = "unrecorded"  #: a saved anchor the database no longer holds
    DIFFERS = "differs"  #: a saved anchor that is not what the database holds for that date


@dataclass(frozen=True)
class AnchorMismatch:
    anchor: Anchor
    source: str  # "database" or "file"
    problem: AnchorProblem
    found: str | int | None = None  # the hash (REWRITTEN), count (COUNT) or database's seq (DIFFERS) found


@dataclass
class AuditReport:
    entries: int = 0
    last_seq: int = 0  #: the newest entry's seq (0: none)
    first_altered: int | None = None
    deleted: list[int] = field(default_factory=list)
    head_missing: bool = False
    #: the head row does not point at the last entry (e.g. the tail was deleted and the head's
    #: counter wound back, or the head was rewound below entries that exist)
    head_mismatch: bool = False
    anchors_checked: int = 0  #: anchors of the audit_anchors table
    file_anchors_checked: int = 0  #: anchors given by the caller (a saved copy of the published ones)
    latest_anchor: Anchor | None = None
    anchor_mismatches: list[AnchorMismatch] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """The log is empty although anchors say it had entries."""
        return self.entries == 0 and any(m.problem is AnchorProblem.MISSING for m in self.anchor_mismatches)

    @property
    def ok(self) -> bool:
        return (self.first_altered is None and not self.deleted and not self.head_missing
                and not self.head_mismatch and not self.anchor_mismatches)


def load_anchors(session: Session) -> list[Anchor]:
    return [Anchor(a.business_date, a.last_seq, a.last_hash, a.entries)
            for a in session.scalars(select(AuditAnchor).order_by(AuditAnchor.business_date))]


def verify_audit_chain(session: Session, key: str, saved: Sequence[Anchor] = ()) -> AuditReport:
    """Check every entry's MAC and link, the head, and the chain against the database's anchors and
    any `saved` ones (a copy of the published anchors kept outside the database).

    One pass over the entries, oldest first; the hashes at anchored seqs are kept on the way."""
    report = AuditReport()
    recorded = load_anchors(session)
    report.anchors_checked, report.file_anchors_checked = len(recorded), len(saved)
    report.latest_anchor = recorded[-1] if recorded else None
    anchored = {a.last_seq for a in (*recorded, *saved)}
    seen: dict[int, tuple[str, int]] = {0: (GENESIS_HASH, 0)}  # seq → (hash, entries up to it)
    expected_seq = 1
    prev_hash = GENESIS_HASH
    entries = session.scalars(
        select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=2000)
    )
    for entry in entries:
        report.entries += 1
        if entry.seq > expected_seq:
            report.deleted.extend(range(expected_seq, entry.seq))
        elif entry.prev_hash != prev_hash and report.first_altered is None:
            report.first_altered = entry.seq
        if not hmac.compare_digest(_mac(key, _columns_of(entry)), entry.hash) and report.first_altered is None:
            report.first_altered = entry.seq
        if entry.seq in anchored:
            seen[entry.seq] = (entry.hash, report.entries)
        prev_hash = entry.hash
        expected_seq = entry.seq + 1
    report.last_seq = expected_seq - 1
    head = session.get(AuditChainHead, 1)
    if head is None:
        report.head_missing = True
    elif head.last_seq >= expected_seq:
        report.deleted.extend(range(expected_seq, head.last_seq + 1))
    elif head.last_seq != expected_seq - 1 or not hmac.compare_digest(head.last_hash, prev_hash):
        report.head_mismatch = True
    by_date = {a.business_date: a for a in recorded}
    for source, anchors in (("database", recorded), ("file", saved)):
        for anchor in anchors:
            report.anchor_mismatches.extend(_check_anchor(anchor, source, seen, by_date))
    report.anchor_mismatches.sort(key=lambda m: (m.anchor.last_seq, m.anchor.business_date, m.source != "file"))
    return report


def _check_anchor(anchor: Anchor, source: str, seen: Mapping[int, tuple[str, int]],
                  recorded: Mapping[date, Anchor]) -> list[AnchorMismatch]:
    problems: list[AnchorMismatch] = []
    found = seen.get(anchor.last_seq)
    if found is None:
        problems.append(AnchorMismatch(anchor, source, AnchorProblem.MISSING))
    elif not hmac.compare_digest(found[0], anchor.last_hash):
        problems.append(AnchorMismatch(anchor, source, AnchorProblem.REWRITTEN, found[0]))
    elif anchor.entries is not None and anchor.entries != found[1]:
        problems.append(AnchorMismatch(anchor, source, AnchorProblem.COUNT, found[1]))
    # What the log shows first (above); then whether the database still holds what was published.
    if source == "file":
        mine = recorded.get(anchor.business_date)
        if mine is None:
            problems.append(AnchorMismatch(anchor, source, AnchorProblem.UNRECORDED))
        elif (mine.last_seq, mine.last_hash) != (anchor.last_seq, anchor.last_hash):
            problems.append(AnchorMismatch(anchor, source, AnchorProblem.DIFFERS, mine.last_seq))
    return problems


def first_broken_link(session: Session, key: str, after: tuple[int, str], upto: int) -> int | None:
    """The first seq in (after[0], upto] that is missing, altered or not linked to its predecessor
    (after[1]: the hash the segment must start from); None when the segment is intact."""
    expected_seq, prev_hash = after[0] + 1, after[1]
    segment = session.scalars(
        select(AuditEntry).where(AuditEntry.seq > after[0], AuditEntry.seq <= upto)
        .order_by(AuditEntry.seq).execution_options(yield_per=2000))
    try:
        for entry in segment:
            if (entry.seq != expected_seq or entry.prev_hash != prev_hash
                    or not hmac.compare_digest(_mac(key, _columns_of(entry)), entry.hash)):
                return expected_seq if entry.seq > expected_seq else entry.seq
            prev_hash, expected_seq = entry.hash, entry.seq + 1
    finally:
        segment.close()  # a server-side cursor on PostgreSQL (yield_per), left open by an early return
    return None if expected_seq > upto else expected_seq
