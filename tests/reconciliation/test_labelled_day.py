"""A labelled business day built through the public API and a camt.053 statement: one planted
case per exception type among clean cases of every channel → exactly the planted exceptions.
Reruns keep identities and resolutions; a late statement closes what it explains."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from core.audit import Actor
from core.clock import today
from core.db import Database
from core.models import User
from fees.service import import_fee_schedule
from notices.models import Notice, NoticeLine
from notices.numbers import compose_notice_number, group_digits
from payments.models import Payment
from receipts.models import Certificate, Receipt
from reconciliation.models import ReconciliationException, StatementLine
from tests.conftest import AUDIT_KEY, Staff, issue
from tests.webhooks.conftest import Bank

TZ = "Asia/Shanghai"
pytestmark = pytest.mark.usefixtures("staff")


def camt(entries: list[str], day: date, statement_id: str = "STMT-1") -> bytes:
    return (f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
<GrpHdr><MsgId>{statement_id}</MsgId><CreDtTm>{day}T23:50:00+08:00</CreDtTm></GrpHdr>
<Stmt><Id>{statement_id}</Id><CreDtTm>{day}T23:50:00+08:00</CreDtTm>
<Acct><Id><Othr><Id>1202021309900001234</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
{''.join(entries)}
</Stmt></BkToCstmrStmt></Document>""").encode()


def credit(day: date, reference: str, yuan: str, *, strd: str | None = None, ustrd: str | None = None,
           direction: str = "CRDT", reversal: bool = False) -> str:
    remittance = (f"<RmtInf><Strd><CdtrRefInf><Ref>{strd}</Ref></CdtrRefInf></Strd></RmtInf>" if strd else
                  f"<RmtInf><Ustrd>{ustrd}</Ustrd></RmtInf>" if ustrd else "")
    return (f"<Ntry><Amt Ccy=\"CNY\">{yuan}</Amt><CdtDbtInd>{direction}</CdtDbtInd>"
            f"{'<RvslInd>true</RvslInd>' if reversal else ''}<Sts><Cd>BOOK</Cd></Sts>"
            f"<BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{reference}</AcctSvcrRef>"
            f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>{reference}</AcctSvcrRef></Refs>"
            f"<Amt Ccy=\"CNY\">{yuan}</Amt><CdtDbtInd>{direction}</CdtDbtInd>"
            f"<RltdPties><Dbtr><Pty><Nm>缴款人</Nm></Pty></Dbtr></RltdPties>{remittance}</TxDtls></NtryDtls></Ntry>")


def batch(day: date, reference: str, parts: list[tuple[str, str, str]]) -> str:
    """A batch entry: several TxDtls (reference, yuan, free-text remittance)."""
    total = sum(float(yuan) for _, yuan, _ in parts)
    details = "".join(
        f"<TxDtls><Refs><AcctSvcrRef>{ref}</AcctSvcrRef></Refs><Amt Ccy=\"CNY\">{yuan}</Amt>"
        f"<CdtDbtInd>CRDT</CdtDbtInd><RmtInf><Ustrd>{ustrd}</Ustrd></RmtInf></TxDtls>" for ref, yuan, ustrd in parts)
    return (f"<Ntry><Amt Ccy=\"CNY\">{total:.2f}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
            f"<BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{reference}</AcctSvcrRef>"
            f"<NtryDtls><Btch><NbOfTxs>{len(parts)}</NbOfTxs></Btch>{details}</NtryDtls></Ntry>")


def charge(day: date, reference: str, yuan: str) -> str:
    return (f"<Ntry><Amt Ccy=\"CNY\">{yuan}</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
            f"<BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{reference}</AcctSvcrRef>"
            f"<AddtlNtryInf>账户管理费</AddtlNtryInf></Ntry>")


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass
class Day:
    """What was planted: (type, subject, subject id) for each expected exception."""

    day: date
    expected: set[tuple[str, str, int]] = field(default_factory=set)
    names: dict[str, Any] = field(default_factory=dict)


def notice(client: FlaskClient, staff: Staff, **kw: Any) -> dict[str, Any]:
    response = issue(client, staff, **kw)
    assert response.status_code == 201, response.json
    return dict(response.json)


def cashier_pay(client: FlaskClient, staff: Staff, number: str, amount: int, method: str = "cash") -> dict[str, Any]:
    response = client.post(f"/api/v1/notices/{number}/payments", json={"amount": amount, "method": method},
                           headers=staff.headers("cashier"))
    assert response.status_code == 201, response.json
    return dict(response.json)


