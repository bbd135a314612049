from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models import Base, UTCDateTime


class BankClient(Base):
    """A bank allowed to post callbacks and queries to /webhooks/bank/{code}."""

    __tablename__ = "bank_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    secrets: Mapped[list[BankSecret]] = relationship(back_populates="bank", lazy="selectin",
                                                     order_by="BankSecret.id.desc()")


class BankSecret(Base):
    """A signing secret (`whsec_…`). During rotation the old one keeps working until
    `expires_at`; a secret without `expires_at` is current."""

    __tablename__ = "bank_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("bank_clients.id"), index=True)
    # The key itself is needed to compute HMACs, so it is stored; it is never logged or shown
    # again after `banks create` / `banks rotate` printed it.
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    bank: Mapped[BankClient] = relationship(back_populates="secrets")


class BankEvent(Base):
    """Every verified callback, raw, with what it did. `(bank_code, webhook_id)` is its identity
    and is recorded in the same transaction as its effect."""

    __tablename__ = "bank_events"
    __table_args__ = (UniqueConstraint("bank_code", "webhook_id", name="uq_bank_events_bank_code_webhook_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_code: Mapped[str] = mapped_column(String(32))
    webhook_id: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    headers: Mapped[str] = mapped_column(Text)  # JSON, without the signature
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    result: Mapped[str] = mapped_column(String(16))  # confirmed | flagged | invalid
    reason: Mapped[str | None] = mapped_column(String(64))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)


class SecurityEvent(Base):
    """Something a bank (or someone pretending to be one) did that finance must look at."""

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    bank_code: Mapped[str] = mapped_column(String(32))
    webhook_id: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookSubscription(Base):
    """A department system that wants to hear of events, signed with its own secret."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(String(100))
    event_types: Mapped[str] = mapped_column(String(200))  # space-separated
    active: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def wants(self, event_type: str) -> bool:
        return event_type in self.event_types.split()


class WebhookDelivery(Base):
    """One event to one subscriber, retried on a schedule until delivered or failed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "subscription_id", name="uq_webhook_deliveries_event_sub"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscription: Mapped[WebhookSubscription] = relationship(lazy="joined")
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(lazy="selectin", order_by="DeliveryAttempt.id")


class DeliveryAttempt(Base):
    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)
