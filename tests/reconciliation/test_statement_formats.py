"""Statement files → lines (reconciliation.statement_formats): pure parsing, no database, no app.

Tables: the example files of shared/data, camt.053 cases built from small entries, malformed
files with the element path or CSV line each error must name, hostile XML, and a memory test
over a generated 100,000-transaction statement.
"""

from __future__ import annotations

import codecs
import io
import socket
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import flask
import pytest

from bench.statement_parse import write_camt053
from reconciliation.statement_formats import (
    ParsedLine,
    StatementFormatError,
    StatementInfo,
    detect_format,
    find_notice_number,
    parse_statement,
)

TZ = ZoneInfo("Asia/Shanghai")
DATA = Path(__file__).resolve().parents[2] / "demo"  # the example statements of shared/data, as shipped
V08 = "001.08"
D = date(2026, 11, 24)


def parse(content: bytes) -> tuple[StatementInfo, list[ParsedLine]]:
    info, lines = parse_statement(io.BytesIO(content), TZ)
    return info, list(lines)


def failure(content: bytes) -> StatementFormatError:
    with pytest.raises(StatementFormatError) as caught:
        parse(content)
    return caught.value


def line(position: int, reference: str, amount: int, *, given: str | None = None, number: str | None = None,
         direction: str = "credit", reversal: bool = False, booked: date = D, payer: str | None = None,
         account: str | None = None, remittance: str | None = None, entry: str | None = None) -> ParsedLine:
    return ParsedLine(position, reference, given, number, amount, "CNY", direction, reversal, booked, payer,
                      account, remittance, entry)


# -- small camt.053 documents --------------------------------------------------------------------

def camt(*entries: str, version: str = V08, header: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.'
            f'{version}">\n<BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId></GrpHdr>\n<Stmt><Id>S1</Id>{header}\n'
            + "\n".join(entries) + "\n</Stmt></BkToCstmrStmt></Document>\n").encode()


def ntry(*details: str, ref: str | None = "E1", amount: str | None = "80.00", ccy: str = "CNY",
         indicator: str | None = "CRDT", status: str = "<Sts><Cd>BOOK</Cd></Sts>",
         booked: str | None = "<Dt>2026-11-24</Dt>", extra: str = "") -> str:
    parts = ["<Ntry>"]
    if amount is not None:
        parts.append(f'<Amt Ccy="{ccy}">{amount}</Amt>')
    if indicator is not None:
        parts.append(f"<CdtDbtInd>{indicator}</CdtDbtInd>")
    parts.append(status)
    if booked is not None:
        parts.append(f"<BookgDt>{booked}</BookgDt>")
    if ref is not None:
        parts.append(f"<AcctSvcrRef>{ref}</AcctSvcrRef>")
    parts.append(extra)
    if details:
        parts.append("<NtryDtls>" + "".join(details) + "</NtryDtls>")
    return "".join(parts) + "</Ntry>"


def tx(ref: str | None = "T1", amount: str | None = "80.00", *, indicator: str | None = None, ccy: str = "CNY",
       ustrd: str | None = None, ref_text: str | None = None, extra: str = "") -> str:
    parts = ["<TxDtls>"]
    if ref is not None:
        parts.append(f"<Refs><AcctSvcrRef>{ref}</AcctSvcrRef></Refs>")
    if amount is not None:
        parts.append(f'<Amt Ccy="{ccy}">{amount}</Amt>')
    if indicator is not None:
        parts.append(f"<CdtDbtInd>{indicator}</CdtDbtInd>")
    parts.append(extra)
    if ustrd is not None:
        parts.append(f"<RmtInf><Ustrd>{ustrd}</Ustrd></RmtInf>")
    if ref_text is not None:
        parts.append(f"<RmtInf><Strd><CdtrRefInf><Ref>{ref_text}</Ref></CdtrRefInf></Strd></RmtInf>")
    return "".join(parts) + "</TxDtls>"


# -- the example files ---------------------------------------------------------------------------

EXAMPLES = [
    ("statement-example.csv", StatementInfo("csv", None, None, None, None), [
        line(1, "ICBC20261124000001", 8000, given="99000126000000000119", number="99000126000000000119",
             payer="张三", account="6222020200001234567"),
        line(2, "ICBC20261124000002", 2000, given="9900 0126 0000 0000 0216", number="99000126000000000216",
             payer="李四", account="6222020200007654321"),
        line(3, "ICBC20261124000003", 1000, payer="王五", account="6222020200005555555"),
    ]),
    ("statement-example.camt053.001.08.xml", StatementInfo("camt.053", "001.08", "20261124-0001", None, None), [
        line(1, "ICBC20261124000001", 8000, given="99000126000000000119", number="99000126000000000119",
             payer="张三", account="6222020200001234567", entry="ICBC20261124000001"),
        line(2, "ICBC20261124000002", 2000, given="9900 0126 0000 0000 0216", number="99000126000000000216",
             payer="李四", remittance="缴款码 9900 0126 0000 0000 0216 身份证工本费", entry="ICBC20261124B00007"),
        line(3, "ICBC20261124000003", 1000, given="99000126000000000313", number="99000126000000000313",
             payer="王五", remittance="99000126000000000313", entry="ICBC20261124B00007"),
        line(4, "ICBC20261124F00001", 1500, direction="debit", remittance="账户管理费", entry="ICBC20261124F00001"),
        line(5, "ICBC20261124R00001", 8000, given="99000126000000000410", number="99000126000000000410",
             direction="debit", reversal=True, remittance="付款账户已销户，退回", entry="ICBC20261124R00001"),
    ]),
    # .001.02: plain-text Sts, Dbtr/Nm without Pty, "100" and "10.0", an entry without TxDtls,
    # a pending entry that is no line at all.
    ("statement-example.camt053.001.02.xml", StatementInfo("camt.053", "001.02", "20261124-ABC-01", None, None), [
        line(1, "ABC2026112400A1", 10000, given="99000126000000000410", number="99000126000000000410",
             payer="赵六", entry="ABC2026112400A1"),
        line(2, "ABC2026112400A2", 1000, entry="ABC2026112400A2"),
    ]),
]


