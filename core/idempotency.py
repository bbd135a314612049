"""Idempotency keys (API.md): the same key and body from the same client replays the first
response; another body is refused.

The key is claimed in the same transaction as the work it guards, and the response is stored in
that transaction before it commits: there is no moment when a payment is committed and its key's
result is not. A concurrent duplicate waits on the key's unique index until the first request's
transaction ends, then replays what it stored (or, if that one rolled back, runs itself). A
refusal (4xx) writes nothing, so it is stored afterwards on its own; an unexpected failure (5xx)
stores nothing, and the client's retry runs again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import Integer, String, Text, UniqueConstraint, bindparam, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import utcnow
from core.db import HotStatement, table_of
from core.errors import DomainError
from core.models import Base, UTCDateTime

KEEP_FOR = timedelta(hours=24)
# A claim older than this whose request never finished (a killed worker) may be taken over.
STALE_AFTER = timedelta(minutes=5)
MAX_KEY_LENGTH = 255


class IdempotencyKeyReuse(DomainError):
    status = 422
    code = "idempotency-key-reuse"
    title = _l("幂等键已用于另一个请求")


class IdempotencyKeyInUse(DomainError):
    status = 409
    code = "idempotency-key-in-use"
    title = _l("使用该幂等键的请求仍在处理中")


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("client", "key", name="uq_idempotency_keys_client_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_type: Mapped[str | None] = mapped_column(String(100))
    response_body: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    content_type: str
    body: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Same JSON value → same fingerprint, whatever the key order and whitespace."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")) if body.strip() else ""
    except (ValueError, UnicodeDecodeError):
        canonical = body.hex()
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


_KEYS = table_of(IdempotencyRecord)
# The only unique key besides the id is (client, key).
_CLAIM = HotStatement.insert(_KEYS, on_conflict_do_nothing=True)
_COMPLETE = HotStatement(update(_KEYS).where(_KEYS.c.client == bindparam("done_client"),
                                             _KEYS.c.key == bindparam("done_key"))
                         .values(completed_at=bindparam("done_at"), response_status=bindparam("done_status"),
                                 response_type=bindparam("done_type"), response_body=bindparam("done_body")))


def _insert_claim(session: Session, client: str, key: str, print_: str, now: datetime,
                  response: StoredResponse | None = None) -> bool:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: True when this request claimed the key (with
    its response already, when given). A concurrent first claim not yet committed makes it wait."""
    return _CLAIM.first(session, {
        "client": client, "key": key, "fingerprint": print_, "created_at": now,
        "completed_at": None if response is None else now,
        "response_status": None if response is None else response.status,
        "response_type": None if response is None else response.content_type,
        "response_body": None if response is None else response.body}) is not None


def _existing(session: Session, client: str, key: str) -> IdempotencyRecord | None:
    return session.scalar(
        select(IdempotencyRecord).where(IdempotencyRecord.client == client, IdempotencyRecord.key == key)
    )


def claim(session: Session, client: str, key: str, print_: str) -> StoredResponse | None:
    """Claim the key for this request (caller commits), or return the response to replay.

    Raises IdempotencyKeyReuse or IdempotencyKeyInUse. A new key costs one statement.
    """
    now = utcnow()
    if _insert_claim(session, client, key, print_, now):
        return None
    existing = _existing(session, client, key)
    if existing is not None and existing.created_at < now - KEEP_FOR:
        session.delete(existing)
        session.flush()
        existing = None
    if existing is None:  # expired (deleted just now) or purged since the insert
        if _insert_claim(session, client, key, print_, now):
            return None
        existing = _existing(session, client, key)
        assert existing is not None
    if existing.fingerprint != print_:
        raise IdempotencyKeyReuse("同一幂等键（Idempotency-Key）已用于内容不同的请求；新请求请使用新的键。")
    if existing.completed_at is None:
        if existing.created_at < now - STALE_AFTER:
            existing.created_at = now  # take over a claim whose request never finished
            return None
        raise IdempotencyKeyInUse("使用该幂等键的第一个请求仍在处理中，请稍后重试。")
    return StoredResponse(status=existing.response_status or 200,
                          content_type=existing.response_type or "application/json",
                          body=existing.response_body or "")


def complete(session: Session, client: str, key: str, response: StoredResponse) -> None:
    _COMPLETE.rows(session, {"done_client": client, "done_key": key, "done_at": utcnow(),
                             "done_status": response.status, "done_type": response.content_type,
                             "done_body": response.body})


def release(session: Session, client: str, key: str) -> None:
    """Let go of a claim whose request failed unexpectedly (claims in a transaction of their own)."""
    session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.client == client, IdempotencyRecord.key == key,
                                        IdempotencyRecord.completed_at.is_(None))
    )


def store_refusal(session: Session, client: str, key: str, print_: str, response: StoredResponse) -> None:
    """Keep a refusal for replay, after its own transaction rolled back. A request that claimed the
    key meanwhile (a duplicate that ran once this one let go) wins: its answer is the one replayed."""
    _insert_claim(session, client, key, print_, utcnow(), response)


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Remove keys older than 24 h (run by the scheduler)."""
    cutoff = (now or utcnow()) - KEEP_FOR
    result: Any = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(result.rowcount or 0)
