"""The append-only, hash-chained audit log.

One global chain, keyed with HMAC-SHA256: every entry carries a contiguous sequence number and
the previous entry's MAC, and a single head row holds the newest. An altered entry fails its MAC;
a deleted entry leaves a gap in the sequence (or a head that runs past the last entry). We chose
one chain over per-stream chains because it makes deletions detectable without a separate
anchoring job; the price is one serialisation point (the head row, locked until commit), which
the payment benchmark measures.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String, Text, bindparam, insert, select, update
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


@dataclass
class AuditReport:
    entries: int = 0
    first_altered: int | None = None
    deleted: list[int] = field(default_factory=list)
    head_missing: bool = False
    #: the head row does not point at the last entry (e.g. the tail was deleted and the head's
    #: counter wound back, or the head was rewound below entries that exist)
    head_mismatch: bool = False

    @property
    def ok(self) -> bool:
        return (self.first_altered is None and not self.deleted and not self.head_missing
                and not self.head_mismatch)


def verify_audit_chain(session: Session, key: str) -> AuditReport:
    report = AuditReport()
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
        prev_hash = entry.hash
        expected_seq = entry.seq + 1
    head = session.get(AuditChainHead, 1)
    if head is None:
        report.head_missing = True
    elif head.last_seq >= expected_seq:
        report.deleted.extend(range(expected_seq, head.last_seq + 1))
    elif head.last_seq != expected_seq - 1 or not hmac.compare_digest(head.last_hash, prev_hash):
        report.head_mismatch = True
    return report