def import_file(client: FlaskClient, staff: Staff, content: bytes, bank_code: str, name: str = "s.xml") -> Any:
    return client.post("/api/v1/bank-statements", data={"bank_code": bank_code, "file": (io.BytesIO(content), name)},
                       headers=staff.headers("finance"), content_type="multipart/form-data")


def payment_by_reference(db: Database, reference: str) -> Payment:
    with db.reading() as session:
        return session.scalars(select(Payment).where(Payment.bank_reference == reference)).one()


def first_line(db: Database, number: str) -> int:
    with db.reading() as session:
        return session.scalars(select(NoticeLine.id).join(Notice, Notice.id == NoticeLine.notice_id)
                               .where(Notice.number == number).order_by(NoticeLine.position)).first() or 0


def line_id(db: Database, reference: str) -> int:
    with db.reading() as session:
        return session.scalars(select(StatementLine.id).where(StatementLine.bank_reference == reference)).one()


@pytest.fixture
def labelled(app: Flask, db: Database, client: FlaskClient, staff: Staff, bank: Bank) -> Day:
    d = today(TZ)
    planted = Day(d)
    exp = planted.expected
    entries: list[str] = []

    def bank_pay(number: str, amount: int, reference: str, in_statement: bool = True) -> Any:
        response = bank.pay(number, amount, webhook_id=f"wh-{reference}", reference=reference)
        assert response.status_code == 200, response.json
        if in_statement:
            entries.append(credit(d, reference, yuan(amount), strd=number))
        return response.json

    # --- clean cases of every channel ---
    for method in ("cash", "card", "transfer"):
        clean = notice(client, staff)
        cashier_pay(client, staff, clean["number"], clean["total"], method)
    clean_bank = notice(client, staff, department="GA", who="window_other",
                        items=[{"fee_code": "GA-SFZ", "quantity": 1}])
    bank_pay(clean_bank["number"], 2000, "CLEAN-STRD")
    # A batch entry whose free-text remittance carries the number in groups of four, with spaces.
    batch_a = notice(client, staff)
    batch_b = notice(client, staff, department="GA", who="window_other",
                     items=[{"fee_code": "GA-LSSFZ", "quantity": 1}])
    bank.pay(batch_a["number"], 8000, webhook_id="wh-B1", reference="CLEAN-B1")
    bank.pay(batch_b["number"], 1000, webhook_id="wh-B2", reference="CLEAN-B2")
    entries.append(batch(d, "BATCH-1", [("CLEAN-B1", "80.00", f"缴款码 {group_digits(batch_a['number'])} 登记费"),
                                         ("CLEAN-B2", "10", f"{batch_b['number']}")]))
    entries.append(charge(d, "CHARGE-1", "15.00"))  # a bank charge: reported, never flagged
    certified = notice(client, staff)
    cashier_pay(client, staff, certified["number"], 8000, "card")
    assert client.post(f"/api/v1/notices/{certified['number']}/certificate", json={},
                       headers=staff.headers("window")).status_code == 201

    # --- fee_not_in_schedule: a code withdrawn (retroactively) before the issue date ---
    withdrawn = notice(client, staff, department="ZJ", who="window_zj", items=[{"fee_code": "ZJ-PTF", "quantity": 2}])
    # --- fee_amount_mismatch: an override, and a line priced from a version later corrected ---
    overridden = notice(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1, "override_amount": 4000,
                                               "override_reason": "困难群众减半"}])
    with db.unit_of_work() as session:
        schedule = (
            "code,name,department_code,department_name,unit,amount,legal_basis,effective_from,effective_to\n"
            "ZJ-PTF,城市基础设施配套费,ZJ,县住房和城乡建设局,平方米,13500,县政府配套费征收办法（示例，2026年调整）,"
            f"2026-07-01,{date.fromordinal(d.toordinal() - 1)}\n"
        )
        import_fee_schedule(session, AUDIT_KEY, Actor.system("tests"), schedule.encode())
    corrected = notice(client, staff, items=[{"fee_code": "BDC-GBF", "quantity": 3}])
    with db.unit_of_work() as session:
        schedule = (
            "code,name,department_code,department_name,unit,amount,legal_basis,effective_from,effective_to\n"
            f"BDC-GBF,不动产权证书工本费（每增加一本）,BDC,县不动产登记中心,本,1000,发改价格规〔2016〕2559号,2025-01-01,"
            f"{date.fromordinal(d.toordinal() - 1)}\n"
            f"BDC-GBF,不动产权证书工本费（每增加一本）,BDC,县不动产登记中心,本,800,更正（示例）,{d},\n"
        )
        import_fee_schedule(session, AUDIT_KEY, Actor.system("tests"), schedule.encode())
    exp.add(("fee_not_in_schedule", "notice_line", first_line(db, withdrawn["number"])))
    exp.add(("fee_amount_mismatch", "notice_line", first_line(db, overridden["number"])))
    exp.add(("fee_amount_mismatch", "notice_line", first_line(db, corrected["number"])))

    # --- flagged bank payments, one per reason, all in the statement ---
    short = notice(client, staff)
    bank_pay(short["number"], 7000, "FLAG-AMOUNT")
    unknown_number = compose_notice_number("990001", d.year % 100, 9_999_999)
    bank_pay(unknown_number, 5000, "FLAG-UNKNOWN")
    twice = notice(client, staff)
    cashier_pay(client, staff, twice["number"], 8000)
    bank_pay(twice["number"], 8000, "FLAG-DUPLICATE")
    cancelled = notice(client, staff)
    assert client.post(f"/api/v1/notices/{cancelled['number']}/cancel", json={"reason": "撤回"},
                       headers=staff.headers("window")).status_code == 200
    bank_pay(cancelled["number"], 8000, "FLAG-CANCELLED")
    for kind, reference in (("payment_amount_mismatch", "FLAG-AMOUNT"), ("payment_without_notice", "FLAG-UNKNOWN"),
                            ("duplicate_payment", "FLAG-DUPLICATE"), ("payment_on_closed_notice", "FLAG-CANCELLED")):
        exp.add((kind, "payment", payment_by_reference(db, reference).id))

    # --- bank vs statement ---
    missing = notice(client, staff)
    bank_pay(missing["number"], 8000, "NOT-IN-STATEMENT", in_statement=False)
    exp.add(("payment_not_in_statement", "payment", payment_by_reference(db, "NOT-IN-STATEMENT").id))
    differs = notice(client, staff, department="GA", who="window_other", items=[{"fee_code": "GA-SFZ", "quantity": 1}])
    bank.pay(differs["number"], 2000, webhook_id="wh-DIFF", reference="AMOUNT-DIFFERS")
    entries.append(credit(d, "AMOUNT-DIFFERS", "21.00", strd=differs["number"]))
    lost = notice(client, staff)  # the bank booked it, its callback never came
    entries.append(credit(d, "LOST-CALLBACK", "80", ustrd=f"缴款码 {group_digits(lost['number'])} 不动产登记"))
    entries.append(credit(d, "REVERSAL-1", "80.00", strd=clean_bank["number"], direction="DBIT", reversal=True))
    planted.names.update(lost=lost, missing=missing)

    # --- receipts and certificates tampered with behind the service's back ---
    tampered = notice(client, staff)
    tampered_receipt = cashier_pay(client, staff, tampered["number"], 8000)["receipt"]["number"]
    revoked = notice(client, staff)
    revoked_receipt = cashier_pay(client, staff, revoked["number"], 8000)["receipt"]["number"]
    assert client.post(f"/api/v1/notices/{revoked['number']}/certificate", json={},
                       headers=staff.headers("window")).status_code == 201
    with db.unit_of_work() as session:
        void = ("UPDATE receipts SET status = 'voided', voided_at = CURRENT_TIMESTAMP, void_reason = '篡改' "
                "WHERE number = :n")
        session.execute(text(void), {"n": tampered_receipt})
        session.execute(text(void), {"n": revoked_receipt})
        revoked_payment = session.scalar(select(Receipt.payment_id).where(Receipt.number == revoked_receipt))
        session.execute(text("UPDATE payments SET status = 'refund_due' WHERE id = :id"), {"id": revoked_payment})
        exp.add(("payment_without_receipt", "payment",
                 session.scalar(select(Receipt.payment_id).where(Receipt.number == tampered_receipt)) or 0))
        exp.add(("certificate_without_receipt", "certificate",
                 session.scalar(select(Certificate.id).join(Receipt, Receipt.id == Certificate.receipt_id)
                                .where(Receipt.number == revoked_receipt)) or 0))

    # --- the cash drawer: declared 1 yuan short ---
    shift = client.get("/api/v1/shifts/current", headers=staff.headers("cashier")).json
    closed = client.post("/api/v1/shifts/current/close", json={"declared_cash": shift["recorded_cash"] - 100},
                         headers=staff.headers("cashier"))
    assert closed.status_code == 200, closed.json
    exp.add(("cash_drawer_mismatch", "shift", closed.json["id"]))

    # --- a receipt number skipped ---
    with db.unit_of_work() as session:
        session.execute(text("UPDATE receipt_counters SET last_number = last_number + 1"))
    after_gap = notice(client, staff)
    gap_receipt = cashier_pay(client, staff, after_gap["number"], 8000)["receipt"]["number"]
    with db.reading() as session:
        exp.add(("receipt_number_gap", "receipt",
                 session.scalar(select(Receipt.id).where(Receipt.number == gap_receipt)) or 0))

    imported = import_file(client, staff, camt(entries, d), bank.code)
    assert imported.status_code == 201, imported.json
    for kind, reference in (("statement_line_unmatched", "LOST-CALLBACK"),
                            ("statement_amount_mismatch", "AMOUNT-DIFFERS"), ("statement_reversal", "REVERSAL-1")):
        exp.add((kind, "statement_line", line_id(db, reference)))
    return planted


