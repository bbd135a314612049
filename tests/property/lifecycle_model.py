"""The small model of what should be true, which the lifecycle machine checks the service against.

It is written from API.md and the README, not from the code: what each action answers, what
state it leaves, and which reconciliation exceptions a business day must show. It models exactly
what it can, and says what it leaves out:

- the fee schedule never changes while the machine runs, so `fee_not_in_schedule` and the
  "other version" kind of `fee_amount_mismatch` cannot arise; every override is a
  `fee_amount_mismatch` of its line;
- nothing is tampered with behind the service's back, so `certificate_without_receipt`,
  `receipt_number_gap`, `payment_without_receipt` and a confirmed payment that does not add up
  must never be found (a mutant that causes one is caught);
- one bank, statements of one day each.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

from reconciliation.matching import FLAG_REASON_TYPES

Expected = tuple[str, str, int]  # (type, subject, subject id)

# Fees of the demo schedule in force (fee code → unit amount), by department.
FEES: dict[str, dict[str, int]] = {
    "BDC": {"BDC-ZZ": 8000, "BDC-FZZ": 55000, "BDC-GBF": 1000},
    "GA": {"GA-SFZ": 2000, "GA-LSSFZ": 1000},
    "CG": {"CG-HP": 10000, "CG-XSZ": 1000, "CG-JSZ": 1000},
}
CONFLICT = "bank-reference-conflict"


@dataclass
class MNotice:
    number: str
    department: str
    total: int
    due_date: date
    issued_day: date
    issued_at: datetime
    override_lines: list[int]  # ids of the lines with an override
    status: str = "issued"  # as stored: issued | paid | cancelled | expired
    certificate: str | None = None

    def status_on(self, today: date) -> str:
        return "expired" if self.status == "issued" and today > self.due_date else self.status


@dataclass
class MPayment:
    id: int
    notice_given: str
    notice: str | None  # the number of a notice that exists
    channel: str
    method: str
    amount: int
    status: str
    day: date  # business date: a cashier payment's recording, a bank payment's paid_at
    flag_reason: str | None = None
    bank_reference: str | None = None
    shift_id: int | None = None
    receipt: str | None = None


@dataclass
class MReceipt:
    number: str
    notice: str
    payment_id: int
    amount: int
    status: str = "valid"


@dataclass
class MShift:
    id: int
    cashier: str
    cash: int = 0  # cash taken in it (voided later or not: it was taken)
    closed_day: date | None = None
    declared: int | None = None


@dataclass
class MLine:
    """A statement line as imported."""

    id: int
    reference: str
    amount: int
    booked: date
    direction: str  # CRDT | DBIT
    reversal: bool
    notice: str | None = None  # the notice number it names


@dataclass
class Model:
    notices: dict[str, MNotice] = field(default_factory=dict)
    payments: dict[int, MPayment] = field(default_factory=dict)
    receipts: dict[str, MReceipt] = field(default_factory=dict)
    shifts: dict[int, MShift] = field(default_factory=dict)
    open_shift: dict[str, int] = field(default_factory=dict)  # cashier key → shift id
    lines: dict[str, MLine] = field(default_factory=dict)  # by bank reference
    statement_days: set[date] = field(default_factory=set)
    events: dict[str, bytes] = field(default_factory=dict)  # webhook-id → body
    audit: Counter[str] = field(default_factory=Counter)  # audit action → entries expected
    security: Counter[str] = field(default_factory=Counter)  # security event kind → events expected
    references: int = 0

    # --- what an action should do ------------------------------------------------------------

    def refusal(self, number: str | None, at: date) -> str | None:
        """Why money for this notice cannot be taken at that business date (API.md's codes),
        in the service's order: unknown, paid, cancelled, past due."""
        notice = self.notices.get(number or "")
        if notice is None:
            return "unknown-notice"
        if notice.status == "paid":
            return "notice-already-paid"
        if notice.status == "cancelled":
            return "notice-cancelled"
        if at > notice.due_date:
            return "notice-expired"
        return None

    def under_reference(self, reference: str) -> list[MPayment]:
        return [p for p in self.payments.values() if p.channel == "bank" and p.bank_reference == reference]

    def named_by(self, reference: str) -> MPayment | None:
        """The one payment a bank reference names (a conflicting claim on it is not that one)."""
        return next((p for p in self.under_reference(reference) if p.flag_reason != CONFLICT), None)

    def bank_outcome(self, given: str, amount: int, reference: str, paid_day: date) -> tuple[str, str | None]:
        """('confirmed' | 'duplicate' | 'flagged', flag reason) for a new event (API.md, bank
        callbacks; README: a reused reference with the same notice and amount is the same money)."""
        known = self.notices.get(given)
        refused = self.refusal(given, paid_day)
        if refused is None and known is not None and amount != known.total:
            refused = "amount-mismatch"
        if refused is None and self.named_by(reference) is None:
            return "confirmed", None
        for earlier in self.under_reference(reference):
            if earlier.notice_given == given and earlier.amount == amount:
                return "duplicate", None
        if self.named_by(reference) is not None:
            return "flagged", CONFLICT
        return "flagged", refused

    def new_reference(self, prefix: str = "REF") -> str:
        self.references += 1
        return f"{prefix}{self.references:06d}"

    # --- what reconciliation must find ---------------------------------------------------------

    def expected_exceptions(self, day: date) -> set[Expected]:
        found: set[Expected] = set()
        for notice in self.notices.values():
            if notice.issued_day == day:
                found.update(("fee_amount_mismatch", "notice_line", line) for line in notice.override_lines)
        statement_in = day in self.statement_days
        for p in self.payments.values():
            if p.day != day:
                continue
            if p.flag_reason is not None and p.status in ("flagged", "refund_due"):
                found.add((FLAG_REASON_TYPES[p.flag_reason].value, "payment", p.id))
            elif p.status == "confirmed":
                notice = self.notices[p.notice or ""]
                if notice.status in ("cancelled", "expired"):
                    found.add(("payment_on_closed_notice", "payment", p.id))
                elif p.amount != notice.total:
                    found.add(("payment_amount_mismatch", "payment", p.id))
                elif p.receipt is None or self.receipts[p.receipt].status != "valid":
                    found.add(("payment_without_receipt", "payment", p.id))
            if p.channel == "bank" and statement_in and p.bank_reference not in self.lines:
                found.add(("payment_not_in_statement", "payment", p.id))
        for shift in self.shifts.values():
            if shift.closed_day == day and shift.declared != shift.cash:
                found.add(("cash_drawer_mismatch", "shift", shift.id))
        for line in self.lines.values():
            if line.booked != day:
                continue
            if line.reversal:
                found.add(("statement_reversal", "statement_line", line.id))
            elif line.direction == "CRDT":
                named = self.named_by(line.reference)
                if named is None:
                    found.add(("statement_line_unmatched", "statement_line", line.id))
                elif named.amount != line.amount:
                    found.add(("statement_amount_mismatch", "statement_line", line.id))
        return found

    # --- money --------------------------------------------------------------------------------

    def money_by_day(self) -> dict[date, dict[str, int]]:
        """Per business day: received, and where it is now (valid receipt, flagged, refund due, refunded)."""
        days: dict[date, dict[str, int]] = {}
        for p in self.payments.values():
            bucket = days.setdefault(p.day, Counter())
            bucket["received"] += p.amount
            if p.status == "confirmed":
                bucket["receipted"] += self.receipts[p.receipt or ""].amount
            else:
                bucket[p.status] += p.amount
        return days
