"""Defects planted on purpose, to check that the lifecycle machine catches them.

`FEESVC_MUTANT=<name> pytest tests/property/test_lifecycle_machine.py` runs the machine with
that defect monkeypatched in (the shared source files are never edited); it must FAIL.
`python -m tests.property.run_mutants` runs them all and prints the table of MUTANTS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest


def _no_status_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """confirm_payment takes money for a cancelled (or paid) notice: only the due date is checked."""
    import payments.service as payments

    original = payments.check_payable

    def check_payable(notice: Any, at: datetime, timezone: str) -> None:
        original(SimpleNamespace(status="issued", number=notice.number, due_date=notice.due_date), at, timezone)

    monkeypatch.setattr(payments, "check_payable", check_payable)


def _flagged_receipted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flagged bank payment also gets a receipt (counted as receipted money)."""
    import webhooks.service as webhooks
    from receipts.service import issue_receipt

    original = webhooks._record_flagged

    def record_flagged(session: Any, settings: Any, actor: Any, bank_code: str, data: dict[str, Any],
                       reason: str) -> Any:
        payment = original(session, settings, actor, bank_code, data, reason)
        if payment.notice_id is not None:
            issue_receipt(session.connection(), settings, notice_id=payment.notice_id,
                          notice_number=payment.notice_number_given, payment_id=payment.id, amount=payment.amount,
                          issued_by=bank_code, issued_at=payment.recorded_at)
        return payment

    monkeypatch.setattr(webhooks, "_record_flagged", record_flagged)


def _skip_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Payments, voids, refunds and shift closes write no audit entry."""
    import payments.service as payments

    monkeypatch.setattr(payments, "append_audit", lambda *args, **kwargs: 0)


def _cancel_paid(monkeypatch: pytest.MonkeyPatch) -> None:
    """cancel_notice lets a paid notice be cancelled."""
    import notices.service as notices

    original = notices.cancel_notice

    def cancel_notice(session: Any, settings: Any, clerk: Any, number: str, reason: str) -> Any:
        notice = notices.find_notice(session, number, for_update=True)
        if notice.status == notices.NoticeStatus.PAID:
            notice.status = notices.NoticeStatus.ISSUED  # the check below then lets it through
            session.flush()
        return original(session, settings, clerk, number, reason)

    monkeypatch.setattr(notices, "cancel_notice", cancel_notice)


def _recon_skips_cash_drawer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconciliation leaves out one comparison (closed shifts: cash_drawer_mismatch)."""
    import reconciliation.matching as matching

    monkeypatch.setattr(matching, "COMPARISONS",
                        tuple(c for c in matching.COMPARISONS if c is not matching.shift_findings))


def _receipt_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every third receipt number is skipped."""
    import receipts.service as receipts

    original = receipts.next_receipt_sequence
    calls = {"n": 0}

    def next_receipt_sequence(session: Any, year: int) -> int:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            original(session, year)
        return original(session, year)

    monkeypatch.setattr(receipts, "next_receipt_sequence", next_receipt_sequence)


def _conflict_as_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2 of issue 10 put back: a new event reusing a bank reference for other money is
    answered 'duplicate' and recorded nowhere."""
    import webhooks.service as webhooks

    def money_already_under(session: Any, bank_code: str, payment_data: dict[str, Any], event: Any) -> Any:
        if webhooks._payment_by_reference(session, bank_code, payment_data["bank_reference"]) is not None:
            event.result, event.reason = "duplicate", "bank-reference-seen"
            return webhooks.CallbackAnswer(200, {"result": "duplicate"})
        return None

    monkeypatch.setattr(webhooks, "_money_already_under", money_already_under)


def _expiry_by_arrival(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bank payment judged by when its callback arrived, not by its paid_at."""
    import payments.service as payments

    original = payments.check_payable
    monkeypatch.setattr(payments, "check_payable",
                        lambda notice, at, timezone: original(notice, payments.utcnow(), timezone))


def _refund_without_void(monkeypatch: pytest.MonkeyPatch) -> None:
    """A confirmed payment may be recorded as refunded directly (its receipt stays valid)."""
    from payments.models import PAYMENT_TRANSITIONS, PaymentStatus

    monkeypatch.setitem(PAYMENT_TRANSITIONS, PaymentStatus.CONFIRMED,
                        {PaymentStatus.REFUND_DUE, PaymentStatus.REFUNDED})


MUTANTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "no-status-check": _no_status_check,
    "flagged-receipted": _flagged_receipted,
    "skip-audit": _skip_audit,
    "cancel-paid": _cancel_paid,
    "recon-skips-cash-drawer": _recon_skips_cash_drawer,
    "receipt-gap": _receipt_gap,
    "conflict-as-duplicate": _conflict_as_duplicate,
    "expiry-by-arrival": _expiry_by_arrival,
    "refund-without-void": _refund_without_void,
}


def apply_mutant(name: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if not name:
        return
    if name not in MUTANTS:
        raise pytest.UsageError(f"FEESVC_MUTANT={name}: unknown; one of {', '.join(MUTANTS)}")
    MUTANTS[name](monkeypatch)
