"""The outbox of domain events: written in the same transaction as the change, delivered later
to department systems by `webhooks` (so an event is never sent for a change that rolled back,
and never lost for one that committed)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.db import Executor, HotStatement, table_of
from core.models import Base, UTCDateTime

EVENT_TYPES = ("notice.paid", "receipt.voided", "certificate.issued")


class OutboxEvent(Base):
    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)  # the webhook-id sent to subscribers
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when deliveries to the subscribers of the moment were created.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


_INSERT_EVENT = HotStatement.insert(table_of(OutboxEvent))


def emit(session: Executor, event_type: str, data: dict[str, Any]) -> str:
    """Write the event at once in the caller's transaction; returns its event id."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    now = utcnow()
    event_id = "evt_" + uuid.uuid4().hex
    body = {"type": event_type, "timestamp": now.isoformat(timespec="seconds"), "data": data}
    _INSERT_EVENT.rows(session, {
        "event_id": event_id, "event_type": event_type, "created_at": now, "dispatched_at": None,
        "payload": json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)})
    return event_id