def run(client: FlaskClient, staff: Staff, day: date) -> dict[str, Any]:
    response = client.post("/api/v1/reconciliation/runs", json={"business_date": day.isoformat()},
                           headers=staff.headers("finance"))
    assert response.status_code == 201, response.json
    return dict(response.json)


def exceptions(client: FlaskClient, staff: Staff, run_id: int, **query: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/reconciliation/runs/{run_id}/exceptions", query_string=query,
                          headers=staff.headers("finance"))
    assert response.status_code == 200, response.json
    return list(response.json["items"])


def found_set(db: Database, ids: list[int]) -> set[tuple[str, str, int]]:
    with db.reading() as session:
        rows = session.scalars(select(ReconciliationException).where(ReconciliationException.id.in_(ids)))
        return {(row.type, row.subject, row.subject_id) for row in rows}


def test_exactly_the_planted_exceptions_are_found(client: FlaskClient, staff: Staff, db: Database,
                                                  labelled: Day) -> None:
    result = run(client, staff, labelled.day)
    assert result["status"] == "completed"
    items = exceptions(client, staff, result["id"], status="open")
    found = found_set(db, [item["id"] for item in items])
    assert found - labelled.expected == set(), "false positives"
    assert labelled.expected - found == set(), "missed"
    assert len(items) == len(labelled.expected) == 15
    assert {kind for kind, _, _ in found} == {
        "fee_not_in_schedule", "fee_amount_mismatch", "payment_amount_mismatch", "payment_without_notice",
        "duplicate_payment", "payment_on_closed_notice", "payment_without_receipt", "certificate_without_receipt",
        "statement_line_unmatched", "payment_not_in_statement", "statement_amount_mismatch", "statement_reversal",
        "receipt_number_gap", "cash_drawer_mismatch"}
    assert result["exception_counts"]["fee_amount_mismatch"] == 2
    totals = result["totals"]
    assert totals["statement_debit_lines"] == 2  # the charge and the reversal
    assert totals["statement_matched_lines"] == 7
    assert totals["payments_flagged"] == 4
    by_type = {item["type"]: item for item in items}
    lost = by_type["statement_line_unmatched"]
    assert lost["detail_code"] == "names_unpaid_notice" and "回调丢失" in lost["detail"]
    assert lost["bank_reference"] == "LOST-CALLBACK" and lost["actual_amount"] == 8000
    assert by_type["cash_drawer_mismatch"]["expected_amount"] - by_type["cash_drawer_mismatch"]["actual_amount"] == 100
    assert by_type["payment_without_notice"]["notice_number"] == compose_notice_number(
        "990001", labelled.day.year % 100, 9_999_999)