@pytest.mark.parametrize(("name", "info", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_files(name: str, info: StatementInfo, expected: list[ParsedLine]) -> None:
    with (DATA / name).open("rb") as stream:
        got_info, lines = parse_statement(stream, TZ)
        assert got_info == info
        assert list(lines) == expected


def test_csv_with_byte_order_mark_and_crlf() -> None:
    content = (DATA / "statement-example.csv").read_bytes()
    plain = parse(content)
    assert parse(codecs.BOM_UTF8 + content.replace(b"\n", b"\r\n")) == plain
    assert len(plain[1]) == 3


def test_utf16_xml_is_read() -> None:
    text = (DATA / "statement-example.camt053.001.02.xml").read_text("utf-8").replace('encoding="UTF-8"',
                                                                                        'encoding="UTF-16"')
    assert parse(text.encode("utf-16")) == parse((DATA / "statement-example.camt053.001.02.xml").read_bytes())


# -- camt.053 rules ----------------------------------------------------------------------------------

def summary(lines: list[ParsedLine]) -> list[tuple[Any, ...]]:
    return [(x.bank_reference, x.amount, x.direction, x.reversal, x.notice_number_given, x.notice_number)
            for x in lines]


CAMT_CASES = [
    ("single entry, transaction reference",
     camt(ntry(tx("T1", ref_text="99000126000000000119"))),
     [("T1", 8000, "credit", False, "99000126000000000119", "99000126000000000119")]),
    ("entry without TxDtls",
     camt(ntry(ref="E9")), [("E9", 8000, "credit", False, None, None)]),
    ("single TxDtls without its own reference: the entry's",
     camt(ntry(tx(None, None), ref="E1")), [("E1", 8000, "credit", False, None, None)]),
    ("batch with references", camt(ntry(tx("T1", "30"), tx("T2", "50"), ref="B1")),
     [("T1", 3000, "credit", False, None, None), ("T2", 5000, "credit", False, None, None)]),
    ("batch without references: entry/n", camt(ntry(tx(None, "30"), tx(None, "50"), ref="B1")),
     [("B1/1", 3000, "credit", False, None, None), ("B1/2", 5000, "credit", False, None, None)]),
    ("batch repeating the entry's reference: entry/n", camt(ntry(tx("B1", "30"), tx("B1", "50"), ref="B1")),
     [("B1/1", 3000, "credit", False, None, None), ("B1/2", 5000, "credit", False, None, None)]),
    ("batch repeating a sibling's reference", camt(ntry(tx("T1", "30"), tx("T1", "50"), ref="B1")),
     [("T1", 3000, "credit", False, None, None), ("B1/2", 5000, "credit", False, None, None)]),
    ("batch over two NtryDtls: positions run on",
     camt(ntry(ref="B1", amount="3.00").replace("</Ntry>", f"<NtryDtls>{tx(None, '1')}</NtryDtls>"
                                            f"<NtryDtls>{tx(None, '2')}</NtryDtls></Ntry>")),
     [("B1/1", 100, "credit", False, None, None), ("B1/2", 200, "credit", False, None, None)]),
    ("amount in AmtDtls/TxAmt (.001.02 has no TxDtls/Amt)",
     camt(ntry(tx("T1", None, extra='<AmtDtls><TxAmt><Amt Ccy="CNY">12.34</Amt></TxAmt></AmtDtls>'),
               tx("T2", "67.66"), amount="80.00")),
     [("T1", 1234, "credit", False, None, None), ("T2", 6766, "credit", False, None, None)]),
    ("debit entry (a charge)", camt(ntry(indicator="DBIT")), [("E1", 8000, "debit", False, None, None)]),
    ("the transaction's own CdtDbtInd wins; the entry is the net",
     camt(ntry(tx("T1", "80.00"), tx("T2", "20.00", indicator="DBIT"), amount="60.00")),
     [("T1", 8000, "credit", False, None, None), ("T2", 2000, "debit", False, None, None)]),
    ("reversal", camt(ntry(tx("T1"), indicator="DBIT", extra="<RvslInd>true</RvslInd>")),
     [("T1", 8000, "debit", True, None, None)]),
    ("RvslInd false", camt(ntry(extra="<RvslInd>false</RvslInd>")), [("E1", 8000, "credit", False, None, None)]),
    ("pending and information entries are ignored",
     camt(ntry(ref="P1", status="<Sts><Cd>PDNG</Cd></Sts>"), ntry(ref="I1", status="<Sts><Cd>INFO</Cd></Sts>"),
          ntry(ref="E2"), ntry(ref="P2", status="<Sts>PDNG</Sts>")),
     [("E2", 8000, "credit", False, None, None)]),
    ("proprietary BOOK status", camt(ntry(status="<Sts><Prtry>BOOK</Prtry></Sts>")),
     [("E1", 8000, "credit", False, None, None)]),
    ("structured reference taken as given, even with wrong check digits",
     camt(ntry(tx("T1", ref_text="99000126000000000118"))),
     [("T1", 8000, "credit", False, "99000126000000000118", None)]),
    ("structured reference wins over free text",
     camt(ntry(tx("T1", extra="<RmtInf><Strd><CdtrRefInf><Ref>RF18539007547034</Ref></CdtrRefInf></Strd>"
                              "<Ustrd>99000126000000000119</Ustrd></RmtInf>"))),
     [("T1", 8000, "credit", False, "RF18539007547034", None)]),
    ("an element named Ntry deeper down is not an entry",
     camt(ntry(tx("T1"), extra="<AddtlInfInd><Ntry>1</Ntry></AddtlInfInd>"), ntry(ref="E2")),
     [("T1", 8000, "credit", False, None, None), ("E2", 8000, "credit", False, None, None)]),
] + [
    (f"namespace camt.053.001.0{v}", camt(ntry(), version=f"001.0{v}"), [("E1", 8000, "credit", False, None, None)])
    for v in range(2, 9)
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CAMT_CASES], ids=[c[0] for c in CAMT_CASES])
def test_camt_lines(content: bytes, expected: list[tuple[Any, ...]]) -> None:
    info, lines = parse(content)
    assert info.format == "camt.053"
    assert summary(lines) == expected
    assert [x.position for x in lines] == list(range(1, len(lines) + 1))


@pytest.mark.parametrize(("text", "fen"), [
    ("80", 8000), ("80.0", 8000), ("80.00", 8000), ("0.01", 1), ("0.5", 50), ("1234567.89", 123456789),
    (" 80.00\n", 8000), ("007.10", 710), ("10000000000", 10**12),
])
def test_amounts_in_yuan_to_fen_exactly(text: str, fen: int) -> None:
    assert parse(camt(ntry(amount=text)))[1][0].amount == fen


@pytest.mark.parametrize(("booked", "expected"), [
    ("<Dt>2026-11-24</Dt>", date(2026, 11, 24)),
    ("<Dt>2026-11-24+08:00</Dt>", date(2026, 11, 24)),
    ("<DtTm>2026-11-24T23:30:00+08:00</DtTm>", date(2026, 11, 24)),
    ("<DtTm>2026-11-24T16:30:00Z</DtTm>", date(2026, 11, 25)),  # 00:30 in Beijing
    ("<DtTm>2026-11-24T16:30:00.123+00:00</DtTm>", date(2026, 11, 25)),
    ("<DtTm>2026-11-24T23:30:00</DtTm>", date(2026, 11, 24)),  # no offset: the local clock
])
def test_booking_date_in_the_service_time_zone(booked: str, expected: date) -> None:
    assert parse(camt(ntry(booked=booked)))[1][0].booked_date == expected


def test_statement_header() -> None:
    content = camt(ntry(), header="<FrToDt><FrDtTm>2026-11-23T16:00:00Z</FrDtTm>"
                                  "<ToDtTm>2026-11-24T23:59:59+08:00</ToDtTm></FrToDt>")
    assert parse(content)[0] == StatementInfo("camt.053", "001.08", "S1", date(2026, 11, 24), date(2026, 11, 24))
    assert parse(camt())[0] == StatementInfo("camt.053", "001.08", "S1", None, None)  # no entries at all
    assert parse(camt())[1] == []


def test_party_account_and_remittance_fields() -> None:
    parties = ("<RltdPties><Dbtr><Nm>赵六</Nm></Dbtr><DbtrAcct><Id><IBAN>DE89370400440532013000</IBAN></Id>"
               "</DbtrAcct></RltdPties>")
    long_text = "说明" * 300
    content = camt(ntry(tx("T1", extra=parties + f"<AddtlTxInf>{long_text}</AddtlTxInf>")),
                   ntry(tx("T2", extra="<RltdPties><Dbtr><Pty><Nm>" + "名" * 150 + "</Nm></Pty></Dbtr></RltdPties>"),
                        ref="E2", extra="<AddtlNtryInf>入账附言</AddtlNtryInf>"))
    first, second = parse(content)[1]
    assert (first.payer_name, first.payer_account) == ("赵六", "DE89370400440532013000")
    assert first.remittance == long_text[:500]
    assert second.payer_name == "名" * 100  # informational: shortened, not refused
    assert second.remittance == "入账附言"


def test_free_text_parts_are_joined() -> None:
    extra = "<RmtInf><Ustrd>缴款码 9900 0126 0000</Ustrd><Ustrd>0000 0216 身份证</Ustrd></RmtInf>"
    only = parse(camt(ntry(tx("T1", extra=extra))))[1][0]
    assert only.remittance == "缴款码 9900 0126 0000 0000 0216 身份证"
    assert (only.notice_number_given, only.notice_number) == ("9900 0126 0000 0000 0216", "99000126000000000216")


@pytest.mark.parametrize(("text", "given", "number"), [
    ("缴款码 9900 0126 0000 0000 0216 身份证工本费", "9900 0126 0000 0000 0216", "99000126000000000216"),
    ("99000126000000000119", "99000126000000000119", "99000126000000000119"),
    ("缴款码99000126000000000119号", "99000126000000000119", "99000126000000000119"),
    ("缴款码 ９９００ ０１２６ ００００ ００００ ０２１６", "９９００ ０１２６ ００００ ００００ ０２１６",
     "99000126000000000216"),  # full-width digits
    ("9900\u30000126\u30000000\u30000000\u30000119", "9900\u30000126\u30000000\u30000000\u30000119",
     "99000126000000000119"),
    # the first candidate fails its check digits, the second is valid: the valid one
    ("99000126000000000118 99000126000000000119", "99000126000000000119", "99000126000000000119"),
    # a phone number before it: the candidate starts at a group boundary
    ("13800138000 9900 0126 0000 0000 0216", "9900 0126 0000 0000 0216", "99000126000000000216"),
    # only a mistyped number: shown as written, no number
    ("缴款码 9900 0126 0000 0000 0218", "9900 0126 0000 0000 0218", None),
    # glued inside a longer digit run (an ID card number and more): not a notice number
    ("110101199003071234990001260000000002", None, None),
    ("9900 0126 0000 0000 021", None, None),  # 19 digits
    ("9900  0126 0000 0000 0216", None, None),  # two spaces split the run: 4 and 16 digits
    ("身份证工本费", None, None),
    ("", None, None),
])
def test_notice_number_in_free_text(text: str, given: str | None, number: str | None) -> None:
    assert find_notice_number(text) == (given, number)
    if text:
        parsed = parse(camt(ntry(tx("T1", ustrd=text))))[1][0]
        assert (parsed.notice_number_given, parsed.notice_number) == (given, number)


# -- malformed camt.053: each error names where -------------------------------------------------

TOO_LONG = "R" * 65
MALFORMED = [
    ("missing Amt", camt(ntry(amount=None)), "Stmt/Ntry[1]/Amt"),
    ("missing CdtDbtInd", camt(ntry(indicator=None)), "Stmt/Ntry[1]/CdtDbtInd"),
    ("unknown CdtDbtInd", camt(ntry(indicator="CRED")), "Stmt/Ntry[1]/CdtDbtInd"),
    ("unknown TxDtls CdtDbtInd", camt(ntry(), ntry(tx("T1", indicator="X"))),
     "Stmt/Ntry[2]/NtryDtls/TxDtls[1]/CdtDbtInd"),
    ("missing BookgDt", camt(ntry(booked=None)), "Stmt/Ntry[1]/BookgDt"),
    ("empty BookgDt", camt(ntry(booked="")), "Stmt/Ntry[1]/BookgDt"),
    ("bad date", camt(ntry(booked="<Dt>2026-13-01</Dt>")), "Stmt/Ntry[1]/BookgDt/Dt"),
    ("bad date format", camt(ntry(booked="<Dt>24.11.2026</Dt>")), "Stmt/Ntry[1]/BookgDt/Dt"),
    ("bad date time", camt(ntry(booked="<DtTm>2026-11-24T25:00:00</DtTm>")), "Stmt/Ntry[1]/BookgDt/DtTm"),
    ("missing Sts", camt(ntry(status="")), "Stmt/Ntry[1]/Sts"),
    ("no reference at all", camt(ntry(ref=None)), "Stmt/Ntry[1]/AcctSvcrRef"),
    ("no reference for a transaction", camt(ntry(tx(None), ref=None)),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/Refs/AcctSvcrRef"),
    ("entry reference too long", camt(ntry(ref=TOO_LONG)), "Stmt/Ntry[1]/AcctSvcrRef"),
    ("transaction reference too long", camt(ntry(tx(TOO_LONG))),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/Refs/AcctSvcrRef"),
    ("entry/n too long", camt(ntry(tx(None, "1"), tx(None, "2"), ref="R" * 63)),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/Refs/AcctSvcrRef"),
    ("negative amount", camt(ntry(amount="-80.00")), "Stmt/Ntry[1]/Amt"),
    ("zero amount", camt(ntry(amount="0.00")), "Stmt/Ntry[1]/Amt"),
    ("three decimals", camt(ntry(amount="80.001")), "Stmt/Ntry[1]/Amt"),
    ("three decimals, last zero", camt(ntry(amount="80.000")), "Stmt/Ntry[1]/Amt"),
    ("not a number", camt(ntry(amount="eighty")), "Stmt/Ntry[1]/Amt"),
    ("exponent", camt(ntry(amount="8E1")), "Stmt/Ntry[1]/Amt"),
    ("thousands separator", camt(ntry(amount="1,080.00")), "Stmt/Ntry[1]/Amt"),
    ("empty amount", camt(ntry(amount="")), "Stmt/Ntry[1]/Amt"),
    ("amount beyond 10^12 fen", camt(ntry(amount="10000000000.01")), "Stmt/Ntry[1]/Amt"),
    ("huge amount", camt(ntry(amount="9" * 1_000_001)), "Stmt/Ntry[1]/Amt"),
    ("bad amount in the first transaction of the second entry",
     camt(ntry(), ntry(tx("T1", "2O.00"), tx("T2", "10.00"), amount="30.00")), "Stmt/Ntry[2]/NtryDtls/TxDtls[1]/Amt"),
    ("bad amount in AmtDtls", camt(ntry(tx("T1", None, extra='<AmtDtls><TxAmt><Amt Ccy="CNY">1.234</Amt></TxAmt>'
                                                         '</AmtDtls>'))),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/AmtDtls/TxAmt/Amt"),
    ("batch transaction without amount", camt(ntry(tx("T1", "10"), tx("T2", None))),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[2]/Amt"),
    ("currency not CNY", camt(ntry(ccy="USD")), "Stmt/Ntry[1]/Amt/@Ccy"),
    ("transaction currency not CNY", camt(ntry(tx("T1", ccy="HKD"))), "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/Amt/@Ccy"),
    ("RvslInd not a boolean", camt(ntry(extra="<RvslInd>yes</RvslInd>")), "Stmt/Ntry[1]/RvslInd"),
    ("bad statement period", camt(ntry(), header="<FrToDt><FrDtTm>yesterday</FrDtTm></FrToDt>"), "Stmt/FrToDt/FrDtTm"),
    ("two statements in one file",
     camt(ntry()).replace(b"</Stmt>", b"</Stmt><Stmt><Id>S2</Id></Stmt>"), "BkToCstmrStmt/Stmt[2]"),
    ("payer account too long", camt(ntry(tx("T1", extra="<RltdPties><DbtrAcct><Id><Othr><Id>" + "1" * 65
                                            + "</Id></Othr></Id></DbtrAcct></RltdPties>"))),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/RltdPties/DbtrAcct"),
    ("structured reference too long", camt(ntry(tx("T1", ref_text="9" * 65))),
     "Stmt/Ntry[1]/NtryDtls/TxDtls[1]/RmtInf"),
    # not well-formed: the line and column of the fault
    # (line 5 holds the entries, line 6 the closing tags)
    ("unclosed element", camt(ntry()).replace(b"</Stmt>", b""), "第 6 行第 3 列"),
    ("truncated file", camt(ntry(), ntry(ref="E2"))[:-40], "第 6 行第 151 列"),
    ("undefined entity", camt(ntry(ref="&nbsp;")), "第 5 行第 135 列"),
    ("text after the document", camt(ntry()) + b"<Document/>", "第 7 行第 1 列"),
]


@pytest.mark.parametrize(("content", "where"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_camt_names_where(content: bytes, where: str) -> None:
    error = failure(content)
    assert error.where == where
    assert error.message and str(error) == f"{where}：{error.message}"


def test_errors_of_later_entries_surface_while_iterating() -> None:
    """The header and earlier lines come first; the importer rolls back when the error arrives."""
    info, lines = parse_statement(io.BytesIO(camt(ntry(ref="E1"), ntry(ref="E2", amount="-1"))), TZ)
    assert info.statement_id == "S1"
    assert next(lines).bank_reference == "E1"
    with pytest.raises(StatementFormatError) as caught:
        next(lines)
    assert caught.value.where == "Stmt/Ntry[2]/Amt"


def test_error_reads_without_an_app_context() -> None:
    assert not flask.has_app_context()
    error = failure(camt(ntry(amount="80.001")))
    assert str(error) == f"Stmt/Ntry[1]/Amt：{error.message}"
    assert "两位小数" in error.message and "80.001" in error.message
    assert str(StatementFormatError("文件是空的。")) == "文件是空的。"


# -- totals the statement states about itself: entry vs transactions, Btch, TxsSummry -----------------

def btch(count: int | None = None, total: str | None = None, indicator: str | None = None) -> str:
    return ("<Btch>" + (f"<NbOfTxs>{count}</NbOfTxs>" if count is not None else "")
            + (f'<TtlAmt Ccy="CNY">{total}</TtlAmt>' if total is not None else "")
            + (f"<CdtDbtInd>{indicator}</CdtDbtInd>" if indicator is not None else "") + "</Btch>")


def txs_summary(*, entries: tuple[str, str] | None = None, net: tuple[str, str] | None = None,
                credits: tuple[str, str] | None = None, debits: tuple[str, str] | None = None,
                version: str = V08) -> str:
    """Stmt/TxsSummry: (NbOfNtries, Sum) per part; the net as (amount, CRDT|DBIT), written the
    way the version writes it (TtlNetNtry/Amt from .001.08, TtlNetNtryAmt before)."""
    def part(name: str, figures: tuple[str, str] | None, extra: str = "") -> str:
        if figures is None and not extra:
            return ""
        inner = "" if figures is None else f"<NbOfNtries>{figures[0]}</NbOfNtries><Sum>{figures[1]}</Sum>"
        return f"<{name}>{inner}{extra}</{name}>"
    net_xml = ""
    if net is not None:
        net_xml = (f"<TtlNetNtry><Amt>{net[0]}</Amt><CdtDbtInd>{net[1]}</CdtDbtInd></TtlNetNtry>" if version == V08
                   else f"<TtlNetNtryAmt>{net[0]}</TtlNetNtryAmt><CdtDbtInd>{net[1]}</CdtDbtInd>")
    return ("<TxsSummry>" + part("TtlNtries", entries, net_xml) + part("TtlCdtNtries", credits)
            + part("TtlDbtNtries", debits) + "</TxsSummry>")


# Two credits (80.00 and a batch of 30.00 + 50.00) and a debit of 15.00: 4 entries, 175.00 in all.
DAY = (ntry(tx("T1", "80.00"), ref="E1"), ntry(btch(2, "80.00"), tx("T2", "30.00"), tx("T3", "50.00"), ref="E2"),
       ntry(ref="F1", amount="15.00", indicator="DBIT"))
DAY_SUMMARY = {"entries": ("3", "175.00"), "net": ("145.00", "CRDT"), "credits": ("2", "160.00"),
               "debits": ("1", "15.00")}

INCONSISTENT = [
    ("entry amount over one transaction of another amount",
     camt(ntry(ref="E1"), ntry(ref="E2"), ntry(tx("T1", "80.00"), ref="E3", amount="999.00",
                                               extra="<NtryRef>3</NtryRef>")),
     "Stmt/Ntry[3]/Amt", "条目 3（NtryRef 3，AcctSvcrRef E3）金额 999.00 与其交易明细合计 80.00 不符。"),
    ("entry amount over a batch that adds up to less",
     camt(ntry(tx("T1", "30.00"), tx("T2", "40.00"), amount="80.00")),
     "Stmt/Ntry[1]/Amt", "条目 1（AcctSvcrRef E1）金额 80.00 与其交易明细合计 70.00 不符。"),
    ("entry without any reference: named by its position",
     camt(ntry(tx("T1", "80.00"), ref=None, amount="80.01")),
     "Stmt/Ntry[1]/Amt", "条目 1 金额 80.01 与其交易明细合计 80.00 不符。"),
    (".001.02: transaction amounts in AmtDtls/TxAmt",
     camt(ntry(tx("T1", None, extra='<AmtDtls><TxAmt><Amt Ccy="CNY">12.34</Amt></TxAmt></AmtDtls>'),
               tx("T2", None, extra='<AmtDtls><TxAmt><Amt Ccy="CNY">60.00</Amt></TxAmt></AmtDtls>'),
               status="<Sts>BOOK</Sts>"), version="001.02"),
     "Stmt/Ntry[1]/Amt", "条目 1（AcctSvcrRef E1）金额 80.00 与其交易明细合计 72.34 不符。"),
    ("a credit entry whose one transaction is a debit",
     camt(ntry(tx("T1", "80.00", indicator="DBIT"))),
     "Stmt/Ntry[1]/Amt", "条目 1（AcctSvcrRef E1）金额 80.00 与其交易明细合计 -80.00 不符。"),
    ("batch TtlAmt against its transactions",
     camt(ntry(btch(2, "90.00"), tx("T1", "30.00"), tx("T2", "50.00"))),
     "Stmt/Ntry[1]/NtryDtls/Btch/TtlAmt",
     "条目 1（AcctSvcrRef E1）的批量合计（TtlAmt）90.00 与其交易明细合计 80.00 不符。"),
    ("batch TtlAmt against the entry, no TxDtls given",
     camt(ntry(btch(2, "70.00"))),
     "Stmt/Ntry[1]/Amt", "条目 1（AcctSvcrRef E1）金额 80.00 与其批量合计（TtlAmt）70.00 不符。"),
    ("batch NbOfTxs against its transactions",
     camt(ntry(btch(3, "80.00"), tx("T1", "30.00"), tx("T2", "50.00"))),
     "Stmt/Ntry[1]/NtryDtls/Btch/NbOfTxs", "条目 1（AcctSvcrRef E1）的批量笔数（NbOfTxs）3 与其交易明细笔数 2 不符。"),
    ("the second of two NtryDtls",
     camt(ntry(ref="B1", amount="3.00").replace(
         "</Ntry>", f"<NtryDtls>{btch(1, '1.00')}{tx(None, '1')}</NtryDtls>"
                    f"<NtryDtls>{btch(1, '2.50')}{tx(None, '2')}</NtryDtls></Ntry>")),
     "Stmt/Ntry[1]/NtryDtls[2]/Btch/TtlAmt",
     "条目 1（AcctSvcrRef B1）的批量合计（TtlAmt）2.50 与其交易明细合计 2.00 不符。"),
    ("TxsSummry: number of entries",
     camt(*DAY, header=txs_summary(**{**DAY_SUMMARY, "entries": ("4", "175.00")})),
     "Stmt/TxsSummry/TtlNtries/NbOfNtries", "对账单汇总（TtlNtries）的笔数 4 与条目实际笔数 3 不符。"),
    ("TxsSummry: sum of entries",
     camt(*DAY, header=txs_summary(**{**DAY_SUMMARY, "entries": ("3", "1175.00")})),
     "Stmt/TxsSummry/TtlNtries/Sum", "对账单汇总（TtlNtries）的金额合计 1175.00 与条目实际合计 175.00 不符。"),
    ("TxsSummry: net, .001.08",
     camt(*DAY, header=txs_summary(**{**DAY_SUMMARY, "net": ("145.00", "DBIT")})),
     "Stmt/TxsSummry/TtlNtries/TtlNetNtry",
     "对账单汇总（TtlNtries）的净额 -145.00 与条目实际净额 145.00 不符（贷方为正）。"),
    ("TxsSummry: net, .001.02",
     camt(*DAY, version="001.02", header=txs_summary(**{**DAY_SUMMARY, "net": ("146.00", "CRDT")},
                                                     version="001.02")),
     "Stmt/TxsSummry/TtlNtries/TtlNetNtryAmt",
     "对账单汇总（TtlNtries）的净额 146.00 与条目实际净额 145.00 不符（贷方为正）。"),
    ("TxsSummry: number of credits",
     camt(*DAY, header=txs_summary(credits=("3", "160.00"))),
     "Stmt/TxsSummry/TtlCdtNtries/NbOfNtries", "对账单汇总（TtlCdtNtries）的笔数 3 与条目实际笔数 2 不符。"),
    ("TxsSummry: sum of credits",
     camt(*DAY, header=txs_summary(credits=("2", "999.00"))),
     "Stmt/TxsSummry/TtlCdtNtries/Sum", "对账单汇总（TtlCdtNtries）的金额合计 999.00 与条目实际合计 160.00 不符。"),
    ("TxsSummry: number of debits",
     camt(*DAY, header=txs_summary(debits=("0", "0"))),
     "Stmt/TxsSummry/TtlDbtNtries/NbOfNtries", "对账单汇总（TtlDbtNtries）的笔数 0 与条目实际笔数 1 不符。"),
    ("TxsSummry: sum of debits",
     camt(*DAY, header=txs_summary(debits=("1", "14.99"))),
     "Stmt/TxsSummry/TtlDbtNtries/Sum", "对账单汇总（TtlDbtNtries）的金额合计 14.99 与条目实际合计 15.00 不符。"),
    ("TxsSummry counts a pending entry too",
     camt(*DAY, ntry(ref="P1", status="<Sts><Cd>PDNG</Cd></Sts>"), header=txs_summary(**DAY_SUMMARY)),
     "Stmt/TxsSummry/TtlNtries/NbOfNtries", "对账单汇总（TtlNtries）的笔数 3 与条目实际笔数 4 不符。"),
    ("TxsSummry stating entries of a statement that has none",
     camt(header=txs_summary(entries=("1", "80.00"))),
     "Stmt/TxsSummry/TtlNtries/NbOfNtries", "对账单汇总（TtlNtries）的笔数 1 与条目实际笔数 0 不符。"),
]


@pytest.mark.parametrize(("content", "where", "message"), [c[1:] for c in INCONSISTENT],
                         ids=[c[0] for c in INCONSISTENT])
def test_a_statement_contradicting_its_own_totals_is_refused(content: bytes, where: str, message: str) -> None:
    error = failure(content)
    assert (error.where, error.message) == (where, message)


def test_no_line_of_a_contradicting_entry_comes_out() -> None:
    """The entry's lines are held until its amounts are checked: the earlier entries' lines come,
    then the error, never a line of the entry that contradicts itself."""
    _info, lines = parse_statement(io.BytesIO(camt(ntry(ref="E1"), ntry(tx("T1", "30.00"), tx("T2", "40.00"),
                                                                        ref="E2"))), TZ)
    assert next(lines).bank_reference == "E1"
    with pytest.raises(StatementFormatError) as caught:
        next(lines)
    assert caught.value.where == "Stmt/Ntry[2]/Amt"


@pytest.mark.parametrize(("content", "where"), [
    (camt(ntry(), header=txs_summary(entries=("one", "80.00"))), "Stmt/TxsSummry/TtlNtries/NbOfNtries"),
    (camt(ntry(), header=txs_summary(entries=("1", "-80.00"))), "Stmt/TxsSummry/TtlNtries/Sum"),
    (camt(ntry(), header=txs_summary(entries=("1", "80.00"), net=("80.00", "X"))),
     "Stmt/TxsSummry/TtlNtries/TtlNetNtry/CdtDbtInd"),
    (camt(ntry(btch("2x", "80.00"))), "Stmt/Ntry[1]/NtryDtls/Btch/NbOfTxs"),
    (camt(ntry(btch(1, "80.001"))), "Stmt/Ntry[1]/NtryDtls/Btch/TtlAmt"),
    (camt(ntry(btch(1, "80.00").replace('Ccy="CNY"', 'Ccy="USD"'))), "Stmt/Ntry[1]/NtryDtls/Btch/TtlAmt/@Ccy"),
], ids=["NbOfNtries not a number", "negative Sum", "net direction", "NbOfTxs not a number", "TtlAmt three decimals",
        "TtlAmt currency"])
def test_malformed_totals_name_where(content: bytes, where: str) -> None:
    assert failure(content).where == where


CONSISTENT = [
    ("one TxDtls without its own amount takes the entry's",
     camt(ntry(tx("T1", None), amount="999.00")), [("T1", 99900, "credit", False, None, None)]),
    (".001.02: one TxDtls without AmtDtls takes the entry's",
     camt(ntry(tx("T1", None), amount="100", status="<Sts>BOOK</Sts>"), version="001.02"),
     [("T1", 10000, "credit", False, None, None)]),
    ("a batch and a day that add up",
     camt(*DAY, header=txs_summary(**DAY_SUMMARY)),
     [("T1", 8000, "credit", False, None, None), ("T2", 3000, "credit", False, None, None),
      ("T3", 5000, "credit", False, None, None), ("F1", 1500, "debit", False, None, None)]),
    (".001.02 summary with TtlNetNtryAmt",
     camt(*DAY, version="001.02", header=txs_summary(**DAY_SUMMARY, version="001.02")),
     [("T1", 8000, "credit", False, None, None), ("T2", 3000, "credit", False, None, None),
      ("T3", 5000, "credit", False, None, None), ("F1", 1500, "debit", False, None, None)]),
    ("a pending entry counted in the summary, still no line",
     camt(*DAY[:1], ntry(ref="P1", amount="95.00", status="<Sts><Cd>PDNG</Cd></Sts>"),
          header=txs_summary(entries=("2", "175.00"), credits=("2", "175.00"), debits=("0", "0.00"))),
     [("T1", 8000, "credit", False, None, None)]),
    ("a summary of a statement without entries",
     camt(header=txs_summary(entries=("0", "0"), net=("0", "CRDT"))), []),
    ("batch with NbOfTxs only, no TxDtls: nothing to count against",
     camt(ntry(btch(5))), [("E1", 8000, "credit", False, None, None)]),
    ("a debit batch with its own CdtDbtInd",
     camt(ntry(btch(2, "20.00", "DBIT"), tx("T1", "5.00"), tx("T2", "15.00"), amount="20.00", indicator="DBIT")),
     [("T1", 500, "debit", False, None, None), ("T2", 1500, "debit", False, None, None)]),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CONSISTENT], ids=[c[0] for c in CONSISTENT])
def test_a_statement_agreeing_with_its_totals_is_read(content: bytes, expected: list[tuple[Any, ...]]) -> None:
    assert summary(parse(content)[1]) == expected


@pytest.mark.parametrize("name", ["statement-example.camt053.001.08.xml", "statement-example.camt053.001.02.xml"])
def test_example_files_with_their_own_summary(name: str) -> None:
    """Each example with a TxsSummry of its entries reads as without; one more entry claimed is refused."""
    content = (DATA / name).read_bytes()
    version = V08 if "001.08" in name else "001.02"
    # 001.08: credits 80 + 30, debits 15 + 80; 001.02: credits 100 + 10 + the pending 50.
    figures = ({"entries": ("4", "205.00"), "net": ("15.00", "CRDT"), "credits": ("2", "110.00"),
                "debits": ("2", "95.00")} if version == V08 else
               {"entries": ("3", "160.00"), "net": ("160.00", "CRDT"), "credits": ("3", "160.00"),
                "debits": ("0", "0")})
    marker = b"<Ntry>"
    with_summary = content.replace(marker, txs_summary(**figures, version=version).encode() + marker, 1)
    assert parse(with_summary) == parse(content)
    claimed = {**figures, "credits": (str(int(figures["credits"][0]) + 1), figures["credits"][1])}
    wrong = content.replace(marker, txs_summary(**claimed, version=version).encode() + marker, 1)
    assert failure(wrong).where == "Stmt/TxsSummry/TtlCdtNtries/NbOfNtries"


# -- not a statement at all -------------------------------------------------------------------------

UNRECOGNISED = "无法识别的文件"
NOT_CAMT = "不是 camt.053"
NOT_STATEMENTS = [
    ("empty", b"", "文件是空的"),
    ("whitespace", b" \r\n\t ", "文件是空的"),
    ("byte order mark only", codecs.BOM_UTF8, "文件是空的"),
    ("binary", bytes(range(256)), UNRECOGNISED),
    ("a PDF", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", UNRECOGNISED),
    ("XHTML", b"<!DOCTYPE html><html><body>not a statement</body></html>", NOT_CAMT),
    ("HTML", b"<!doctype html><html><body>not a statement</body></html>", "XML 格式错误"),
    ("other XML", b"<?xml version='1.0'?><invoice><total>80.00</total></invoice>", NOT_CAMT),
    ("camt.052, not .053", camt(ntry()).replace(b"camt.053", b"camt.052"), NOT_CAMT),
    ("camt.053.001.01", camt(ntry(), version="001.01"), NOT_CAMT),
    ("camt.053.001.09", camt(ntry(), version="001.09"), NOT_CAMT),
    ("camt.053 without a namespace",
     camt(ntry()).replace(b' xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"', b""), NOT_CAMT),
    ("camt.053 without Stmt", b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"/>', "缺少"),
    ("only a prolog", b"<?xml version='1.0'?><!-- nothing -->", "XML 格式错误"),
    ("CSV with other columns", b"date,amount,reference\n2026-11-24,80.00,X\n", UNRECOGNISED),
    ("CSV header with a column missing", b"bank_reference,notice_number,amount,currency,booked_at,payer_name\n",
     UNRECOGNISED),
    ("CSV in UTF-16", "bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"
                      .encode("utf-16"), "UTF-8"),
    ("XML in GBK", b'<?xml version="1.0" encoding="GBK"?><Document/>', "UTF-8"),
]


@pytest.mark.parametrize(("content", "says"), [n[1:] for n in NOT_STATEMENTS], ids=[n[0] for n in NOT_STATEMENTS])
def test_not_a_statement(content: bytes, says: str) -> None:
    error = failure(content)
    assert says in error.message
    assert error.where is None or error.where.startswith("第")


def test_csv_with_only_its_header_has_no_lines() -> None:
    assert parse(HEADER.encode()) == (StatementInfo("csv", None, None, None, None), [])


@pytest.mark.parametrize(("head", "kind"), [
    (b"<?xml version='1.0'?><Document/>", "camt.053"),
    (codecs.BOM_UTF8 + b"\n  <Document/>", "camt.053"),
    ("<Document/>".encode("utf-16"), "camt.053"),
    (b"bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\r\nX,,1,CNY", "csv"),
    (codecs.BOM_UTF8 + b"bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account", "csv"),
    (b"amount,bank_reference,currency,booked_at,notice_number,payer_account,payer_name\n", "csv"),
    (b'"bank_reference","notice_number","amount","currency","booked_at","payer_name","payer_account"\n', "csv"),
])
def test_detect_format_from_content(head: bytes, kind: str) -> None:
    assert detect_format(head) == kind


# -- hostile XML: refused before anything is expanded or fetched -----------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE Document [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><Stmt><Id>&lol9;</Id>
</Stmt></BkToCstmrStmt></Document>
"""
ENTRY_WITH = ntry(ref="&xxe;", extra="<AddtlNtryInf>&xxe;</AddtlNtryInf>")
HOSTILE = [
    ("billion laughs", BILLION_LAUGHS),
    ("external entity (file)", b'<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     + camt(ENTRY_WITH).split(b"?>", 1)[1]),
    ("external entity (URL)", b'<!DOCTYPE Document [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]>'
     + camt(ENTRY_WITH).split(b"?>", 1)[1]),
    ("external DTD", b'<!DOCTYPE Document SYSTEM "http://127.0.0.1:9/camt.dtd">' + camt(ntry()).split(b"?>", 1)[1]),
    ("parameter entity", b'<!DOCTYPE Document [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
     + camt(ntry()).split(b"?>", 1)[1]),
    ("harmless DOCTYPE", b"<!DOCTYPE Document>" + camt(ntry()).split(b"?>", 1)[1]),
    # the DOCTYPE straddles the boundary of the first 64 KiB chunk, after a long comment
    ("DOCTYPE across a chunk boundary", b"<!--" + b"x" * (64 * 1024 - 10) + b"-->"
     + b'<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' + camt(ENTRY_WITH).split(b"?>", 1)[1]),
]


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the parser tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("content", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_xml_is_refused_unexpanded(content: bytes) -> None:
    started = time.perf_counter()
    error = failure(content)
    assert time.perf_counter() - started < 1.0
    assert "DOCTYPE" in error.message
    assert "root:" not in str(error) and "lol" not in str(error)


# -- CSV --------------------------------------------------------------------------------------------

HEADER = "bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"
ROW = "R1,99000126000000000119,8000,CNY,2026-11-24T10:15:02+08:00,张三,6222020200001234567\n"


def csv_with(*rows: str) -> bytes:
    return (HEADER + "".join(rows)).encode()


def test_csv_fields() -> None:
    content = csv_with(ROW, "\n", ",,,,,,\n", 'R2,,1,CNY,2026-11-24T16:30:00Z,"王, 五",\n',
                       "R3, 9900 0126 0000 0000 0218 ,100,CNY,2026-11-24T08:00:00-05:00,,\n")
    assert parse(content)[1] == [
        line(1, "R1", 8000, given="99000126000000000119", number="99000126000000000119", payer="张三",
             account="6222020200001234567"),
        line(2, "R2", 1, booked=date(2026, 11, 25), payer="王, 五"),  # 00:30 in Beijing; blank rows skipped
        line(3, "R3", 100, given="9900 0126 0000 0000 0218", booked=date(2026, 11, 24)),  # 21:00 in Beijing
    ]


def test_csv_columns_in_another_order() -> None:
    content = ("amount,bank_reference,currency,booked_at,notice_number,payer_account,payer_name\n"
               "8000,R1,CNY,2026-11-24T10:15:02+08:00,99000126000000000119,6222,张三\n").encode()
    assert parse(content)[1] == [line(1, "R1", 8000, given="99000126000000000119", number="99000126000000000119",
                                      payer="张三", account="6222")]


BAD_CSV = [
    ("amount with decimals", csv_with(ROW.replace(",8000,", ",5.5,")), "第 2 行 amount 列"),
    ("amount zero", csv_with(ROW, ROW.replace(",8000,", ",0,")), "第 3 行 amount 列"),
    ("amount negative", csv_with(ROW.replace(",8000,", ",-8000,")), "第 2 行 amount 列"),
    ("amount too large", csv_with(ROW.replace(",8000,", ",1000000000001,")), "第 2 行 amount 列"),
    ("amount empty", csv_with(ROW.replace(",8000,", ",,")), "第 2 行 amount 列"),
    ("currency", csv_with(ROW.replace(",CNY,", ",USD,")), "第 2 行 currency 列"),
    ("booked_at without offset", csv_with(ROW.replace("+08:00", "")), "第 2 行 booked_at 列"),
    ("booked_at a date", csv_with(ROW.replace("2026-11-24T10:15:02+08:00", "2026-11-24")), "第 2 行 booked_at 列"),
    ("booked_at nonsense", csv_with(ROW.replace("2026-11-24T10:15:02+08:00", "昨天")), "第 2 行 booked_at 列"),
    ("reference missing", csv_with(ROW, ROW.replace("R1,", " ,")), "第 3 行 bank_reference 列"),
    ("reference too long", csv_with(ROW.replace("R1,", "R" * 65 + ",")), "第 2 行 bank_reference 列"),
    ("notice number too long", csv_with(ROW.replace("99000126000000000119", "9" * 65)), "第 2 行 notice_number 列"),
    ("too few columns", csv_with(ROW, "R2,,100,CNY\n"), "第 3 行"),
    ("too many columns", csv_with(ROW.replace("\n", ",x\n")), "第 2 行"),
    ("not UTF-8 (GBK)", csv_with(ROW) + "R2,,100,CNY,2026-11-24T10:15:02+08:00,王五,\n".encode("gbk"), "第 3 行"),
    ("unterminated quote", csv_with(ROW, 'R2,,100,CNY,2026-11-24T10:15:02+08:00,"王五,\n'), "第 3 行"),
    ("a line without end", csv_with(ROW, "R2," + "x" * 20000), "第 3 行"),
]


@pytest.mark.parametrize(("content", "where"), [b[1:] for b in BAD_CSV], ids=[b[0] for b in BAD_CSV])
def test_bad_csv_names_line_and_column(content: bytes, where: str) -> None:
    error = failure(content)
    assert error.where == where
    assert error.message


# -- streams ------------------------------------------------------------------------------------------

class OneWayStream(io.RawIOBase):
    """A stream that cannot seek and returns few bytes a read, like a socket or an upload."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._data.read(min(len(buffer), 1000))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("name", [e[0] for e in EXAMPLES])
def test_a_stream_that_cannot_seek(name: str) -> None:
    content = (DATA / name).read_bytes()
    info, lines = parse_statement(OneWayStream(content), TZ)  # type: ignore[arg-type]
    assert (info, list(lines)) == parse(content)


def test_generated_statement_across_many_chunks() -> None:
    """2,000 transactions (~1 MB, 16 chunks): every one read once, in order, against a plain DOM count."""
    out = io.BytesIO()
    write_camt053(out, 2000)
    content = out.getvalue()
    info, lines = parse(content)
    ns = {"c": "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"}
    document = ET.fromstring(content)
    booked = [e for e in document.iterfind(".//c:Ntry", ns) if e.findtext("c:Sts/c:Cd", namespaces=ns) == "BOOK"]
    expected_refs: list[str] = []
    for entry in booked:
        transactions = entry.findall("c:NtryDtls/c:TxDtls", ns)
        entry_ref = entry.findtext("c:AcctSvcrRef", namespaces=ns)
        if not transactions:
            expected_refs.append(str(entry_ref))
        for n, transaction in enumerate(transactions, 1):
            own = transaction.findtext("c:Refs/c:AcctSvcrRef", namespaces=ns)
            expected_refs.append(own or f"{entry_ref}/{n}")
    assert len(lines) == 2000
    assert [x.bank_reference for x in lines] == expected_refs
    assert len(set(expected_refs)) == 2000
    assert [x.position for x in lines] == list(range(1, 2001))
    assert sum(x.notice_number is not None for x in lines) == sum(x.direction == "credit" for x in lines)
    assert info.from_date == info.to_date == D


# -- memory stays flat --------------------------------------------------------------------------------

def compact_statement(out: BinaryIO, lines: int) -> None:
    """Cheap to parse under tracemalloc: mostly entries without details, every tenth a batch of 3."""
    out.write(camt().split(b"</Stmt>")[0])
    made = entry = 0
    while made < lines:
        entry += 1
        if entry % 10 == 0 and lines - made >= 3:
            text = ntry(tx(None, "1", ustrd="缴款码 9900 0126 0000 0000 0216"), tx(f"T{made}", "1"),
                        tx(f"U{made}", "1"), ref=f"B{entry}", amount="3")
            made += 3
        else:
            text = ntry(ref=f"E{entry}", amount="1")
            made += 1
        out.write(text.encode() + b"\n")
    out.write(b"</Stmt></BkToCstmrStmt></Document>\n")


def peak_while_parsing(path: Path) -> tuple[int, int]:
    """(lines, peak bytes allocated) while parsing the file, keeping no line."""
    with path.open("rb") as stream:
        tracemalloc.start()
        try:
            _info, lines = parse_statement(stream, TZ)
            count = sum(1 for _ in lines)
            return count, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


@pytest.fixture(scope="module")
def statements(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    directory = tmp_path_factory.mktemp("statements")
    paths = {}
    for size in (1_000, 10_000, 100_000):
        paths[size] = directory / f"{size}.xml"
        with paths[size].open("wb") as out:
            compact_statement(out, size)
    yield paths


@pytest.mark.slow
def test_memory_is_flat_for_100k_transactions(statements: dict[int, Path]) -> None:
    peak_while_parsing(statements[1_000])  # first use: compiled patterns, caches
    count_small, small = peak_while_parsing(statements[10_000])
    count_large, large = peak_while_parsing(statements[100_000])
    assert (count_small, count_large) == (10_000, 100_000)
    assert statements[100_000].stat().st_size > 15_000_000
    # Keeping as little as 16 bytes a line would add 1.6 MB at 100,000 lines.
    assert large < 1.5 * small + 256 * 1024, (small, large)
