"""Importing statements through the API: formats detected from content, re-imports add nothing,
a malformed or contradicting file is refused whole."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.db import Database
from tests.conftest import Staff, table_counts
from tests.webhooks.conftest import Bank

DATA = Path(__file__).resolve().parents[2] / "demo"
pytestmark = pytest.mark.usefixtures("staff")


def upload(client: FlaskClient, staff: Staff, content: bytes, bank_code: str, name: str = "statement") -> object:
    return client.post("/api/v1/bank-statements", data={"bank_code": bank_code, "file": (io.BytesIO(content), name)},
                       headers=staff.headers("finance"), content_type="multipart/form-data")


@pytest.mark.parametrize(("name", "fmt", "lines"), [
    ("statement-example.camt053.001.08.xml", "camt.053", 5),
    ("statement-example.camt053.001.02.xml", "camt.053", None),
    ("statement-example.csv", "csv", 3),
])
def test_each_example_imports_once(client: FlaskClient, staff: Staff, bank: Bank, db: Database, name: str, fmt: str,
                                   lines: int | None) -> None:
    content = (DATA / name).read_bytes()
    first = upload(client, staff, content, bank.code, name="renamed.bin")  # the name is not the format
    assert first.status_code == 201, first.json
    assert first.json["format"] == fmt
    assert first.json["new_lines"] == first.json["lines"] > 0
    if lines is not None:
        assert first.json["lines"] == lines
    before = table_counts(db)
    again = upload(client, staff, content, bank.code)
    assert again.status_code == 201
    assert again.json["new_lines"] == 0 and again.json["duplicate_lines"] == first.json["lines"]
    after = table_counts(db)
    assert after["statement_lines"] == before["statement_lines"]


def test_csv_and_camt_of_the_same_day_share_their_lines(client: FlaskClient, staff: Staff, bank: Bank) -> None:
    camt = upload(client, staff, (DATA / "statement-example.camt053.001.08.xml").read_bytes(), bank.code)
    csv = upload(client, staff, (DATA / "statement-example.csv").read_bytes(), bank.code)
    assert camt.status_code == csv.status_code == 201
    assert csv.json["new_lines"] == 0  # the same three bank references, already known


@pytest.mark.parametrize("content", [
    b"",
    b"not a statement at all\n",
    b"bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"
    b"R1,,8000,CNY,2026-11-24T10:00:00+08:00,A,1\nR2,,5.5,CNY,2026-11-24T10:00:00+08:00,B,2\n",
    b"<?xml version='1.0'?><Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.053.001.08'><BkToCstmrStmt>",
])
def test_a_malformed_file_is_refused_whole(client: FlaskClient, staff: Staff, bank: Bank, db: Database,
                                           content: bytes) -> None:
    before = table_counts(db)
    response = upload(client, staff, content, bank.code)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["detail"]
    assert table_counts(db) == before  # not one line of it, no import record


def test_the_csv_error_names_the_line(client: FlaskClient, staff: Staff, bank: Bank) -> None:
    content = (b"bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"
               b"R1,,8000,CNY,2026-11-24T10:00:00+08:00,A,1\nR2,,5.5,CNY,2026-11-24T10:00:00+08:00,B,2\n")
    response = upload(client, staff, content, bank.code)
    assert "3" in response.json["detail"]


def test_a_known_reference_with_another_amount_refuses_the_file(client: FlaskClient, staff: Staff, bank: Bank,
                                                               db: Database) -> None:
    header = b"bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"
    assert upload(client, staff, header + b"R1,,8000,CNY,2026-11-24T10:00:00+08:00,A,1\n", bank.code).status_code == 201
    before = table_counts(db)
    response = upload(client, staff, header + b"R2,,100,CNY,2026-11-24T10:00:00+08:00,B,2\n"
                                               b"R1,,9000,CNY,2026-11-24T10:00:00+08:00,A,1\n", bank.code)
    assert response.status_code == 422
    assert response.json["type"].endswith("statement-conflict") and "R1" in response.json["detail"]
    assert table_counts(db) == before


def test_an_unknown_bank_or_a_missing_file_is_a_validation_error(client: FlaskClient, staff: Staff,
                                                                bank: Bank) -> None:
    unknown = upload(client, staff, (DATA / "statement-example.csv").read_bytes(), "NO-SUCH-BANK")
    assert unknown.status_code == 422 and "bank_code" in unknown.json["errors"]
    missing = client.post("/api/v1/bank-statements", data={"bank_code": bank.code},
                          headers=staff.headers("finance"), content_type="multipart/form-data")
    assert missing.status_code == 422 and "file" in missing.json["errors"]


def _contradicting(content: bytes) -> bytes:
    """The 001.08 example with its first entry claiming 999.00 over its one transaction of 80.00."""
    return content.replace(b'<NtryRef>1</NtryRef>\n        <Amt Ccy="CNY">80.00</Amt>',
                           b'<NtryRef>1</NtryRef>\n        <Amt Ccy="CNY">999.00</Amt>', 1)


SUMMARY_08 = (b"<TxsSummry><TtlNtries><NbOfNtries>4</NbOfNtries><Sum>205.00</Sum></TtlNtries>"
              b"<TtlCdtNtries><NbOfNtries>2</NbOfNtries><Sum>110.00</Sum></TtlCdtNtries>"
              b"<TtlDbtNtries><NbOfNtries>2</NbOfNtries><Sum>%s</Sum></TtlDbtNtries></TxsSummry>")
EXAMPLE_08 = (DATA / "statement-example.camt053.001.08.xml").read_bytes()


@pytest.mark.parametrize(("content", "says"), [
    (_contradicting(EXAMPLE_08),
     "对账单有误（Stmt/Ntry[1]/Amt）：条目 1（NtryRef 1，AcctSvcrRef ICBC20261124000001）金额 999.00 与其交易明细合计 "
     "80.00 不符。"),
    (EXAMPLE_08.replace(b'<TtlAmt Ccy="CNY">30.00</TtlAmt>', b'<TtlAmt Ccy="CNY">300.00</TtlAmt>'),
     "对账单有误（Stmt/Ntry[2]/NtryDtls/Btch/TtlAmt）：条目 2（NtryRef 2，AcctSvcrRef ICBC20261124B00007）的批量合计"
     "（TtlAmt）300.00 与其交易明细合计 30.00 不符。"),
    (EXAMPLE_08.replace(b"<NbOfTxs>2</NbOfTxs>", b"<NbOfTxs>3</NbOfTxs>"),
     "对账单有误（Stmt/Ntry[2]/NtryDtls/Btch/NbOfTxs）：条目 2（NtryRef 2，AcctSvcrRef ICBC20261124B00007）的批量笔数"
     "（NbOfTxs）3 与其交易明细笔数 2 不符。"),
    # the last entry is read before the summary is found wrong: lines of the file were on their way in
    (EXAMPLE_08.replace(b"<Ntry>", SUMMARY_08 % b"9.50" + b"<Ntry>", 1),
     "对账单有误（Stmt/TxsSummry/TtlDbtNtries/Sum）：对账单汇总（TtlDbtNtries）的金额合计 9.50 与条目实际合计 "
     "95.00 不符。"),
], ids=["entry vs transactions", "batch TtlAmt", "batch NbOfTxs", "TxsSummry"])
def test_a_statement_contradicting_its_own_totals_is_refused_whole(client: FlaskClient, staff: Staff, bank: Bank,
                                                                  db: Database, content: bytes, says: str) -> None:
    before = table_counts(db)
    response = upload(client, staff, content, bank.code)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("malformed-statement")
    assert response.json["detail"] == says
    assert table_counts(db) == before  # not one line of it, no import record, no audit entry


def test_the_example_with_a_true_summary_imports(client: FlaskClient, staff: Staff, bank: Bank) -> None:
    response = upload(client, staff, EXAMPLE_08.replace(b"<Ntry>", SUMMARY_08 % b"95.00" + b"<Ntry>", 1), bank.code)
    assert response.status_code == 201, response.json
    assert response.json["lines"] == response.json["new_lines"] == 5


def test_the_import_command_refuses_it_naming_the_entry(app: Flask, bank: Bank, db: Database, tmp_path: Path) -> None:
    path = tmp_path / "statement.xml"
    path.write_bytes(_contradicting(EXAMPLE_08))
    before = table_counts(db)
    result = app.test_cli_runner().invoke(args=["statements", "import", str(path), "--bank", bank.code])
    assert result.exit_code != 0
    assert "条目 1（NtryRef 1，AcctSvcrRef ICBC20261124000001）金额 999.00 与其交易明细合计 80.00 不符" in result.output
    assert table_counts(db) == before