def test_rerun_keeps_identities_and_resolutions(client: FlaskClient, staff: Staff, db: Database,
                                                labelled: Day) -> None:
    first = run(client, staff, labelled.day)
    before = {item["id"]: item for item in exceptions(client, staff, first["id"])}
    chosen = next(item for item in before.values() if item["type"] == "cash_drawer_mismatch")
    resolved = client.post(f"/api/v1/reconciliation/exceptions/{chosen['id']}/resolve",
                           json={"note": "收银员补交现金 1 元"}, headers=staff.headers("finance"))
    assert resolved.status_code == 200 and resolved.json["status"] == "resolved"
    assert resolved.json["resolved_by"] == staff.usernames["finance"]
    again = client.post(f"/api/v1/reconciliation/exceptions/{chosen['id']}/resolve", json={"note": "x"},
                        headers=staff.headers("finance"))
    assert again.status_code == 409

    second = run(client, staff, labelled.day)
    after = {item["id"]: item for item in exceptions(client, staff, second["id"])}
    assert set(after) == set(before)  # no duplicates, same identities
    assert after[chosen["id"]]["status"] == "resolved"
    assert after[chosen["id"]]["resolution_note"] == "收银员补交现金 1 元"
    with db.reading() as session:
        assert session.scalar(select(ReconciliationException.id).where(
            ReconciliationException.business_date == labelled.day).order_by(ReconciliationException.id.desc())
            .limit(1)) == max(before)
    open_only = exceptions(client, staff, second["id"], status="open")
    assert len(open_only) == len(before) - 1


