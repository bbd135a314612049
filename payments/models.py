from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models import Base, Money, User, UTCDateTime
from notices.models import Notice

BANK_REFERENCE_CONFLICT = "bank-reference-conflict"
NOT_A_REFERENCE_CONFLICT = f"flag_reason IS NULL OR flag_reason <> '{BANK_REFERENCE_CONFLICT}'"


class PaymentStatus(enum.StrEnum):
    CONFIRMED = "confirmed"  #: money received for a notice; it has a valid receipt
    FLAGGED = "flagged"  #: a bank holds money we could not apply; finance refunds or matches it
    REFUND_DUE = "refund_due"  #: its receipt was voided; the money must go back
    REFUNDED = "refunded"  #: finance recorded the refund


class PaymentMethod(enum.StrEnum):
    CASH = "cash"
    CARD = "card"
    TRANSFER = "transfer"
    OTHER = "other"


class Channel(enum.StrEnum):
    CASHIER = "cashier"
    BANK = "bank"


# status → statuses it may move to (ARCHITECTURE.md: statuses move forward only)
PAYMENT_TRANSITIONS: dict[str, set[str]] = {
    PaymentStatus.CONFIRMED: {PaymentStatus.REFUND_DUE},
    PaymentStatus.FLAGGED: {PaymentStatus.REFUND_DUE},
    PaymentStatus.REFUND_DUE: {PaymentStatus.REFUNDED},
    PaymentStatus.REFUNDED: set(),
}


class CashierShift(Base):
    """A cashier's shift (日结): payments are counted against it; closing declares the cash."""

    __tablename__ = "cashier_shifts"
    __table_args__ = (
        Index("uq_cashier_shifts_one_open_per_cashier", "cashier_id", unique=True,
              postgresql_where=text("closed_at IS NULL"), sqlite_where=text("closed_at IS NULL")),
        CheckConstraint("declared_cash IS NULL OR declared_cash >= 0", name="declared_not_negative"),
        Index("ix_cashier_shifts_closed_at", "closed_at"),
        CheckConstraint("(closed_at IS NULL) = (declared_cash IS NULL)", name="closed_declares_cash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cashier_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    declared_cash: Mapped[int | None] = mapped_column(Money)
    recorded_cash: Mapped[int | None] = mapped_column(Money)
    recorded_card: Mapped[int | None] = mapped_column(Money)
    recorded_transfer: Mapped[int | None] = mapped_column(Money)
    recorded_other: Mapped[int | None] = mapped_column(Money)
    note: Mapped[str | None] = mapped_column(String(500))

    cashier: Mapped[User] = relationship(lazy="joined")

    @property
    def cash_difference(self) -> int | None:
        if self.declared_cash is None or self.recorded_cash is None:
            return None
        return self.declared_cash - self.recorded_cash


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('confirmed','flagged','refund_due','refunded')", name="status_known"),
        CheckConstraint("channel IN ('cashier','bank')", name="channel_known"),
        CheckConstraint("method IN ('cash','card','transfer','other')", name="method_known"),
        CheckConstraint("channel <> 'cashier' OR (cashier_id IS NOT NULL AND shift_id IS NOT NULL)",
                        name="cashier_payment_has_shift"),
        CheckConstraint("channel <> 'bank' OR (bank_code IS NOT NULL AND bank_reference IS NOT NULL)",
                        name="bank_payment_has_reference"),
        CheckConstraint("status <> 'flagged' OR flag_reason IS NOT NULL", name="flag_has_reason"),
        CheckConstraint("status <> 'confirmed' OR notice_id IS NOT NULL", name="confirmed_has_notice"),
        # The last line of defence: one notice, at most one confirmed payment.
        Index("uq_payments_one_confirmed_per_notice", "notice_id", unique=True,
              postgresql_where=text("status = 'confirmed'"), sqlite_where=text("status = 'confirmed'")),
        # A reference names one transfer; a later event reusing it for other money is kept apart
        # (flagged bank-reference-conflict) so that finance sees it.
        Index("uq_payments_bank_reference", "bank_code", "bank_reference", unique=True,
              postgresql_where=text(NOT_A_REFERENCE_CONFLICT), sqlite_where=text(NOT_A_REFERENCE_CONFLICT)),
        Index("ix_payments_recorded_at", "recorded_at"),
        Index("ix_payments_paid_at", "paid_at"),  # a bank payment's business date
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id"), index=True)
    notice_number_given: Mapped[str] = mapped_column(String(64))  # as the payer or bank gave it
    channel: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    status: Mapped[str] = mapped_column(String(16))
    flag_reason: Mapped[str | None] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(64))
    cashier_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shift_id: Mapped[int | None] = mapped_column(ForeignKey("cashier_shifts.id"), index=True)
    bank_code: Mapped[str | None] = mapped_column(String(32))
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    payer_name: Mapped[str | None] = mapped_column(String(100))
    paid_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    refund_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refund_due_reason: Mapped[str | None] = mapped_column(String(500))
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refunded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    refund_method: Mapped[str | None] = mapped_column(String(16))
    refund_reference: Mapped[str | None] = mapped_column(String(64))

    notice: Mapped[Notice | None] = relationship(lazy="joined")
    cashier: Mapped[User | None] = relationship(foreign_keys=[cashier_id], lazy="joined")
