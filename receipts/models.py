from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models import Base, Money, User, UTCDateTime
from notices.models import Notice


class ReceiptStatus(enum.StrEnum):
    VALID = "valid"  #: proof of a confirmed payment; unlocks the certificate
    VOIDED = "voided"  #: 冲红 by finance; the number stays, the payment is refund_due


class ReceiptCounter(Base):
    """The last receipt number of a year. Incremented inside the paying transaction, so a
    rollback gives the number back and the numbers stay gap-free."""

    __tablename__ = "receipt_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)


class Receipt(Base):
    __tablename__ = "receipts"
    __table_args__ = (
        UniqueConstraint("year", "sequence", name="uq_receipts_year_sequence"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('valid','voided')", name="status_known"),
        CheckConstraint("status = 'valid' OR (voided_at IS NOT NULL AND void_reason IS NOT NULL)",
                        name="void_has_reason"),
        # At most one valid receipt per notice, whatever races happen.
        Index("uq_receipts_one_valid_per_notice", "notice_id", unique=True,
              postgresql_where=text("status = 'valid'"), sqlite_where=text("status = 'valid'")),
        Index("ix_receipts_issued_at", "issued_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)
    year: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), unique=True)
    amount: Mapped[int] = mapped_column(Money)
    verification_code: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by: Mapped[str] = mapped_column(String(100))  # the cashier's name, or the bank
    status: Mapped[str] = mapped_column(String(16), default=ReceiptStatus.VALID)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    void_reason: Mapped[str | None] = mapped_column(String(500))

    notice: Mapped[Notice] = relationship(lazy="joined")

    @property
    def notice_number(self) -> str:
        return self.notice.number

    prints: Mapped[list[ReceiptPrint]] = relationship(back_populates="receipt", lazy="selectin",
                                                      order_by="ReceiptPrint.id")


class ReceiptPrint(Base):
    """Every printing of a receipt; all but the first are marked 补打 (copy)."""

    __tablename__ = "receipt_prints"

    id: Mapped[int] = mapped_column(primary_key=True)
    receipt_id: Mapped[int] = mapped_column(ForeignKey("receipts.id"), index=True)
    printed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    printed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    is_copy: Mapped[bool] = mapped_column()

    receipt: Mapped[Receipt] = relationship(back_populates="prints")


class Certificate(Base):
    """A certificate issued at the window; only with a valid receipt for the notice's full total."""

    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_issued_at", "issued_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), unique=True)
    receipt_id: Mapped[int] = mapped_column(ForeignKey("receipts.id"), unique=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

    receipt: Mapped[Receipt] = relationship(lazy="joined")
    issued_by: Mapped[User] = relationship(lazy="joined")
