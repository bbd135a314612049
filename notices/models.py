from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models import Base, Department, Money, User, UTCDateTime


class NoticeStatus(enum.StrEnum):
    ISSUED = "issued"  #: waiting for payment
    PAID = "paid"  #: a valid receipt exists
    CANCELLED = "cancelled"  #: withdrawn by the window; never payable again
    EXPIRED = "expired"  #: past due_date unpaid (also computed on read before the job sets it)


class NoticeSerial(Base):
    """The last serial handed out per region and year; its row lock serialises allocation."""

    __tablename__ = "notice_serials"

    region_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_serial: Mapped[int] = mapped_column(BigInteger)  # serials have 10 digits


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("region_code", "year", "serial", name="uq_notices_region_year_serial"),
        CheckConstraint("serial BETWEEN 1 AND 9999999999", name="serial_range"),
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint("status IN ('issued','paid','cancelled','expired')", name="status_known"),
        CheckConstraint("length(number) = 20", name="number_length"),
        CheckConstraint("currency = 'CNY'", name="currency_cny"),
        Index("ix_notices_department_issued", "department_id", "issued_at"),
        Index("ix_notices_status_due", "status", "due_date"),
        Index("ix_notices_issued_at", "issued_at"),  # reconciliation reads a business day
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    region_code: Mapped[str] = mapped_column(String(6))
    year: Mapped[int] = mapped_column(Integer)
    serial: Mapped[int] = mapped_column(BigInteger)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    case_reference: Mapped[str | None] = mapped_column(String(64))
    payer_name: Mapped[str] = mapped_column(String(100), index=True)
    payer_id_number: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    status: Mapped[str] = mapped_column(String(16), default=NoticeStatus.ISSUED)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    due_date: Mapped[date] = mapped_column(Date)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    cancel_reason: Mapped[str | None] = mapped_column(String(500))

    department: Mapped[Department] = relationship(lazy="joined")
    issued_by: Mapped[User] = relationship(foreign_keys=[issued_by_id], lazy="joined")
    lines: Mapped[list[NoticeLine]] = relationship(
        back_populates="notice", order_by="NoticeLine.position", lazy="selectin"
    )

    def status_on(self, today: date) -> str:
        """Past due and still unpaid reads as expired, whether or not the job has run yet."""
        if self.status == NoticeStatus.ISSUED and today > self.due_date:
            return NoticeStatus.EXPIRED
        return self.status


class NoticeLine(Base):
    __tablename__ = "notice_lines"
    __table_args__ = (
        UniqueConstraint("notice_id", "position", name="uq_notice_lines_notice_position"),
        CheckConstraint("quantity BETWEEN 1 AND 100000", name="quantity_range"),
        CheckConstraint("unit_amount >= 0", name="unit_amount_not_negative"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # An exemption or reduction never raises the price and always says why.
        CheckConstraint(
            "(override_reason IS NULL AND amount = unit_amount * quantity)"
            " OR (override_reason IS NOT NULL AND amount <= unit_amount * quantity)",
            name="override_rule",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    fee_item_id: Mapped[int] = mapped_column(ForeignKey("fee_items.id"), index=True)
    fee_code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    unit: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_amount: Mapped[int] = mapped_column(Money)
    amount: Mapped[int] = mapped_column(Money)
    override_reason: Mapped[str | None] = mapped_column(String(500))

    notice: Mapped[Notice] = relationship(back_populates="lines")
