"""Bank statements, reconciliation runs and their exceptions, and the scheduler's run claims."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.models import Base, Money, UTCDateTime


class ExceptionType(enum.StrEnum):
    """API.md's exception types, plus the cash drawer check of a closed shift."""

    FEE_NOT_IN_SCHEDULE = "fee_not_in_schedule"
    FEE_AMOUNT_MISMATCH = "fee_amount_mismatch"
    PAYMENT_AMOUNT_MISMATCH = "payment_amount_mismatch"
    PAYMENT_WITHOUT_NOTICE = "payment_without_notice"
    DUPLICATE_PAYMENT = "duplicate_payment"
    PAYMENT_ON_CLOSED_NOTICE = "payment_on_closed_notice"
    PAYMENT_WITHOUT_RECEIPT = "payment_without_receipt"
    CERTIFICATE_WITHOUT_RECEIPT = "certificate_without_receipt"
    STATEMENT_LINE_UNMATCHED = "statement_line_unmatched"
    PAYMENT_NOT_IN_STATEMENT = "payment_not_in_statement"
    STATEMENT_AMOUNT_MISMATCH = "statement_amount_mismatch"
    STATEMENT_REVERSAL = "statement_reversal"
    RECEIPT_NUMBER_GAP = "receipt_number_gap"
    CASH_DRAWER_MISMATCH = "cash_drawer_mismatch"


class ExceptionStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Subject(enum.StrEnum):
    """What an exception is about: with its id, the root cause's stable identity across runs."""

    NOTICE_LINE = "notice_line"
    PAYMENT = "payment"
    CERTIFICATE = "certificate"
    RECEIPT = "receipt"  # the receipt that follows a gap in the numbers
    STATEMENT_LINE = "statement_line"
    SHIFT = "shift"


