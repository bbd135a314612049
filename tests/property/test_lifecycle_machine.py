"""The whole lifecycle as a hypothesis state machine (issue 10, section 1).

Rules drive the real services — and, for cashier payments, bank callbacks, queries, voids and
certificates, also the API through the test client — in random order against the small model
of lifecycle_model.py; every rule checks its answer against the model, and after every step the
invariants compare the whole database with the model (see `database_agrees_with_model`).

Size: the profile `lifecycle` (default: make test, a couple of minutes on two cores);
FEESVC_LIFECYCLE_PROFILE=lifecycle-ci or lifecycle-long raises it. A failure prints
`@reproduce_failure(...)` (print_blob) to replay it exactly; the fake clock starts at a fixed
instant, so a replay replays the same days. FEESVC_MUTANT=<name> runs the machine against a
planted defect (tests/property/mutants.py; results in tests/property/MUTANTS.md).
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from core.audit import Actor, AuditEntry, verify_audit_chain
from core.clock import business_date
from core.errors import DomainError
from core.outbox import OutboxEvent
from notices.models import Notice
from notices.numbers import compose_notice_number, is_valid_notice_number
from payments.models import CashierShift, Payment
from receipts.models import Certificate, Receipt
from reconciliation.models import ReconciliationException, StatementLine
from tests.conftest import AUDIT_KEY
from tests.property.lifecycle_model import CONFLICT, FEES, MLine, MNotice, Model, MPayment, MReceipt, MShift
from tests.property.lifecycle_world import (
    BANK,
    START,
    TZ,
    Entry,
    FakeClock,
    World,
    callback_body,
    camt,
    install_clock,
    signed_headers,
)
from tests.property.mutants import apply_mutant
from webhooks.models import BankEvent, SecurityEvent

# No explain phase: its line tracer makes every step several times slower, and the failing
# steps and the reproduce_failure blob say what is needed.
settings.register_profile("lifecycle", max_examples=30, stateful_step_count=50, deadline=None,
                          print_blob=True, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("lifecycle-smoke", settings.get_profile("lifecycle"), max_examples=2)
settings.register_profile("lifecycle-mutants", settings.get_profile("lifecycle"), max_examples=300,
                          stateful_step_count=100, database=None)
settings.register_profile("lifecycle-ci", settings.get_profile("lifecycle"), max_examples=40, stateful_step_count=60)
settings.register_profile("lifecycle-long", settings.get_profile("lifecycle"), max_examples=300,
                          stateful_step_count=100)
PROFILE = os.environ.get("FEESVC_LIFECYCLE_PROFILE", "lifecycle")

# The actions whose audit entries the model counts (every one of them must be there, once).
AUDITED = ("notice.issued", "notice.cancelled", "notice.expired", "payment.confirmed", "payment.flagged",
           "receipt.voided", "payment.refund_due", "payment.refunded", "certificate.issued", "shift.closed",
           "statement.import", "reconciliation.run")
CASHIERS = ("cashier_1", "cashier_2")
METHODS = ("cash", "cash", "card", "transfer", "other")

WORLD: World | None = None  # set by the test for the machine it runs
CLOCK = FakeClock()


OUTCOMES: Counter[str] = Counter()  # what the rules did, over all examples: printed at the end


def event(outcome: str) -> None:
    OUTCOMES[outcome] += 1


def problem_code(response: Any) -> str | None:
    body = response.get_json(silent=True) or {}
    return str(body.get("type", "")).rsplit("/", 1)[-1] or None


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.seeded = self.world.reset()
        CLOCK.now = START
        self.db = self.world.db
        self.config = self.world.app.config
        self.client = self.world.app.test_client()
        self.model = Model()
        with self.db.reading() as session:
            self.model.audit = Counter(dict(session.execute(
                select(AuditEntry.action, func.count()).group_by(AuditEntry.action)).all()))
        self.serial = 0
        self.last_api: tuple[str, datetime, dict[str, Any], dict[str, str], int, Any] | None = None

    # --- helpers ---------------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def today(self) -> date:
        return CLOCK.today()

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.tokens[who]}", **extra}

    def attempt(self, work: Any) -> tuple[Any, DomainError | None]:
        """Run a service call in one unit of work; a refusal must leave nothing written."""
        try:
            with self.db.unit_of_work() as session:
                return work(session), None
        except DomainError as error:
            return None, error

    @staticmethod
    def expect(outcome: str | None, error: DomainError | None, status: int | None = None) -> None:
        """`outcome` None: success expected; else the problem code expected."""
        if outcome is None:
            assert error is None, f"refused with {error.code if error else None}: {error}"
        else:
            assert error is not None, f"expected {outcome}, but it succeeded"
            assert error.code == outcome, f"expected {outcome}, got {error.code}: {error}"

    def notices(self, *statuses: str) -> list[str]:
        return sorted(n for n, m in self.model.notices.items() if not statuses or m.status in statuses)

    def pick_notice(self, data: st.DataObject, preferred: list[str] | None = None) -> str:
        """Any notice, but three times in four a preferred one (by default one that can still take
        money: else cancellations soon leave nothing to pay)."""
        if preferred is None:
            preferred = [n for n in self.notices("issued") if self.model.notices[n].due_date >= self.today()]
        if preferred and data.draw(st.integers(0, 3), label="preferred notice") > 0:
            return data.draw(st.sampled_from(preferred), label="notice")
        return data.draw(st.sampled_from(self.notices()), label="notice")

    def settings_(self) -> Any:
        from receipts.service import receipt_settings

        return receipt_settings(self.config)

    # --- rules: the window -----------------------------------------------------------------------

    @initialize()
    def first_notice(self) -> None:
        """Every run starts with one plain notice, so that the money rules have something to act on."""
        self._issue("BDC", [("BDC-ZZ", 1, None)], None)

    @rule(data=st.data())
    def issue_notice(self, data: st.DataObject) -> None:
        department = data.draw(st.sampled_from(sorted(FEES)), label="department")
        fees = FEES[department]
        lines = []
        for _ in range(data.draw(st.integers(1, 3), label="lines")):
            code = data.draw(st.sampled_from(sorted(fees)), label="fee")
            quantity = data.draw(st.integers(1, 3), label="quantity")
            override = data.draw(st.one_of(st.none(), st.none(), st.none(),
                                           st.integers(0, fees[code] * quantity)), label="override")
            lines.append((code, quantity, override))
        due_in = data.draw(st.sampled_from([None, 0, 1, 2]), label="due in days")
        self._issue(department, lines, due_in)

    def _issue(self, department: str, lines: list[tuple[str, int, int | None]], due_in: int | None) -> None:
        from notices.service import LineRequest, issue_notice, settings_from_config

        total = sum(FEES[department][code] * q if o is None else o for code, q, o in lines)
        due = self.today() + timedelta(days=15 if due_in is None else due_in)

        def work(session: Any) -> tuple[str, list[int]]:
            clerk = self.world.user(session, f"window_{department}")
            items = [LineRequest(c, q, o, None if o is None else "困难群众减免") for c, q, o in lines]
            notice = issue_notice(session, settings_from_config(self.config), clerk, department_code=department,
                                  payer_name="张三", items=items, due_date=None if due_in is None else due)
            return notice.number, [line.id for line in notice.lines if line.override_reason is not None]

        made, error = self.attempt(work)
        self.expect("validation" if total == 0 else None, error)
        event(f"issue: {'refused' if error else 'issued'}")
        if made is None:
            return
        number, override_lines = made
        assert number not in self.model.notices, "a notice number was given twice"
        self.model.notices[number] = MNotice(number, department, total, due, self.today(), CLOCK.now, override_lines)
        self.model.audit["notice.issued"] += 1

    @precondition(lambda self: self.model.notices)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        from notices.service import cancel_notice, settings_from_config

        number = data.draw(st.sampled_from(self.notices()), label="notice")
        notice = self.model.notices[number]
        _, error = self.attempt(lambda s: cancel_notice(s, settings_from_config(self.config),
                                                        self.world.user(s, f"window_{notice.department}"),
                                                        number, "当事人撤回申请"))
        refused = {"paid": "notice-already-paid", "cancelled": "notice-cancelled"}.get(notice.status)
        self.expect(refused, error)
        if refused is None:
            notice.status = "cancelled"
            self.model.audit["notice.cancelled"] += 1

    @rule(minutes=st.sampled_from([2, 45, 3 * 60, 9 * 60, 24 * 60, 2 * 24 * 60]), nightly_job=st.booleans())
    def advance_clock(self, minutes: int, nightly_job: bool) -> None:
        """Time passes; when it passes midnight, the nightly expiry job may run (or be late)."""
        from notices.service import expire_overdue, settings_from_config

        before = self.today()
        CLOCK.advance(timedelta(minutes=minutes))
        today = self.today()
        if today == before or not nightly_job:
            return
        expired, error = self.attempt(lambda s: expire_overdue(s, settings_from_config(self.config), today))
        self.expect(None, error)
        due = {n for n, m in self.model.notices.items() if m.status == "issued" and m.due_date < today}
        assert set(expired) == due
        event(f"expiry: {'some' if due else 'none'} expired")
        for number in due:
            self.model.notices[number].status = "expired"
        self.model.audit["notice.expired"] += len(due)

    @precondition(lambda self: self.model.notices)
    @rule(data=st.data(), via_api=st.booleans())
    def certificate(self, data: st.DataObject, via_api: bool) -> None:
        from receipts.service import issue_certificate

        number = self.pick_notice(data, self.notices("paid"))
        notice = self.model.notices[number]
        valid = [r for r in self.model.receipts.values() if r.notice == number and r.status == "valid"]
        if notice.certificate is not None:
            refused: str | None = "certificate-already-issued"
        elif notice.status != "paid" or not valid or valid[0].amount != notice.total:
            refused = "payment-required"
        else:
            refused = None
        event(f"certificate: {refused or 'issued'}")
        who = f"window_{notice.department}"
        if via_api:
            response = self.client.post(f"/api/v1/notices/{number}/certificate", json={},
                                        headers=self.headers(who, **{"Idempotency-Key": self.next_id("cert")}))
            assert response.status_code == (201 if refused is None else 409), response.get_json()
            assert refused is None or problem_code(response) == refused
        else:
            _, error = self.attempt(lambda s: issue_certificate(s, self.settings_(), self.world.user(s, who), number))
            self.expect(refused, error)
        if refused is None:
            notice.certificate = f"CERT-{number}"
            self.model.audit["certificate.issued"] += 1

    # --- rules: the cashier ----------------------------------------------------------------------

    @precondition(lambda self: self.model.notices)
    @rule(data=st.data(), cashier=st.sampled_from(CASHIERS), method=st.sampled_from(METHODS), via_api=st.booleans())
    def pay_at_cashier(self, data: st.DataObject, cashier: str, method: str, via_api: bool) -> None:
        from payments.service import confirm_cashier_payment

        number = self.pick_notice(data)
        notice = self.model.notices[number]
        amount = notice.total + data.draw(st.sampled_from([0, 0, 0, 1, -1, 100]), label="amount off by")
        if amount <= 0:
            amount = notice.total
        refused = self.model.refusal(number, self.today())
        if refused is None and amount != notice.total:
            refused = "amount-mismatch"
        event(f"cashier: {refused or 'confirmed'}")
        if via_api:
            url, body = f"/api/v1/notices/{number}/payments", {"amount": amount, "method": method}
            headers = self.headers(cashier, **{"Idempotency-Key": self.next_id("pay")})
            response = self.client.post(url, json=body, headers=headers)
            expected = 201 if refused is None else 422 if refused == "amount-mismatch" else 409
            assert response.status_code == expected, response.get_json()
            assert refused is None or problem_code(response) == refused
            self.last_api = (url, CLOCK.now, body, headers, response.status_code, response.get_json())
            made = None if refused else (response.json["payment"]["id"], response.json["receipt"]["number"])
        else:
            def work(s: Any) -> tuple[int, str]:
                confirmation = confirm_cashier_payment(s, self.settings_(), self.world.user(s, cashier),
                                                       notice_number=number, amount=amount, method=method)
                return confirmation.payment.id, confirmation.receipt.number
            made, error = self.attempt(work)
            self.expect(refused, error)
        if made is None:
            return
        payment_id, receipt_number = made
        with self.db.reading() as session:
            shift_id = session.scalar(select(Payment.shift_id).where(Payment.id == payment_id))
        assert shift_id is not None
        if cashier in self.model.open_shift:
            assert shift_id == self.model.open_shift[cashier], "a payment went to another shift than the open one"
        self.model.open_shift[cashier] = shift_id
        shift = self.model.shifts.setdefault(shift_id, MShift(shift_id, cashier))
        shift.cash += amount if method == "cash" else 0
        self._confirmed(MPayment(payment_id, number, number, "cashier", method, amount, "confirmed", self.today(),
                                 shift_id=shift_id, receipt=receipt_number))

    def _confirmed(self, payment: MPayment) -> None:
        assert payment.receipt is not None and payment.notice is not None
        assert payment.receipt not in self.model.receipts
        self.model.payments[payment.id] = payment
        self.model.receipts[payment.receipt] = MReceipt(payment.receipt, payment.notice, payment.id, payment.amount)
        self.model.notices[payment.notice].status = "paid"
        self.model.audit["payment.confirmed"] += 1

    # A key is kept for 24 hours (API.md): replayed well within them.
    @precondition(lambda self: self.last_api is not None and CLOCK.now - self.last_api[1] < timedelta(hours=23))
    @rule()
    def replay_cashier_request(self) -> None:
        """The same Idempotency-Key and body again (a double click, a retry): the first answer, replayed."""
        assert self.last_api is not None
        url, _sent_at, body, headers, status, answer = self.last_api
        response = self.client.post(url, json=body, headers=headers)
        assert response.status_code == status and response.get_json() == answer
        assert response.headers.get("Idempotent-Replayed") == "true"

    @rule(data=st.data())
    def close_shift(self, data: st.DataObject) -> None:
        from payments.service import close_shift

        cashier = data.draw(st.sampled_from(sorted(self.model.open_shift) or CASHIERS), label="cashier")

        shift_id = self.model.open_shift.get(cashier)
        cash = self.model.shifts[shift_id].cash if shift_id is not None else 0
        declared = max(0, cash + data.draw(st.sampled_from([0, 0, -100, 100, -1]), label="declared off by"))
        _, error = self.attempt(lambda s: close_shift(s, self.settings_(), self.world.user(s, cashier),
                                                      declared_cash=declared))
        self.expect(None if shift_id is not None else "shift-not-open", error)
        event(f"close shift: {'closed' if shift_id is not None else 'shift-not-open'}")
        if shift_id is not None:
            shift = self.model.shifts[shift_id]
            shift.closed_day, shift.declared = self.today(), declared
            del self.model.open_shift[cashier]
            self.model.audit["shift.closed"] += 1

    # --- rules: the bank -------------------------------------------------------------------------

    @rule(data=st.data(), via_api=st.booleans(),
          kind=st.sampled_from(["pay", "pay", "pay", "wrong-amount", "unknown-notice", "invalid-number",
                                "redeliver", "same-id-other-body", "reused-reference-same", "reused-reference-other",
                                "lost-callback"]))
    def bank_callback(self, data: st.DataObject, via_api: bool, kind: str) -> None:
        m = self.model
        bank_payments = sorted(p.id for p in m.payments.values() if p.channel == "bank")
        lost = sorted(r for r, line in m.lines.items()
                      if line.direction == "CRDT" and not line.reversal and m.named_by(r) is None and line.notice)
        if kind in ("redeliver", "same-id-other-body") and m.events:
            webhook_id = data.draw(st.sampled_from(sorted(m.events)), label="webhook-id")
            body = m.events[webhook_id]
            if kind == "same-id-other-body":
                document = json.loads(body)
                document["data"]["amount"] += 1
                body = json.dumps(document, ensure_ascii=False).encode()
            answer = self._post_callback(webhook_id, body, via_api)
            event(f"bank {kind}: {answer[0]}")
            if kind == "redeliver":
                assert answer == (200, {"result": "duplicate"})
            else:
                assert answer[0] == 409
                m.security["webhook-id-reused"] += 1 if via_api else 0
            return
        offset = data.draw(st.sampled_from([0, 0, 5, 90, 600, 1800]), label="paid minutes ago")
        paid_at = CLOCK.now - timedelta(minutes=offset)
        reference = m.new_reference()
        if kind in ("reused-reference-same", "reused-reference-other") and bank_payments:
            earlier = m.payments[data.draw(st.sampled_from(bank_payments), label="earlier payment")]
            assert earlier.bank_reference is not None
            reference, number, amount = earlier.bank_reference, earlier.notice_given, earlier.amount
            if kind == "reused-reference-other":
                others = [n for n in self.notices() if n != number]
                if others:
                    number = data.draw(st.sampled_from(others), label="other notice")
                    amount = m.notices[number].total
                else:
                    amount += 1
        elif kind == "lost-callback" and lost:
            reference = data.draw(st.sampled_from(lost), label="lost line")
            number, amount = m.lines[reference].notice or "", m.lines[reference].amount
        elif kind == "unknown-notice" or not m.notices:
            number, amount = compose_notice_number("990001", CLOCK.now.year, 9_000_000 + self.serial), 8000
        elif kind == "invalid-number":
            valid = data.draw(st.sampled_from(self.notices()), label="notice")
            number, amount = valid[:-1] + str((int(valid[-1]) + 1) % 10), m.notices[valid].total
        else:
            number = self.pick_notice(data)
            amount = m.notices[number].total + (data.draw(st.sampled_from([1, 100, -1]), label="off by")
                                                if kind == "wrong-amount" else 0)
            amount = amount if amount > 0 else 1
        if number in m.notices and paid_at < m.notices[number].issued_at:
            paid_at = m.notices[number].issued_at  # money is not paid before its notice exists
        paid_day = business_date(paid_at, TZ)
        expected, reason = m.bank_outcome(number, amount, reference, paid_day)
        event(f"bank {kind}: {expected} {reason or ''}")
        webhook_id = self.next_id("wh")
        body = callback_body(number, amount, reference, paid_at)
        status, answer = self._post_callback(webhook_id, body, via_api)
        assert status == 200 and answer.get("result") == expected, (answer, expected, reason)
        assert answer.get("reason") == reason
        m.events[webhook_id] = body
        if expected == "duplicate":
            return
        with self.db.reading() as session:
            payment_id = session.scalar(select(BankEvent.payment_id).where(BankEvent.webhook_id == webhook_id))
        assert payment_id is not None
        known = number if number in m.notices else None
        payment = MPayment(payment_id, number, known, "bank", "transfer", amount, expected, paid_day,
                           flag_reason=reason, bank_reference=reference)
        if expected == "confirmed":
            payment.receipt = answer["receipt_number"]
            self._confirmed(payment)
            return
        m.payments[payment_id] = payment
        m.audit["payment.flagged"] += 1
        m.security[CONFLICT] += 1 if reason == CONFLICT else 0

    def _post_callback(self, webhook_id: str, body: bytes, via_api: bool) -> tuple[int, dict[str, Any]]:
        from webhooks.service import handle_callback

        headers = signed_headers(self.seeded.bank_secret, webhook_id, body)
        if via_api:
            response = self.client.post(f"/webhooks/bank/{BANK}", data=body, headers=headers)
            return response.status_code, response.get_json() or {}
        answer, error = self.attempt(lambda s: handle_callback(s, self.settings_(), BANK, headers, body))
        if error is not None:
            return error.status, {"type": error.code}
        return answer.status, answer.body

    @precondition(lambda self: self.model.notices)
    @rule(data=st.data())
    def bank_query(self, data: st.DataObject) -> None:
        number = data.draw(st.sampled_from(self.notices()), label="notice")
        body = json.dumps({"notice_number": number}).encode()
        response = self.client.post(f"/webhooks/bank/{BANK}/query", data=body,
                                    headers=signed_headers(self.seeded.bank_secret, self.next_id("q"), body))
        notice = self.model.notices[number]
        assert response.status_code == 200, response.get_json()
        assert (response.json["status"], response.json["total"]) == (notice.status_on(self.today()), notice.total)

    # --- rules: finance --------------------------------------------------------------------------

    @precondition(lambda self: self.model.receipts)
    @rule(data=st.data(), via_api=st.booleans())
    def void(self, data: st.DataObject, via_api: bool) -> None:
        from payments.service import void_receipt

        number = data.draw(st.sampled_from(sorted(self.model.receipts)), label="receipt")
        receipt = self.model.receipts[number]
        notice = self.model.notices[receipt.notice]
        refused = ("receipt-voided" if receipt.status == "voided" else
                   "certificate-issued" if notice.certificate is not None else None)
        event(f"void: {refused or 'voided'}")
        if via_api:
            response = self.client.post(f"/api/v1/receipts/{number}/void", json={"reason": "收费有误"},
                                        headers=self.headers("finance", **{"Idempotency-Key": self.next_id("void")}))
            assert response.status_code == (200 if refused is None else 409), response.get_json()
            assert refused is None or problem_code(response) == refused
        else:
            _, error = self.attempt(lambda s: void_receipt(s, self.settings_(), self.world.user(s, "finance"),
                                                           number, "收费有误"))
            self.expect(refused, error)
        if refused is None:
            receipt.status = "voided"
            self.model.payments[receipt.payment_id].status = "refund_due"
            notice.status = "issued"
            self.model.audit["receipt.voided"] += 1

    @precondition(lambda self: self.model.payments)
    @rule(data=st.data())
    def mark_refund_due(self, data: st.DataObject) -> None:
        from payments.service import mark_refund_due

        payment = self.model.payments[data.draw(st.sampled_from(sorted(self.model.payments)), label="payment")]
        _, error = self.attempt(lambda s: mark_refund_due(s, self.settings_(), self.world.user(s, "finance"),
                                                          payment.id, "无法匹配，退回缴款人"))
        self.expect(None if payment.status == "flagged" else "refund-not-due", error)
        if payment.status == "flagged":
            payment.status = "refund_due"
            self.model.audit["payment.refund_due"] += 1

    @precondition(lambda self: self.model.payments)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        from payments.service import record_refund

        payment = self.model.payments[data.draw(st.sampled_from(sorted(self.model.payments)), label="payment")]
        _, error = self.attempt(lambda s: record_refund(s, self.settings_(), self.world.user(s, "finance"),
                                                        payment.id, method="transfer", reference="退款凭证"))
        self.expect(None if payment.status == "refund_due" else "refund-not-due", error)
        if payment.status == "refund_due":
            payment.status = "refunded"
            self.model.audit["payment.refunded"] += 1

    def days(self) -> list[date]:
        first = business_date(START, TZ)
        return [first + timedelta(days=n) for n in range((self.today() - first).days + 1)]

    @rule(data=st.data())
    def import_statement(self, data: st.DataObject) -> None:
        """The bank's statement of one day, built from what happened that day, with lines left
        out, amounts the bank booked differently, reversals, bank charges and money whose
        callback never came; or a file contradicting an earlier one (refused whole)."""
        from reconciliation.statements import import_statement

        m = self.model
        day = data.draw(st.sampled_from(self.days()[::-1]), label="statement day")
        entries: list[Entry] = []
        firsts: dict[str, MPayment] = {}
        for p in sorted(m.payments.values(), key=lambda p: p.id):
            if p.channel == "bank" and p.bank_reference is not None:
                firsts.setdefault(p.bank_reference, p)
        for reference, p in firsts.items():
            if p.day != day:
                continue
            known = m.lines.get(reference)
            fate = data.draw(st.sampled_from(["book", "book", "book", "leave out", "amount differs"]),
                             label=f"line {reference}")
            if fate == "leave out":
                continue
            amount = known.amount if known else p.amount + (data.draw(st.sampled_from([-1, 100]), label="by")
                                                            if fate == "amount differs" else 0)
            entries.append(Entry(reference, max(amount, 1), day, p.notice_given))
        for extra in data.draw(st.lists(st.sampled_from(["lost callback", "stray", "reversal", "charge"]),
                                        max_size=2), label="extra lines"):
            unpaid = [n for n in self.notices("issued", "expired")]
            if extra == "lost callback" and unpaid:
                number = data.draw(st.sampled_from(unpaid), label="lost notice")
                entries.append(Entry(m.new_reference("LOST"), m.notices[number].total, day, number))
            elif extra == "reversal":
                entries.append(Entry(m.new_reference("RV"), 8000, day, direction="DBIT", reversal=True))
            elif extra == "charge":
                entries.append(Entry(m.new_reference("FEE"), 1500, day, direction="DBIT"))
            else:
                entries.append(Entry(m.new_reference("STRAY"), 4200, day))
        booked_before = [line for line in m.lines.values() if line.booked == day]
        conflict = bool(booked_before) and data.draw(st.integers(0, 4), label="contradicts an earlier file") == 0
        if conflict:
            before = data.draw(st.sampled_from(sorted(booked_before, key=lambda line: line.id)), label="contradicted")
            entries = [e for e in entries if e.reference != before.reference]
            entries.append(Entry(before.reference, before.amount + 1, day, direction=before.direction,
                                 reversal=before.reversal))
        content = camt(entries, day, self.next_id("STMT"))
        result, error = self.attempt(lambda s: import_statement(
            s, AUDIT_KEY, Actor("user", "m-finance"), bank_code=BANK,
            stream=io.BytesIO(content), filename="statement.xml", timezone=TZ).new_lines)
        self.expect("statement-conflict" if conflict else None, error)
        event(f"statement: {'conflict' if conflict else 'imported'}")
        if conflict:
            return
        new = {e.reference: e for e in entries if e.reference not in m.lines}
        assert result == len(new)
        with self.db.reading() as session:
            ids = dict(session.execute(select(StatementLine.bank_reference, StatementLine.id)
                                       .where(StatementLine.bank_reference.in_(list(new)))).all())
        for reference, e in new.items():
            m.lines[reference] = MLine(ids[reference], reference, e.amount, e.booked, e.direction, e.reversal,
                                       e.notice_number)
        m.statement_days.add(day)
        m.audit["statement.import"] += 1

    @rule(data=st.data())
    def reconcile_day(self, data: st.DataObject) -> None:
        """Reconciliation finds exactly the exceptions the model expects of that day, no more."""
        from reconciliation.service import reconcile

        day = data.draw(st.sampled_from(self.days()[::-1]), label="business date")
        reconcile(self.db, self.settings_(), day, started_by="m-finance")
        self.model.audit["reconciliation.run"] += 1
        with self.db.reading() as session:
            found = {(e.type, e.subject, e.subject_id) for e in session.scalars(
                select(ReconciliationException).where(ReconciliationException.business_date == day,
                                                      ReconciliationException.status == "open"))}
        expected = self.model.expected_exceptions(day)
        for kind in sorted({e[0] for e in expected}):
            event(f"reconcile found {kind}")
        assert found - expected == set(), f"{day}: found but not expected"
        assert expected - found == set(), f"{day}: expected but not found"

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_model(self) -> None:
        m = self.model
        with self.db.reading() as s:
            notices = dict(s.execute(select(Notice.number, Notice.status)).all())
            assert notices == {n: x.status for n, x in m.notices.items()}
            assert all(is_valid_notice_number(n) for n in notices)
            assert s.scalar(select(func.count(Notice.id))) == len(notices), "a notice number twice"

            payments = list(s.scalars(select(Payment)))
            assert {p.id: (p.status, p.flag_reason, p.amount, p.channel, p.notice_number_given)
                    for p in payments} == {
                i: (p.status, p.flag_reason, p.amount, p.channel, p.notice_given) for i, p in m.payments.items()}
            receipts = list(s.scalars(select(Receipt)))
            assert {r.number: (r.status, r.payment_id, r.amount) for r in receipts} == {
                r.number: (r.status, r.payment_id, r.amount) for r in m.receipts.values()}

            # at most one confirmed payment and one valid receipt per notice
            for column, status, table in ((Payment.notice_id, "confirmed", Payment),
                                          (Receipt.notice_id, "valid", Receipt)):
                doubled = s.execute(select(column).where(table.status == status, column.is_not(None))
                                    .group_by(column).having(func.count() > 1)).all()
                assert doubled == [], f"a notice with two {status} {table.__tablename__}"
            # a certificate only with a valid receipt for the full total
            certificates = s.execute(select(Notice.number, Certificate.number, Receipt.status, Receipt.amount,
                                            Notice.total).join(Notice, Notice.id == Certificate.notice_id)
                                     .join(Receipt, Receipt.id == Certificate.receipt_id)).all()
            assert {c[0]: c[1] for c in certificates} == {
                n: x.certificate for n, x in m.notices.items() if x.certificate}
            assert all(status == "valid" and amount == total for _n, _c, status, amount, total in certificates)

            # receipt numbers gap-free per series (the number's text before its last dash)
            series: dict[str, list[int]] = {}
            for r in receipts:
                prefix, _, sequence = r.number.rpartition("-")
                series.setdefault(prefix, []).append(int(sequence))
            for prefix, numbers in series.items():
                assert sorted(numbers) == list(range(1, len(numbers) + 1)), f"receipt series {prefix} has a gap"

            # money conservation per business day
            received: dict[date, Counter[str]] = {}
            valid_by_payment = {r.payment_id: r.amount for r in receipts if r.status == "valid"}
            for p in payments:
                day = business_date(p.recorded_at if p.channel == "cashier" else p.paid_at, TZ)
                bucket = received.setdefault(day, Counter())
                bucket["received"] += p.amount
                bucket["receipted"] += valid_by_payment.get(p.id, 0)
                if p.status != "confirmed":
                    bucket[p.status] += p.amount
            for day, bucket in received.items():
                assert bucket["received"] == (bucket["receipted"] + bucket["flagged"] + bucket["refund_due"]
                                              + bucket["refunded"]), f"money of {day} does not add up: {bucket}"
            assert {d: +b for d, b in received.items()} == {d: +Counter(b) for d, b in m.money_by_day().items()}

            # shifts: the open ones, and what the closed ones declared and recorded
            shifts = list(s.scalars(select(CashierShift)))
            assert {x.id: (x.recorded_cash, x.declared_cash) for x in shifts if x.closed_at is not None} == {
                i: (x.cash, x.declared) for i, x in m.shifts.items() if x.closed_day is not None}
            assert {x.id for x in shifts if x.closed_at is None} == set(m.open_shift.values())

            # audit: the chain verifies, and every change the model made has its entry
            report = verify_audit_chain(s, AUDIT_KEY)
            assert report.ok, report
            actions = Counter(dict(s.execute(select(AuditEntry.action, func.count())
                                             .where(AuditEntry.action.in_(AUDITED)).group_by(AuditEntry.action)).all()))
            assert +actions == +Counter({a: m.audit[a] for a in AUDITED})

            # outbox: every event is one state change, every such change has its event
            events: dict[str, Counter[str]] = {}
            for event_type, payload in s.execute(select(OutboxEvent.event_type, OutboxEvent.payload)):
                data = json.loads(payload)["data"]
                key = data["certificate_number"] if event_type == "certificate.issued" else data["receipt_number"]
                events.setdefault(event_type, Counter())[key] += 1
            assert events.get("notice.paid", Counter()) == Counter(list(m.receipts))
            assert events.get("receipt.voided", Counter()) == Counter(
                n for n, r in m.receipts.items() if r.status == "voided")
            assert events.get("certificate.issued", Counter()) == Counter(
                x.certificate for x in m.notices.values() if x.certificate)

            kinds = Counter(dict(s.execute(select(SecurityEvent.kind, func.count())
                                           .group_by(SecurityEvent.kind)).all()))
            assert +kinds == +m.security


@pytest.fixture
def world(database_url_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    global WORLD
    WORLD = World(database_url_factory("lifecycle_machine"), tmp_path)
    install_clock(monkeypatch, CLOCK)
    apply_mutant(os.environ.get("FEESVC_MUTANT"), monkeypatch)
    with WORLD.app.app_context():
        yield WORLD
    WORLD.close()
    WORLD = None


@pytest.mark.slow
def test_the_lifecycle_machine(world: World) -> None:
    OUTCOMES.clear()
    run_state_machine_as_test(LifecycleMachine, settings=settings(settings.get_profile(PROFILE)))
    # Seen with -s (or -rP): how often each path was taken, to judge the profile's size.
    print("\n".join(f"{n:6d}  {outcome}" for outcome, n in sorted(OUTCOMES.items())))