def test_a_late_statement_closes_payment_not_in_statement(client: FlaskClient, staff: Staff, db: Database,
                                                          bank: Bank, labelled: Day) -> None:
    first = run(client, staff, labelled.day)
    missing = next(item for item in exceptions(client, staff, first["id"])
                   if item["type"] == "payment_not_in_statement")
    late = camt([credit(labelled.day, "NOT-IN-STATEMENT", "80.00", strd=labelled.names["missing"]["number"])],
                labelled.day, "STMT-LATE")
    imported = import_file(client, staff, late, bank.code)
    assert imported.status_code == 201 and imported.json["new_lines"] == 1
    second = run(client, staff, labelled.day)
    after = {item["id"]: item for item in exceptions(client, staff, second["id"])}
    assert after[missing["id"]]["status"] == "resolved"
    assert after[missing["id"]]["resolved_by"] == "system"
    assert after[missing["id"]]["resolution_note"]
    assert "payment_not_in_statement" not in second["exception_counts"]


def test_finance_confirms_a_lost_callback_from_the_statement_line(client: FlaskClient, staff: Staff, app: Flask,
                                                                  db: Database, labelled: Day) -> None:
    from receipts.service import receipt_settings
    from reconciliation.service import confirm_from_statement_line

    first = run(client, staff, labelled.day)
    lost = next(item for item in exceptions(client, staff, first["id"]) if item["type"] == "statement_line_unmatched")
    with db.unit_of_work() as session:
        clerk = session.scalars(select(User).where(User.username == staff.usernames["finance"])).one()
        confirmation = confirm_from_statement_line(session, receipt_settings(app.config), clerk, lost["id"])
        receipt_number = confirmation.receipt.number
    notice_now = client.get(f"/api/v1/notices/{labelled.names['lost']['number']}", headers=staff.headers("finance"))
    assert notice_now.json["status"] == "paid"
    second = run(client, staff, labelled.day)
    after = {item["id"]: item for item in exceptions(client, staff, second["id"])}
    assert after[lost["id"]]["status"] == "resolved" and receipt_number in after[lost["id"]]["resolution_note"]
    assert second["exception_counts"].get("statement_line_unmatched", 0) == 1  # still counted: resolved by finance
    assert not [item for item in after.values()
                if item["status"] == "open" and item["bank_reference"] == "LOST-CALLBACK"]


def test_reimporting_the_statement_adds_nothing(client: FlaskClient, staff: Staff, bank: Bank, labelled: Day,
                                                db: Database) -> None:
    with db.reading() as session:
        lines = session.scalar(select(text("count(*)")).select_from(StatementLine))
    again = import_file(client, staff, b"", bank.code)
    assert again.status_code == 422  # an empty file is not a statement
    with db.reading() as session:
        assert session.scalar(select(text("count(*)")).select_from(StatementLine)) == lines


def test_exceptions_filter_by_type_status_and_department(client: FlaskClient, staff: Staff,
                                                         labelled: Day) -> None:
    result = run(client, staff, labelled.day)
    everything = exceptions(client, staff, result["id"])
    fees = exceptions(client, staff, result["id"], type="fee_amount_mismatch")
    assert len(fees) == 2 and {item["type"] for item in fees} == {"fee_amount_mismatch"}
    zj = exceptions(client, staff, result["id"], department="ZJ")
    assert [item["type"] for item in zj] == ["fee_not_in_schedule"]
    assert exceptions(client, staff, result["id"], status="resolved") == []
    assert len(everything) == len(labelled.expected)
    unknown = client.get(f"/api/v1/reconciliation/runs/{result['id']}/exceptions?department=NOPE",
                         headers=staff.headers("finance"))
    assert unknown.status_code == 422 and "department" in unknown.json["errors"]
    bad_type = client.get(f"/api/v1/reconciliation/runs/{result['id']}/exceptions?type=nonsense",
                          headers=staff.headers("finance"))
    assert bad_type.status_code == 422 and "type" in bad_type.json["errors"]
    missing = client.get("/api/v1/reconciliation/runs/2147483000", headers=staff.headers("finance"))
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