class BankStatement(Base):
    """One import of a bank's statement file; its lines are the facts, this is the record of it."""

    __tablename__ = "bank_statements"
    __table_args__ = (
        CheckConstraint("format IN ('camt.053','csv')", name="format_known"),
        Index("ix_bank_statements_bank_dates", "bank_code", "from_date", "to_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_code: Mapped[str] = mapped_column(ForeignKey("bank_clients.code"))
    format: Mapped[str] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(16))
    statement_ref: Mapped[str | None] = mapped_column(String(64))  # camt Stmt/Id
    filename: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    # The business dates this statement covers (FrToDt, else its lines' booking dates):
    # payment_not_in_statement is raised only for a date some statement of that bank covers.
    from_date: Mapped[date | None] = mapped_column(Date)
    to_date: Mapped[date | None] = mapped_column(Date)
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    new_line_count: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    imported_by: Mapped[str] = mapped_column(String(100))


class StatementLine(Base):
    """One transaction of a bank statement, as the bank booked it. Append-only."""

    __tablename__ = "statement_lines"
    __table_args__ = (
        UniqueConstraint("bank_code", "bank_reference", name="uq_statement_lines_bank_reference"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("direction IN ('credit','debit')", name="direction_known"),
        Index("ix_statement_lines_booked_date", "booked_date"),
        Index("ix_statement_lines_notice_number", "notice_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("bank_statements.id"), index=True)
    bank_code: Mapped[str] = mapped_column(String(32))
    bank_reference: Mapped[str] = mapped_column(String(64))
    entry_reference: Mapped[str | None] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    notice_number_given: Mapped[str | None] = mapped_column(String(64))
    notice_number: Mapped[str | None] = mapped_column(String(20))  # when a valid number was given
    amount: Mapped[int] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    direction: Mapped[str] = mapped_column(String(8))
    reversal: Mapped[bool] = mapped_column(Boolean)
    booked_date: Mapped[date] = mapped_column(Date)
    payer_name: Mapped[str | None] = mapped_column(String(100))
    payer_account: Mapped[str | None] = mapped_column(String(64))
    remittance: Mapped[str | None] = mapped_column(String(500))

    statement: Mapped[BankStatement] = relationship(lazy="joined")


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running','completed','failed')", name="status_known"),
        Index("ix_reconciliation_runs_business_date", "business_date", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    business_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False)  # the day was not over yet
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_by: Mapped[str] = mapped_column(String(100))
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid of the process doing it
    totals: Mapped[str | None] = mapped_column(Text)  # JSON: integers only (counts, fen)
    exception_counts: Mapped[str | None] = mapped_column(Text)  # JSON {type: n}
    error: Mapped[str | None] = mapped_column(Text)


class ReconciliationException(Base):
    """One root cause found by reconciliation; kept across runs of its date with its resolution."""

    __tablename__ = "reconciliation_exceptions"
    __table_args__ = (
        UniqueConstraint("business_date", "type", "subject", "subject_id",
                         name="uq_reconciliation_exceptions_root_cause"),
        CheckConstraint("status IN ('open','resolved')", name="status_known"),
        CheckConstraint("status = 'open' OR (resolved_by IS NOT NULL AND resolved_at IS NOT NULL)",
                        name="resolved_has_resolver"),
        Index("ix_reconciliation_exceptions_date_status", "business_date", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    business_date: Mapped[date] = mapped_column(Date)
    type: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[int] = mapped_column(BigInteger)
    detail_code: Mapped[str | None] = mapped_column(String(40))
    notice_number: Mapped[str | None] = mapped_column(String(64))  # as the payer or bank gave it
    notice_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    receipt_number: Mapped[str | None] = mapped_column(String(16))
    statement_line_id: Mapped[int | None] = mapped_column(ForeignKey("statement_lines.id"))
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    shift_id: Mapped[int | None] = mapped_column(ForeignKey("cashier_shifts.id"))
    notice_line_id: Mapped[int | None] = mapped_column(ForeignKey("notice_lines.id"))
    fee_item_id: Mapped[int | None] = mapped_column(ForeignKey("fee_items.id"))
    bank_code: Mapped[str | None] = mapped_column(String(32))
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    expected_amount: Mapped[int | None] = mapped_column(Money)
    actual_amount: Mapped[int | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16), default=ExceptionStatus.OPEN)
    resolution_note: Mapped[str | None] = mapped_column(String(500))
    resolved_by: Mapped[str | None] = mapped_column(String(100))  # a username, or "system"
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"))
    last_run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Finding(Base):
    """Scratch rows of one run: what each comparison found, merged into exceptions set-wise."""

    __tablename__ = "reconciliation_findings"
    __table_args__ = (
        Index("ix_reconciliation_findings_run_root", "run_id", "type", "subject", "subject_id", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"))
    type: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[int] = mapped_column(BigInteger)
    detail_code: Mapped[str | None] = mapped_column(String(40))
    notice_number: Mapped[str | None] = mapped_column(String(64))
    notice_id: Mapped[int | None] = mapped_column(Integer)
    department_id: Mapped[int | None] = mapped_column(Integer)
    payment_id: Mapped[int | None] = mapped_column(Integer)
    receipt_number: Mapped[str | None] = mapped_column(String(16))
    statement_line_id: Mapped[int | None] = mapped_column(Integer)
    certificate_id: Mapped[int | None] = mapped_column(Integer)
    shift_id: Mapped[int | None] = mapped_column(Integer)
    notice_line_id: Mapped[int | None] = mapped_column(Integer)
    fee_item_id: Mapped[int | None] = mapped_column(Integer)
    bank_code: Mapped[str | None] = mapped_column(String(32))
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    expected_amount: Mapped[int | None] = mapped_column(Money)
    actual_amount: Mapped[int | None] = mapped_column(Money)


class JobRun(Base):
    """A scheduled job's run, claimed once across scheduler processes by its unique key."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "scheduled_for", name="uq_job_runs_job_scheduled_for"),
        CheckConstraint("status IN ('running','succeeded','failed')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str] = mapped_column(String(200))  # host:pid of the scheduler
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    result: Mapped[str | None] = mapped_column(Text)

