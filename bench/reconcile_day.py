"""Nightly reconciliation of a generated business day, beside bare SQL doing the same comparisons.

    .venv/bin/python -m bench.reconcile_day [--rows N[,N2...]] [--engine postgresql|sqlite|both] [--keep]
        [--reuse] [--repeat K] [--date YYYY-MM-DD] [--explain] [--variant filter,jit-off,work-mem] [--json PATH]

Results and what they mean: bench/RESULTS-reconciliation.md.

For each engine and each size N (default 1,000,000):

1. a fresh database (PostgreSQL ``feeservice_bench_recon_<N>`` on 127.0.0.1, or a SQLite file in WAL
   mode under ``--sqlite-dir``), schema by the project's migrations (``init-db``), nothing disabled:
   every constraint, index and trigger is in place while the day is loaded;
2. one business day generated with bulk SQL (PostgreSQL: INSERT … SELECT FROM generate_series;
   SQLite: the same statements over a recursive CTE, one connection with synchronous=OFF for the
   load only): N notices with 1–2 lines each, one payment per notice (~60 % at cashier windows in
   16 shifts with cash/card/transfer, ~40 % by two banks), gap-free receipts, certificates for
   5 % of the notices, the banks' statement for the day (one credit line per bank payment, bank
   charges) and the previous day's statement so that ``statement_lines`` holds N lines in all;
3. about 2.3 % of the notices carry a planted exception, of every type reconciliation knows
   (fee overrides, lines priced from a corrected or withdrawn schedule version, unknown codes,
   flagged bank payments of each reason, voided and missing receipts, a certificate whose receipt
   was voided, statement amount mismatches, bank payments missing from the statement, lost
   callbacks, reversals, unknown money, receipt number gaps, two cash drawers short). The planted
   root causes are written to ``bench_expected (type, subject, subject_id)``;
4. in a fresh child process (so that its memory is the reconciliation's alone):
   warm-up (the floor queries once), ``reconciliation.service.reconcile()`` of the day, timed, with
   the peak RSS of the process during the run (VmHWM reset through /proc/self/clear_refs; also the
   ru_maxrss delta); the exceptions it found compared root cause by root cause with
   ``bench_expected`` (missing / extra per type); the bare-SQL floor (hand-written
   ``SELECT count(*)`` of the same joins, one per comparison), timed twice, and on PostgreSQL twice
   more without parallel workers (an INSERT … SELECT gets none in PostgreSQL 15); CPU seconds of
   this process and of the database's backends for reconcile() and the serial floor; a rerun of the same
   date (the nightly job reruns provisional days) under tracemalloc for the Python heap peak, and
   checked for stable identities; with ``--explain``, EXPLAIN (ANALYZE, BUFFERS) of the slowest
   comparison on PostgreSQL and EXPLAIN QUERY PLAN of every statement on SQLite, with any full
   scan of a table flagged.

Every statement reconcile() sends is timed through SQLAlchemy's cursor events, so the report shows
each comparison beside its floor query.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Engine, bindparam, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from core.models import UTCDateTime
from reconciliation.models import ExceptionType, Subject

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = "postgresql+psycopg://root@127.0.0.1:5432/"
PG_PREFIX = "feeservice_bench_recon"
TZ = "Asia/Shanghai"
REGION = "990001"
CASHIERS = 16
BANKS = ("BANKA", "BANKB")
GAP_EVERY = 20_000  # one receipt number skipped every this many receipts
DAY_SPAN_S = 36_000  # notices are issued from 07:00 over ten hours, local time
RESULT_MARK = "BENCH-RESULT "

# The regular schedule: (code, amount in fen). Fee item ids 1..8, in force since 2020.
FEES = (("BDC-DJ", 8000), ("GA-SFZ", 2000), ("GA-LSSFZ", 1000), ("SW-GBF", 550),
        ("ZJ-PTF", 10000), ("BDC-GBF", 1500), ("GA-ZP", 300), ("ZJ-YSF", 12000))
WITHDRAWN_ID, CORRECTED_OLD_ID, CORRECTED_NEW_ID = 9, 10, 11

T = ExceptionType
S = Subject

# The planted kind of notice i is chosen by i mod 1000 (23 of each 1000 notices; certificates are clean).
KINDS: dict[int, str] = {
    11: "override", 12: "override", 13: "override", 14: "override", 15: "override",
    21: "other_version", 22: "other_version", 23: "other_version",
    31: "withdrawn", 32: "withdrawn", 41: "unknown_code",
    51: "flag_amount", 52: "flag_unknown", 53: "duplicate", 54: "cancelled",
    61: "receipt_voided", 62: "certificate_voided", 63: "no_receipt",
    71: "statement_amount", 72: "not_in_statement", 73: "lost_callback", 74: "reversal", 75: "unknown_line",
}
CERTIFIED = (100, 149)  # clean notices with i mod 1000 in this range get a certificate
BANK_KINDS = ("flag_amount", "flag_unknown", "cancelled", "no_receipt", "statement_amount", "not_in_statement",
              "reversal")
CASHIER_KINDS = ("duplicate", "receipt_voided", "certificate_voided")
FLAGGED = {"flag_amount": "amount-mismatch", "flag_unknown": "unknown-notice", "cancelled": "notice-cancelled"}

# What each planted kind must be found as: (type, subject, subject id as SQL over bench_plan p).
EXPECTED: dict[str, tuple[ExceptionType, Subject, str]] = {
    "override": (T.FEE_AMOUNT_MISMATCH, S.NOTICE_LINE, "2 * p.i - 1"),
    "other_version": (T.FEE_AMOUNT_MISMATCH, S.NOTICE_LINE, "2 * p.i - 1"),
    "withdrawn": (T.FEE_NOT_IN_SCHEDULE, S.NOTICE_LINE, "2 * p.i - 1"),
    "unknown_code": (T.FEE_NOT_IN_SCHEDULE, S.NOTICE_LINE, "2 * p.i - 1"),
    "flag_amount": (T.PAYMENT_AMOUNT_MISMATCH, S.PAYMENT, "p.i"),
    "flag_unknown": (T.PAYMENT_WITHOUT_NOTICE, S.PAYMENT, "p.i"),
    "duplicate": (T.DUPLICATE_PAYMENT, S.PAYMENT, "{n} + p.i"),
    "cancelled": (T.PAYMENT_ON_CLOSED_NOTICE, S.PAYMENT, "p.i"),
    "receipt_voided": (T.PAYMENT_WITHOUT_RECEIPT, S.PAYMENT, "p.i"),
    "no_receipt": (T.PAYMENT_WITHOUT_RECEIPT, S.PAYMENT, "p.i"),
    "certificate_voided": (T.CERTIFICATE_WITHOUT_RECEIPT, S.CERTIFICATE, "p.i"),
    "statement_amount": (T.STATEMENT_AMOUNT_MISMATCH, S.STATEMENT_LINE, "p.i"),
    "not_in_statement": (T.PAYMENT_NOT_IN_STATEMENT, S.PAYMENT, "p.i"),
    "lost_callback": (T.STATEMENT_LINE_UNMATCHED, S.STATEMENT_LINE, "2 * {n} + p.i"),
    "reversal": (T.STATEMENT_REVERSAL, S.STATEMENT_LINE, "3 * {n} + p.i"),
    "unknown_line": (T.STATEMENT_LINE_UNMATCHED, S.STATEMENT_LINE, "4 * {n} + p.i"),
}


# --- SQL that differs between the engines --------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """The few expressions PostgreSQL and SQLite spell differently (no '%' on PostgreSQL: the
    statements are sent without parameters)."""

    name: str
    day: date

    @property
    def pg(self) -> bool:
        return self.name == "postgresql"

    def series(self, n: int) -> str:
        if self.pg:
            return f"generate_series(1::bigint, {n}) AS g(i)"
        return f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s) AS g"

    def mod(self, a: str, b: int | str) -> str:
        return f"mod({a}, {b})" if self.pg else f"(({a}) % ({b}))"

    def pad(self, expr: str, width: int) -> str:
        return f"lpad(({expr})::text, {width}, '0')" if self.pg else f"printf('%0{width}d', {expr})"

    def number(self, serial: str) -> str:
        """The 20-digit notice number of a serial: ISO 7064 MOD 97-10 check digits, as
        stdnum's calc_check_digits (98 - body·100 mod 97)."""
        body = f"({REGION}000000000000 + {self.day.year % 100} * 10000000000 + ({serial}))"
        check = f"(98 - {self.mod(self.mod(body, 97) + ' * 100', 97)})"
        return f"({self.pad(body, 18)} || {self.pad(check, 2)})"

    def local(self, hour: int, minute: int = 0, days: int = 0) -> datetime:
        moment = datetime.combine(self.day + timedelta(days=days), dtime(hour, minute), ZoneInfo(TZ))
        return moment.astimezone(UTC)

    def ts(self, seconds: str, hour: int = 7) -> str:
        """The business day at `hour` local time plus `seconds` (an SQL integer expression)."""
        base = self.local(hour)
        if self.pg:
            return f"(TIMESTAMPTZ '{base.isoformat()}' + ({seconds}) * INTERVAL '1 second')"
        # SQLAlchemy's SQLite DATETIME: naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff', compared as text.
        return (f"(strftime('%Y-%m-%d %H:%M:%S', '{base:%Y-%m-%d %H:%M:%S}', '+' || ({seconds}) || ' seconds')"
                " || '.000000')")

    def at(self, moment: datetime) -> str:
        if self.pg:
            return f"TIMESTAMPTZ '{moment.isoformat()}'"
        return f"'{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}.000000'"

    def date(self, day: date) -> str:
        return f"DATE '{day.isoformat()}'" if self.pg else f"'{day.isoformat()}'"


# --- generation -----------------------------------------------------------------------------------


@dataclass
class Generated:
    rows: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    planted: dict[str, int] = field(default_factory=dict)


def kind_case(d: Dialect) -> str:
    whens = " ".join(f"WHEN {b} THEN '{kind}'" for b, kind in KINDS.items())
    return f"CASE {d.mod('i', 1000)} {whens} ELSE 'clean' END"


def quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def generation_steps(d: Dialect, n: int) -> list[tuple[str, str]]:
    """(label, SQL) in dependency order; each runs as one statement."""
    day, y = d.day, d.day.year
    created = d.at(d.local(6, 0, days=-1))
    finance = 5 + CASHIERS
    steps: list[tuple[str, str]] = []
    add = steps.append

    add(("departments", "INSERT INTO departments (id, code, name) VALUES (1, 'BDC', '县不动产登记中心'), "
         "(2, 'GA', '县公安局'), (3, 'ZJ', '县住房和城乡建设局'), (4, 'SW', '县税务局')"))
    users = [f"({k}, 'window{k}', '窗口{k}', 'x', 'window', {k}, TRUE, {created})" for k in range(1, 5)]
    users += [f"({4 + k}, 'cashier{k}', '收银员{k}', 'x', 'cashier', NULL, TRUE, {created})"
              for k in range(1, CASHIERS + 1)]
    users.append(f"({finance}, 'finance', '财务', 'x', 'finance', NULL, TRUE, {created})")
    add(("users", "INSERT INTO users (id, username, display_name, password_hash, role, department_id, active, "
         "created_at) VALUES " + ", ".join(users)))
    since = d.date(date(2020, 1, 1))
    fees = [f"({k + 1}, '{code}', {1 + k % 4}, '收费项目{k + 1}', '件', {amount}, '依据', {since}, NULL, TRUE, "
            f"{created})" for k, (code, amount) in enumerate(FEES)]
    yesterday = d.date(day - timedelta(days=1))
    fees += [f"({WITHDRAWN_ID}, 'OLD-01', 1, '已取消的收费', '件', 700, '依据', {since}, {yesterday}, TRUE, {created})",
             f"({CORRECTED_OLD_ID}, 'COR-01', 2, '更正前', '本', 1000, '依据', {since}, {yesterday}, TRUE, {created})",
             f"({CORRECTED_NEW_ID}, 'COR-01', 2, '更正后', '本', 800, '更正', {d.date(day)}, NULL, TRUE, {created})"]
    add(("fee_items", "INSERT INTO fee_items (id, code, department_id, name, unit, amount, legal_basis, "
         "effective_from, effective_to, in_use, created_at) VALUES " + ", ".join(fees)))
    add(("bank_clients", "INSERT INTO bank_clients (id, code, name, active, created_at) VALUES "
         + ", ".join(f"({k + 1}, '{code}', '银行{k + 1}', TRUE, {created})" for k, code in enumerate(BANKS))))
    statements = [(1, BANKS[0], day), (2, BANKS[1], day), (3, BANKS[0], day - timedelta(days=1))]
    add(("bank_statements", "INSERT INTO bank_statements (id, bank_code, format, version, statement_ref, filename, "
         "sha256, from_date, to_date, line_count, new_line_count, imported_at, imported_by) VALUES " + ", ".join(
             f"({sid}, '{bank}', 'camt.053', '001.08', 'STMT-{sid}', 'stmt{sid}.xml', '{sid:064d}', {d.date(on)}, "
             f"{d.date(on)}, 0, 0, {created}, 'finance')" for sid, bank, on in statements)))
    add(("cashier_shifts", "INSERT INTO cashier_shifts (id, cashier_id, opened_at) VALUES " + ", ".join(
        f"({k}, {4 + k}, {d.at(d.local(6, 30))})" for k in range(1, CASHIERS + 1))))
    add(("notice_serials", "INSERT INTO notice_serials (region_code, year, last_serial) "
         f"VALUES ('{REGION}', {y}, {n})"))

    # The plan: one row per notice, its planted kind, channel, lines, number and total.
    bank_kinds, cashier_kinds = quoted(BANK_KINDS), quoted(CASHIER_KINDS)
    channel = (f"CASE WHEN kind IN ({bank_kinds}) THEN 'bank' WHEN kind IN ({cashier_kinds}) THEN 'cashier' "
               f"WHEN kind = 'lost_callback' THEN 'none' WHEN {d.mod('i', 5)} < 3 THEN 'cashier' ELSE 'bank' END")
    fee1 = (f"CASE kind WHEN 'other_version' THEN {CORRECTED_OLD_ID} WHEN 'withdrawn' THEN {WITHDRAWN_ID} "
            f"ELSE 1 + {d.mod('i', 8)} END")
    line1 = "CASE WHEN s.kind = 'override' THEN (f1.amount * s.qty) / 2 ELSE f1.amount * s.qty END"
    add(("bench_plan", f"""
        INSERT INTO bench_plan (i, kind, channel, qty, fee1, fee2, number, total, off)
        SELECT s.i, s.kind, s.channel, s.qty, s.fee1, s.fee2, {d.number('s.i')},
               {line1} + COALESCE(f2.amount * s.qty, 0), s.off
        FROM (SELECT k.i, k.kind, {channel} AS channel, 1 + {d.mod('k.i', 3)} AS qty, {fee1} AS fee1,
                     CASE WHEN {d.mod('k.i', 2)} = 1 THEN 1 + {d.mod('k.i + 3', 8)} END AS fee2,
                     (k.i * {DAY_SPAN_S}) / {n} AS off
              FROM (SELECT i, {kind_case(d)} AS kind FROM {d.series(n)}) k) s
        JOIN fee_items f1 ON f1.id = s.fee1
        LEFT JOIN fee_items f2 ON f2.id = s.fee2"""))

    status = ("CASE WHEN p.kind IN ('lost_callback', 'flag_amount', 'flag_unknown', 'certificate_voided') "
              "THEN 'issued' WHEN p.kind = 'cancelled' THEN 'cancelled' ELSE 'paid' END")
    cancelled = "p.kind = 'cancelled'"
    add(("notices", f"""
        INSERT INTO notices (id, number, region_code, year, serial, department_id, case_reference, payer_name,
                             payer_id_number, total, currency, status, issued_at, issued_by_id, due_date,
                             cancelled_at, cancelled_by_id, cancel_reason)
        SELECT p.i, p.number, '{REGION}', {y}, p.i, 1 + {d.mod('p.i', 4)}, NULL, '缴款人' || p.i, NULL, p.total,
               'CNY', {status}, {d.ts('p.off')}, 1 + {d.mod('p.i', 4)}, {d.date(day + timedelta(days=15))},
               CASE WHEN {cancelled} THEN {d.ts('p.off + 60')} END,
               CASE WHEN {cancelled} THEN 1 + {d.mod('p.i', 4)} END,
               CASE WHEN {cancelled} THEN '申请人撤回' END
        FROM bench_plan p"""))
    add(("notice_lines", """
        INSERT INTO notice_lines (id, notice_id, position, fee_item_id, fee_code, name, unit, quantity, unit_amount,
                                  amount, override_reason)
        SELECT 2 * p.i - 1, p.i, 1, f.id, CASE WHEN p.kind = 'unknown_code' THEN 'NOPE-99' ELSE f.code END,
               f.name, f.unit, p.qty, f.amount,
               CASE WHEN p.kind = 'override' THEN (f.amount * p.qty) / 2 ELSE f.amount * p.qty END,
               CASE WHEN p.kind = 'override' THEN '困难群众减半' END
        FROM bench_plan p JOIN fee_items f ON f.id = p.fee1
        UNION ALL
        SELECT 2 * p.i, p.i, 2, f.id, f.code, f.name, f.unit, p.qty, f.amount, f.amount * p.qty, NULL
        FROM bench_plan p JOIN fee_items f ON f.id = p.fee2"""))

    cashier = "p.channel = 'cashier'"
    bank = "p.channel = 'bank'"
    bank_of = f"CASE WHEN {d.mod('p.i', 2)} = 1 THEN '{BANKS[0]}' ELSE '{BANKS[1]}' END"
    method = (f"CASE WHEN {bank} THEN 'transfer' WHEN {d.mod('p.i', 3)} = 0 THEN 'cash' "
              f"WHEN {d.mod('p.i', 3)} = 1 THEN 'card' ELSE 'transfer' END")
    flag = "CASE p.kind " + " ".join(f"WHEN '{k}' THEN '{r}'" for k, r in FLAGGED.items()) + " END"
    pay_status = (f"CASE WHEN p.kind IN ({quoted(list(FLAGGED))}) THEN 'flagged' "
                  "WHEN p.kind = 'certificate_voided' THEN 'refund_due' ELSE 'confirmed' END")
    refund = "p.kind = 'certificate_voided'"
    add(("payments", f"""
        INSERT INTO payments (id, notice_id, notice_number_given, channel, method, amount, currency, status,
                              flag_reason, reference, cashier_id, shift_id, bank_code, bank_reference, payer_name,
                              paid_at, recorded_at, refund_due_at, refund_due_reason)
        SELECT p.i, CASE WHEN p.kind = 'flag_unknown' THEN NULL ELSE p.i END,
               CASE WHEN p.kind = 'flag_unknown' THEN {d.number(f'{n} + p.i')} ELSE p.number END,
               p.channel, {method}, CASE WHEN p.kind = 'flag_amount' THEN p.total - 100 ELSE p.total END, 'CNY',
               {pay_status}, {flag}, NULL,
               CASE WHEN {cashier} THEN 5 + {d.mod('p.i', CASHIERS)} END,
               CASE WHEN {cashier} THEN 1 + {d.mod('p.i', CASHIERS)} END,
               CASE WHEN {bank} THEN {bank_of} END, CASE WHEN {bank} THEN 'R' || {d.pad('p.i', 10)} END,
               '缴款人' || p.i, {d.ts('p.off + 300')},
               CASE WHEN {bank} THEN {d.ts('p.off + 301')} ELSE {d.ts('p.off + 300')} END,
               CASE WHEN {refund} THEN {d.ts('p.off + 900')} END, CASE WHEN {refund} THEN '收据冲红' END
        FROM bench_plan p WHERE p.channel <> 'none'
        UNION ALL
        SELECT {n} + p.i, p.i, p.number, 'bank', 'transfer', p.total, 'CNY', 'flagged', 'notice-already-paid', NULL,
               NULL, NULL, {bank_of}, 'D' || {d.pad('p.i', 10)}, '缴款人' || p.i, {d.ts('p.off + 400')},
               {d.ts('p.off + 401')}, NULL, NULL
        FROM bench_plan p WHERE p.kind = 'duplicate'"""))

    no_receipt = quoted(list(FLAGGED) + ["no_receipt", "lost_callback"])
    add(("bench_receipt_plan", f"""
        INSERT INTO bench_receipt_plan (payment_id, rn)
        SELECT p.i, row_number() OVER (ORDER BY p.i) FROM bench_plan p WHERE p.kind NOT IN ({no_receipt})"""))
    voided = "p.kind IN ('receipt_voided', 'certificate_voided')"
    seq = f"(r.rn + r.rn / {GAP_EVERY})"
    add(("receipts", f"""
        INSERT INTO receipts (id, number, year, sequence, notice_id, payment_id, amount, verification_code, issued_at,
                              issued_by, status, voided_at, voided_by_id, void_reason)
        SELECT p.i, '{y}-' || {d.pad(seq, 8)}, {y}, {seq}, p.i, p.i, p.total, 'V' || {d.pad('p.i', 9)},
               {d.ts('p.off + 300')}, CASE WHEN {bank} THEN 'bank' ELSE '收银员' END,
               CASE WHEN {voided} THEN 'voided' ELSE 'valid' END, CASE WHEN {voided} THEN {d.ts('p.off + 900')} END,
               CASE WHEN {voided} THEN {finance} END, CASE WHEN {voided} THEN '冲红' END
        FROM bench_receipt_plan r JOIN bench_plan p ON p.i = r.payment_id"""))
    add(("receipt_counters", f"INSERT INTO receipt_counters (year, last_number) "
         f"SELECT {y}, COALESCE(max(sequence), 0) FROM receipts WHERE year = {y}"))
    certified = f"({d.mod('p.i', 1000)} BETWEEN {CERTIFIED[0]} AND {CERTIFIED[1]} AND p.kind = 'clean')"
    add(("certificates", f"""
        INSERT INTO certificates (id, notice_id, receipt_id, number, issued_at, issued_by_id)
        SELECT p.i, p.i, p.i, 'CERT-' || p.number, {d.ts('p.off + 600')}, 1 + {d.mod('p.i', 4)}
        FROM bench_plan p WHERE {certified} OR p.kind = 'certificate_voided'"""))

    line_cols = ("id, statement_id, bank_code, bank_reference, entry_reference, position, notice_number_given, "
                 "notice_number, amount, currency, direction, reversal, booked_date, payer_name, payer_account, "
                 "remittance")
    on = d.date(day)
    stmt_of = f"CASE WHEN {bank_of} = '{BANKS[0]}' THEN 1 ELSE 2 END"
    add(("statement_lines (day)", f"""
        INSERT INTO statement_lines ({line_cols})
        SELECT pay.id, CASE WHEN pay.bank_code = '{BANKS[0]}' THEN 1 ELSE 2 END, pay.bank_code, pay.bank_reference,
               pay.bank_reference, pay.id, pay.notice_number_given, pay.notice_number_given,
               CASE WHEN p.kind = 'statement_amount' THEN pay.amount + 100 ELSE pay.amount END, 'CNY', 'credit',
               FALSE, {on}, '缴款人', NULL, NULL
        FROM bench_plan p JOIN payments pay ON pay.id = p.i
        WHERE p.channel = 'bank' AND p.kind <> 'not_in_statement'
        UNION ALL
        SELECT pay.id, CASE WHEN pay.bank_code = '{BANKS[0]}' THEN 1 ELSE 2 END, pay.bank_code, pay.bank_reference,
               pay.bank_reference, pay.id, pay.notice_number_given, pay.notice_number_given, pay.amount, 'CNY',
               'credit', FALSE, {on}, '缴款人', NULL, NULL
        FROM payments pay WHERE pay.id > {n}
        UNION ALL
        SELECT 2 * {n} + p.i, 1, '{BANKS[0]}', 'L' || {d.pad('p.i', 10)}, NULL, 2 * {n} + p.i, '缴款码 ' || p.number,
               p.number, p.total, 'CNY', 'credit', FALSE, {on}, '缴款人', NULL, '缴款码 ' || p.number
        FROM bench_plan p WHERE p.kind = 'lost_callback'
        UNION ALL
        SELECT 3 * {n} + p.i, {stmt_of}, {bank_of}, 'V' || {d.pad('p.i', 10)}, NULL, 3 * {n} + p.i, p.number,
               p.number, p.total, 'CNY', 'debit', TRUE, {on}, '缴款人', NULL, NULL
        FROM bench_plan p WHERE p.kind = 'reversal'
        UNION ALL
        SELECT 4 * {n} + p.i, 2, '{BANKS[1]}', 'U' || {d.pad('p.i', 10)}, NULL, 4 * {n} + p.i, '转账 ' || p.i, NULL,
               12345, 'CNY', 'credit', FALSE, {on}, '不明来款', NULL, '转账 ' || p.i
        FROM bench_plan p WHERE p.kind = 'unknown_line'
        UNION ALL
        SELECT 5 * {n} + k.id, k.id, k.code, 'C-' || k.code, NULL, 5 * {n} + k.id, NULL, NULL, 1500, 'CNY', 'debit',
               FALSE, {on}, NULL, NULL, '账户管理费'
        FROM bank_clients k"""))

    types = {kind: (t, s, sid.format(n=n)) for kind, (t, s, sid) in EXPECTED.items()}
    expected = [f"SELECT '{t.value}', '{s.value}', {sid} FROM bench_plan p WHERE p.kind = '{kind}'"
                for kind, (t, s, sid) in types.items()]
    expected.append(f"SELECT '{T.RECEIPT_NUMBER_GAP.value}', '{S.RECEIPT.value}', r.payment_id "
                    f"FROM bench_receipt_plan r WHERE {d.mod('r.rn', GAP_EVERY)} = 0")
    expected.append(f"SELECT '{T.CASH_DRAWER_MISMATCH.value}', '{S.SHIFT.value}', s.id FROM cashier_shifts s "
                    "WHERE s.id <= 2")
    add(("shifts closed", f"""
        UPDATE cashier_shifts SET closed_at = {d.at(d.local(18))},
            recorded_cash = (SELECT COALESCE(sum(amount), 0) FROM payments
                             WHERE shift_id = cashier_shifts.id AND method = 'cash' AND status = 'confirmed'),
            recorded_card = (SELECT COALESCE(sum(amount), 0) FROM payments
                             WHERE shift_id = cashier_shifts.id AND method = 'card' AND status = 'confirmed'),
            recorded_transfer = (SELECT COALESCE(sum(amount), 0) FROM payments
                                 WHERE shift_id = cashier_shifts.id AND method = 'transfer' AND status = 'confirmed'),
            recorded_other = 0,
            declared_cash = (SELECT COALESCE(sum(amount), 0) FROM payments
                             WHERE shift_id = cashier_shifts.id AND method = 'cash' AND status = 'confirmed')
                            - CASE WHEN id <= 2 THEN 100 ELSE 0 END"""))
    add(("bench_expected", "INSERT INTO bench_expected (type, subject, subject_id) " + " UNION ALL ".join(expected)))
    return steps


def history_step(d: Dialect, n: int, start_id: int, count: int) -> str:
    """The previous day's statement lines (already reconciled days live in the same table)."""
    on = d.date(d.day - timedelta(days=1))
    return f"""
        INSERT INTO statement_lines (id, statement_id, bank_code, bank_reference, entry_reference, position,
                                     notice_number_given, notice_number, amount, currency, direction, reversal,
                                     booked_date, payer_name, payer_account, remittance)
        SELECT {start_id} + i, 3, '{BANKS[0]}', 'H' || {d.pad('i', 10)}, NULL, i, NULL, NULL, 1000 + {d.mod('i', 977)},
               'CNY', 'credit', FALSE, {on}, '缴款人', NULL, NULL
        FROM {d.series(count)}"""


STAGING = (
    "CREATE TABLE bench_plan (i BIGINT PRIMARY KEY, kind VARCHAR(20) NOT NULL, channel VARCHAR(8) NOT NULL, "
    "qty INTEGER NOT NULL, fee1 INTEGER NOT NULL, fee2 INTEGER, number VARCHAR(20) NOT NULL, total BIGINT NOT NULL, "
    "off INTEGER NOT NULL)",
    "CREATE TABLE bench_receipt_plan (payment_id BIGINT PRIMARY KEY, rn BIGINT NOT NULL)",
    "CREATE TABLE bench_expected (type VARCHAR(40) NOT NULL, subject VARCHAR(20) NOT NULL, subject_id BIGINT NOT NULL,"
    " PRIMARY KEY (type, subject, subject_id))",
    "CREATE TABLE bench_meta (rows BIGINT NOT NULL, business_date VARCHAR(10) NOT NULL)",
)
FILLED = ("departments", "users", "fee_items", "bank_clients", "bank_statements", "cashier_shifts", "notices",
          "notice_lines", "payments", "receipts", "certificates", "statement_lines")


def load_engine(url: str) -> Engine:
    """The loading connection: foreign keys on, and on SQLite synchronous=OFF and a large cache,
    for the load only (the measured process opens the database as the service does)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            for pragma in ("foreign_keys=ON", "synchronous=OFF", "cache_size=-524288", "temp_store=MEMORY"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, poolclass=NullPool)


def generate(url: str, d: Dialect, n: int) -> Generated:
    result = Generated(n)
    engine = load_engine(url)
    started = time.perf_counter()
    with engine.connect() as conn:
        if d.pg:
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.exec_driver_sql("SET work_mem = '256MB'")
            conn.exec_driver_sql("SET maintenance_work_mem = '512MB'")
            conn.commit()
        with conn.begin():
            for ddl in STAGING:
                conn.exec_driver_sql(ddl)
            conn.exec_driver_sql(f"INSERT INTO bench_meta (rows, business_date) VALUES ({n}, '{d.day.isoformat()}')")
        for label, sql in generation_steps(d, n):
            step = time.perf_counter()
            with conn.begin():
                rowcount = conn.exec_driver_sql(sql).rowcount
            result.seconds[label] = time.perf_counter() - step
            result.counts[label] = int(rowcount or 0)
            log(f"  {label:<24} {result.counts[label]:>10,} rows {result.seconds[label]:7.1f} s")
        day_lines = result.counts["statement_lines (day)"]
        history = max(0, n - day_lines)
        step = time.perf_counter()
        with conn.begin():
            conn.exec_driver_sql(history_step(d, n, 6 * n, history))
            conn.exec_driver_sql(
                "UPDATE bank_statements SET line_count = (SELECT count(*) FROM statement_lines l "
                "WHERE l.statement_id = bank_statements.id), new_line_count = (SELECT count(*) FROM statement_lines l "
                "WHERE l.statement_id = bank_statements.id)")
        result.seconds["statement_lines (previous day)"] = time.perf_counter() - step
        result.counts["statement_lines (previous day)"] = history
        log(f"  {'statement_lines (prev)':<24} {history:>10,} rows "
            f"{result.seconds['statement_lines (previous day)']:7.1f} s")
        if d.pg:
            for table in FILLED:
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT COALESCE(max(id), 1) FROM {table}))")
            conn.commit()
        result.seconds["load"] = time.perf_counter() - started
        step = time.perf_counter()
        if d.pg:
            # A steady-state database is vacuumed and analysed by autovacuum; do it now rather than
            # measure whichever state autovacuum happens to have reached.
            conn.commit()
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            auto.exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.commit()
            conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        result.seconds["vacuum/checkpoint"] = time.perf_counter() - step
        rows = conn.execute(text("SELECT type, count(*) FROM bench_expected GROUP BY type")).all()
        result.planted = {str(t): int(c) for t, c in rows}
        for table in ("notices", "notice_lines", "payments", "receipts", "certificates", "statement_lines"):
            result.counts[f"total {table}"] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    result.seconds["generate"] = time.perf_counter() - started
    return result


# --- databases ------------------------------------------------------------------------------------


def database_url(engine_name: str, rows: int, sqlite_dir: Path) -> str:
    if engine_name == "postgresql":
        return f"{PG_SERVER}{PG_PREFIX}_{rows}"
    return f"sqlite:///{sqlite_dir / f'{PG_PREFIX}_{rows}.sqlite3'}"


def sqlite_files(url: str) -> list[Path]:
    path = Path(make_url(url).database or "")
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        for path in sqlite_files(url):
            path.unlink(missing_ok=True)
        return
    parsed = make_url(url)
    assert parsed.database and parsed.database.startswith(PG_PREFIX), parsed.database
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


def fresh_database(url: str) -> None:
    from core.cli import upgrade_database

    drop_database(url)
    if not url.startswith("sqlite"):
        parsed = make_url(url)
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        admin.dispose()
    upgrade_database(url)


def clear_runs(url: str) -> None:
    """Forget earlier reconciliation runs of the kept database (the day's facts stay)."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        for table in ("reconciliation_findings", "reconciliation_exceptions", "reconciliation_runs"):
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


def reusable(url: str, rows: int, day: date) -> bool:
    """A kept database of the same size and date: clear earlier runs and measure it again."""
    try:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            meta = conn.execute(text("SELECT rows, business_date FROM bench_meta")).one()
        engine.dispose()
        if int(meta[0]) != rows or meta[1] != day.isoformat():
            return False
        clear_runs(url)
        return True
    except Exception:  # noqa: BLE001 - any failure means: generate afresh
        return False


# --- the measured child process ---------------------------------------------------------------------


def floor_queries() -> dict[str, str]:
    """Hand-written counts of the same joins as each comparison of reconciliation/matching.py.
    Columns of every joined table are counted, so that no join is optimised away."""
    payment_day = ("((p.channel = 'cashier' AND p.recorded_at >= :s AND p.recorded_at < :e) "
                   "OR (p.channel = 'bank' AND p.paid_at >= :s AND p.paid_at < :e))")
    return {
        "fee_findings": """
            SELECT count(*), count(f.id), count(n.department_id) FROM notice_lines l
            JOIN notices n ON n.id = l.notice_id
            LEFT JOIN fee_items f ON f.code = l.fee_code AND f.effective_from <= :d
                                 AND (f.effective_to IS NULL OR f.effective_to >= :d)
            WHERE n.issued_at >= :s AND n.issued_at < :e
              AND (f.id IS NULL OR l.override_reason IS NOT NULL OR l.unit_amount <> f.amount)""",
        "payment_findings": f"""
            SELECT count(*), count(n.department_id), count(r.number) FROM payments p
            LEFT JOIN notices n ON n.id = p.notice_id
            LEFT JOIN receipts r ON r.payment_id = p.id
            WHERE {payment_day}
              AND ((p.flag_reason IS NOT NULL AND p.status IN ('flagged', 'refund_due'))
                   OR (p.status = 'confirmed' AND (n.status IN ('cancelled', 'expired') OR p.amount <> n.total
                                                   OR r.id IS NULL OR r.status <> 'valid')))""",
        "certificate_findings": """
            SELECT count(*), count(r.number) FROM certificates c
            JOIN notices n ON n.id = c.notice_id
            LEFT JOIN receipts r ON r.id = c.receipt_id
            WHERE c.issued_at >= :s AND c.issued_at < :e
              AND (r.id IS NULL OR r.status <> 'valid' OR r.notice_id <> c.notice_id OR r.amount < n.total)""",
        "receipt_gap_findings": """
            SELECT count(*) FROM receipts r
            WHERE r.issued_at >= :s AND r.issued_at < :e AND r.sequence > 1
              AND NOT EXISTS (SELECT 1 FROM receipts b WHERE b.year = r.year AND b.sequence = r.sequence - 1)""",
        "shift_findings": """
            SELECT count(*) FROM cashier_shifts
            WHERE closed_at >= :s AND closed_at < :e AND declared_cash <> recorded_cash""",
        "statement_line_findings": """
            SELECT count(*), count(p.id), count(n.department_id) FROM statement_lines l
            LEFT JOIN payments p ON p.bank_code = l.bank_code AND p.bank_reference = l.bank_reference
            LEFT JOIN notices n ON n.number = l.notice_number
            WHERE l.booked_date = :d AND (l.direction = 'credit' OR l.reversal = TRUE)
              AND (l.reversal = TRUE OR p.id IS NULL OR p.amount <> l.amount)""",
        "missing_from_statement_findings": """
            SELECT count(*), count(n.department_id) FROM payments p
            LEFT JOIN notices n ON n.id = p.notice_id
            WHERE p.channel = 'bank' AND p.paid_at >= :s AND p.paid_at < :e
              AND EXISTS (SELECT 1 FROM bank_statements b WHERE b.bank_code = p.bank_code
                          AND b.from_date <= :d AND b.to_date >= :d)
              AND NOT EXISTS (SELECT 1 FROM statement_lines l
                              WHERE l.bank_code = p.bank_code AND l.bank_reference = p.bank_reference)""",
    }


def floor_params(day: date) -> dict[str, Any]:
    tz = ZoneInfo(TZ)
    return {"s": datetime.combine(day, dtime(0), tz), "e": datetime.combine(day + timedelta(days=1), dtime(0), tz),
            "d": day}


def bound(sql: str, params: dict[str, Any]) -> Any:
    """text() with the day's bounds bound as the columns' types (SQLite compares datetimes as text)."""
    types: dict[str, Any] = {"s": UTCDateTime(), "e": UTCDateTime(), "d": Date()}
    used = [k for k in params if re.search(rf":{k}\b", sql)]
    return text(sql).bindparams(*(bindparam(k, params[k], type_=types[k]) for k in used))


def run_floor(engine: Engine, day: date, serial: bool = False) -> tuple[dict[str, float], dict[str, int]]:
    """Each floor query once; `serial` forbids parallel workers (PostgreSQL), as an INSERT … SELECT
    has none in PostgreSQL 15."""
    params = floor_params(day)
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        if serial and engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        for name, sql in floor_queries().items():
            statement = bound(sql, params)
            started = time.perf_counter()
            counts[name] = int(conn.execute(statement).one()[0])
            seconds[name] = time.perf_counter() - started
        conn.rollback()
    return seconds, counts


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of this process plus, on PostgreSQL, of the database's client backends (read
    from /proc: the server runs on this machine). Under a loaded machine CPU time moves far less
    than wall time. Parallel workers of a query are not counted (they are gone when it ends)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _backends(self) -> dict[int, float]:
        if self.engine.dialect.name != "postgresql":
            return {}
        with self.engine.connect() as conn:
            pids = [int(pid) for pid in conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'")).scalars()]
            conn.rollback()
        found: dict[int, float] = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        return found

    def now(self) -> tuple[float, dict[int, float]]:
        return time.process_time(), self._backends()

    def since(self, before: tuple[float, dict[int, float]]) -> dict[str, float]:
        client, backends = self.now()
        server = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items())
        return {"client": client - before[0], "server": server, "total": client - before[0] + server}


@dataclass
class Captured:
    statement: str
    parameters: Any
    seconds: float
    label: str


class StatementTimer:
    """Times every statement sent on the engine, labelled by what it does."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.captured: list[Captured] = []
        self.active = False
        self._started = 0.0
        self._comparisons = 0
        self._updates = 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    @contextmanager
    def recording(self) -> Iterator[list[Captured]]:
        self.captured, self.active, self._comparisons, self._updates = [], True, 0, 0
        try:
            yield self.captured
        finally:
            self.active = False

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if self.active:
            elapsed = time.perf_counter() - self._started
            self.captured.append(Captured(statement, parameters, elapsed, self._label(statement)))

    def _label(self, statement: str) -> str:
        from reconciliation.matching import COMPARISONS

        flat = " ".join(statement.split())
        if flat.startswith("INSERT INTO reconciliation_findings"):
            self._comparisons += 1
            k = self._comparisons - 1
            return COMPARISONS[k].__name__ if k < len(COMPARISONS) else "findings insert"
        if flat.startswith("INSERT INTO reconciliation_exceptions"):
            return "merge: insert new exceptions"
        if flat.startswith("UPDATE reconciliation_exceptions"):
            # _merge() refreshes the exceptions seen again, then closes those no longer found.
            self._updates += 1
            return "merge: refresh seen exceptions" if self._updates == 1 else "merge: close exceptions gone"
        if flat.startswith("DELETE FROM reconciliation_findings"):
            return "delete findings"
        verb = flat.split(" ", 1)[0].lower()
        if verb == "select":  # the outermost FROM is the last one (subqueries sit in the select list)
            tables = re.findall(r"\bFROM ([a-z_]+)", flat)
            return f"select {tables[-1]}" if tables else "select (no table)"
        table = re.search(r"\b(?:INTO|UPDATE) ([a-z_]+)", flat)
        return f"{verb} {table.group(1) if table else ''}".strip()


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    status = Path("/proc/self/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    return (int(rss.group(1)) if rss else 0, int(hwm.group(1)) if hwm else 0)


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def verify(engine: Engine, day: date) -> dict[str, Any]:
    """The run's open exceptions against the planted root causes, per type."""
    with engine.connect() as conn:
        params = {"d": day}
        date_param = bindparam("d", type_=Date())
        found = {str(t): int(c) for t, c in conn.execute(text(
            "SELECT type, count(*) FROM reconciliation_exceptions WHERE business_date = :d AND status = 'open' "
            "GROUP BY type").bindparams(date_param), params)}
        missing = {str(t): int(c) for t, c in conn.execute(text(
            "SELECT x.type, count(*) FROM bench_expected x WHERE NOT EXISTS (SELECT 1 FROM reconciliation_exceptions e "
            "WHERE e.business_date = :d AND e.status = 'open' AND e.type = x.type AND e.subject = x.subject "
            "AND e.subject_id = x.subject_id) GROUP BY x.type").bindparams(date_param), params)}
        extra = {str(t): int(c) for t, c in conn.execute(text(
            "SELECT e.type, count(*) FROM reconciliation_exceptions e WHERE e.business_date = :d AND e.status = 'open' "
            "AND NOT EXISTS (SELECT 1 FROM bench_expected x WHERE e.type = x.type AND e.subject = x.subject "
            "AND e.subject_id = x.subject_id) GROUP BY e.type").bindparams(date_param), params)}
        samples: dict[str, list[Any]] = {}
        for kind in extra:
            rows = conn.execute(text(
                "SELECT e.subject, e.subject_id, e.detail_code, e.expected_amount, e.actual_amount "
                "FROM reconciliation_exceptions e WHERE e.business_date = :d AND e.type = :t AND e.status = 'open' "
                "AND NOT EXISTS (SELECT 1 FROM bench_expected x WHERE e.type = x.type AND e.subject = x.subject "
                "AND e.subject_id = x.subject_id) ORDER BY e.subject_id LIMIT 5").bindparams(date_param),
                {"d": day, "t": kind}).all()
            samples[kind] = [list(row) for row in rows]
        details = {f"{t}/{dc}": int(c) for t, dc, c in conn.execute(text(
            "SELECT type, detail_code, count(*) FROM reconciliation_exceptions WHERE business_date = :d "
            "AND status = 'open' GROUP BY type, detail_code").bindparams(date_param), params)}
        ids = conn.execute(text("SELECT count(*), COALESCE(max(id), 0) FROM reconciliation_exceptions "
                                "WHERE business_date = :d").bindparams(date_param), params).one()
        conn.rollback()
    return {"found": found, "missing": missing, "extra": extra, "extra_samples": samples, "details": details,
            "exceptions_rows": int(ids[0]), "max_id": int(ids[1])}


def explain(engine: Engine, captured: list[Captured], floor: dict[str, str], day: date) -> dict[str, Any]:
    """PostgreSQL: EXPLAIN (ANALYZE, BUFFERS) of the slowest comparison and of its floor query.
    SQLite: EXPLAIN QUERY PLAN of every statement of the run; full scans of a table are listed."""
    out: dict[str, Any] = {}
    comparisons = [c for c in captured if c.label.endswith("_findings")]
    if engine.dialect.name == "postgresql":
        slowest = max(comparisons, key=lambda c: c.seconds)
        with engine.connect() as conn:
            with conn.begin() as tx:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + slowest.statement, slowest.parameters)
                out["slowest"] = slowest.label
                out["plan"] = "\n".join(str(row[0]) for row in plan)
                tx.rollback()
            statement = bound("EXPLAIN (ANALYZE, BUFFERS) " + floor[slowest.label], floor_params(day))
            out["floor_plan"] = "\n".join(str(row[0]) for row in conn.execute(statement))
            conn.rollback()
        return out
    plans: dict[str, str] = {}
    scans: list[str] = []
    with engine.connect() as conn:
        for c in captured:
            if c.statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "SELECT")):
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + c.statement, c.parameters).all()
                lines = [str(row[3]) for row in rows]
                plans[c.label] = "\n".join(lines)
                for line in lines:
                    if re.match(r"SCAN [a-z_]+( AS \w+)?$", line.strip()):
                        scans.append(f"{c.label}: {line.strip()}")
        conn.rollback()
    out["plans"] = plans
    out["full_scans"] = scans
    return out


VARIANTS = {
    "filter": "each comparison also filters on its type CASE's conditions, OR-ed (patched _store)",
    "jit-off": "SET LOCAL jit = off in the reconciliation transaction (PostgreSQL; patched _serialise_runs_of)",
    "work-mem": "SET LOCAL work_mem = '64MB' in the reconciliation transaction (PostgreSQL; as jit-off)",
}


def apply_variants(names: list[str]) -> None:
    """Measure proposed changes to reconciliation/ without editing it: patched copies of one
    function each, installed in this (child) process only."""
    from sqlalchemy import or_
    from sqlalchemy.sql.elements import Case, Label, Null

    from reconciliation import matching, service

    if "filter" in names:
        original_store = matching._store

        def store_filtered(session: Any, run_id: int, query: Any) -> int:
            # "type IS NOT NULL" of a CASE … ELSE NULL is the OR of its conditions; spelled out,
            # the planner can estimate it and apply it before the joins that only add evidence.
            kind = next((c for c in query.selected_columns if c.name == "type"), None)
            case = kind.element if isinstance(kind, Label) else kind
            if isinstance(case, Case) and (case.else_ is None or isinstance(case.else_, Null)):
                query = query.where(or_(*(condition for condition, _ in case.whens)))
            return original_store(session, run_id, query)

        matching._store = store_filtered
    local = [setting for name, setting in (("jit-off", "jit = off"), ("work-mem", "work_mem = '64MB'"))
             if name in names]
    if local:
        original_serialise = service._serialise_runs_of

        def serialise_with_settings(session: Any, business_date: date) -> None:
            original_serialise(session, business_date)
            if session.get_bind().dialect.name == "postgresql":
                for setting in local:
                    session.execute(text(f"SET LOCAL {setting}"))

        service._serialise_runs_of = serialise_with_settings


def child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: reconcile, the floor, a rerun; prints one JSON line."""
    from core.app import create_app
    from receipts.service import receipt_settings
    from reconciliation.service import reconcile

    day = date.fromisoformat(args.date)
    apply_variants([v for v in (args.variant or "").split(",") if v])
    app = create_app({"DATABASE_URL": args.url, "SECRET_KEY": "bench-recon", "FEESVC_AUDIT_KEY": "bench-audit",
                      "FEESVC_RECEIPT_KEY": "bench-receipt", "FEESVC_TIMEZONE": TZ})
    out: dict[str, Any] = {}
    with app.app_context():
        database = app.extensions["db"]
        settings = receipt_settings(app.config)
        timer = StatementTimer(database.engine)
        cpu = CpuMeter(database.engine)
        warm, warm_counts = run_floor(database.engine, day)  # the day into the caches, as for the floor runs
        out["warm_floor_s"] = warm
        with database.engine.connect() as conn:
            out["planted"] = {str(t): int(c) for t, c in conn.execute(
                text("SELECT type, count(*) FROM bench_expected GROUP BY type"))}
        out["floor_counts"] = warm_counts

        gc.collect()
        rss_before, _ = rss_kib()
        ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_reset"] = reset_peak()
        cpu_before = cpu.now()
        with timer.recording() as first:
            started = time.perf_counter()
            run = reconcile(database, settings, day, started_by="bench")
            out["reconcile_s"] = time.perf_counter() - started
        out["reconcile_cpu"] = cpu.since(cpu_before)
        rss_after, hwm = rss_kib()
        out["rss_before_kib"], out["rss_after_kib"], out["peak_rss_kib"] = rss_before, rss_after, hwm
        out["ru_maxrss_delta_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - ru_before
        out["run_status"] = str(run.status)
        out["run_exception_counts"] = json.loads(run.exception_counts or "{}")
        out["statements"] = [(c.label, c.seconds) for c in first]
        out["verify"] = verify(database.engine, day)

        floors = [run_floor(database.engine, day)[0] for _ in range(2)]
        out["floor_s"] = {name: min(f[name] for f in floors) for name in floors[0]}
        serial: list[dict[str, float]] = []
        serial_cpu: list[float] = []
        for _ in range(2 if database.engine.dialect.name == "postgresql" else 0):
            cpu_before = cpu.now()
            serial.append(run_floor(database.engine, day, serial=True)[0])
            serial_cpu.append(cpu.since(cpu_before)["total"])
        if serial:
            out["floor_serial_s"] = {name: min(f[name] for f in serial) for name in serial[0]}
            out["floor_serial_cpu_s"] = min(serial_cpu)
        else:  # SQLite runs every query on one core: its floor is serial already
            cpu_before = cpu.now()
            run_floor(database.engine, day)
            out["floor_serial_s"] = out["floor_s"]
            out["floor_serial_cpu_s"] = cpu.since(cpu_before)["total"]

        gc.collect()
        reset_peak()
        tracemalloc.start()
        cpu_before = cpu.now()
        with timer.recording() as second:
            started = time.perf_counter()
            rerun = reconcile(database, settings, day, started_by="bench")
            out["rerun_s"] = time.perf_counter() - started
        out["rerun_cpu"] = cpu.since(cpu_before)
        out["tracemalloc_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
        out["rerun_peak_rss_kib"] = rss_kib()[1]
        out["rerun_statements"] = [(c.label, c.seconds) for c in second]
        out["rerun_status"] = str(rerun.status)
        out["reverify"] = verify(database.engine, day)
        if args.explain:
            out["explain"] = explain(database.engine, first, floor_queries(), day)
    print(RESULT_MARK + json.dumps(out), flush=True)


# --- the parent: generate, measure, report ------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(url: str, day: date, explain_plans: bool, variant: str = "") -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.reconcile_day", "--child", "--url", url, "--date", day.isoformat()]
    if explain_plans:
        command.append("--explain")
    if variant:
        command += ["--variant", variant]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measuring child failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK):])
    return result


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(engine_name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over the repeats: medians of the times (each floor query is the best of two within
    a repeat), the largest memory peaks, and correctness of every repeat."""
    first = runs[0]
    planted = sum(first["planted"].values())
    found = sum(first["verify"]["found"].values())
    missing = max(sum(m["verify"]["missing"].values()) for m in runs)
    extra = max(sum(m["verify"]["extra"].values()) for m in runs)
    floors = [sum(m["floor_s"].values()) for m in runs]
    reconciles = [m["reconcile_s"] for m in runs]
    comparisons = [sum(s for label, s in m["statements"] if label.endswith("_findings")) for m in runs]

    def floor_of(*names: str) -> float:
        return median([sum(m["floor_s"][n] for n in names) for m in runs])

    floor = median(floors)
    serial = median([sum(m["floor_serial_s"].values()) for m in runs])
    cpu = median([m["reconcile_cpu"]["total"] for m in runs])
    floor_cpu = median([m["floor_serial_cpu_s"] for m in runs])
    stable = all(m["reverify"]["exceptions_rows"] == m["verify"]["exceptions_rows"]
                 and m["reverify"]["max_id"] == m["verify"]["max_id"] for m in runs)
    return {
        "engine": engine_name, "repeats": len(runs), "planted": planted, "found": found, "missing": missing,
        "extra": extra, "reconcile_s": median(reconciles), "reconcile_min_s": min(reconciles),
        "reconcile_all_s": reconciles, "rerun_s": median([m["rerun_s"] for m in runs]),
        "comparisons_s": median(comparisons), "floor_s": floor, "floor_min_s": min(floors),
        "floor_notice_payment_schedule_s": floor_of("fee_findings", "payment_findings"),
        "floor_statement_s": floor_of("statement_line_findings", "missing_from_statement_findings"),
        "ratio": median(reconciles) / floor if floor else float("nan"),
        "floor_serial_s": serial, "ratio_serial": median(reconciles) / serial if serial else float("nan"),
        "reconcile_cpu_s": cpu, "floor_serial_cpu_s": floor_cpu,
        "reconcile_cpu_server_s": median([m["reconcile_cpu"]["server"] for m in runs]),
        "reconcile_cpu_client_s": median([m["reconcile_cpu"]["client"] for m in runs]),
        "ratio_cpu": cpu / floor_cpu if floor_cpu else float("nan"),
        "ratio_best": min(reconciles) / min(floors) if min(floors) else float("nan"),
        "comparisons_ratio": median(comparisons) / floor if floor else float("nan"),
        "peak_rss_delta_mib": max(m["peak_rss_kib"] - m["rss_before_kib"] for m in runs) / 1024,
        "peak_rss_mib": max(m["peak_rss_kib"] for m in runs) / 1024,
        "ru_maxrss_delta_mib": max(m["ru_maxrss_delta_kib"] for m in runs) / 1024,
        "tracemalloc_peak_mib": max(m["tracemalloc_peak_kib"] for m in runs) / 1024,
        "rerun_stable": stable,
        "correct": missing == 0 and extra == 0 and found == planted and stable,
    }


def print_report(results: list[dict[str, Any]]) -> None:
    head = ("engine", "notices", "gen s", "planted", "found", "miss/extra", "reconcile s", "rerun s", "floor s",
            "ratio", "serial floor s", "ratio", "CPU s", "floor CPU s", "CPU ratio", "peak RSS Δ MiB", "py heap MiB")
    rows = []
    for r in results:
        s = r["summary"]
        rows.append((s["engine"], f"{r['rows']:,}", f"{r['generated']['seconds'].get('generate', 0):.0f}"
                     if r.get("generated") else "reused", f"{s['planted']:,}", f"{s['found']:,}",
                     f"{s['missing']}/{s['extra']}", f"{s['reconcile_s']:.2f}", f"{s['rerun_s']:.2f}",
                     f"{s['floor_s']:.2f}", f"{s['ratio']:.2f}", f"{s['floor_serial_s']:.2f}",
                     f"{s['ratio_serial']:.2f}", f"{s['reconcile_cpu_s']:.2f}", f"{s['floor_serial_cpu_s']:.2f}",
                     f"{s['ratio_cpu']:.2f}", f"{s['peak_rss_delta_mib']:.1f}", f"{s['tracemalloc_peak_mib']:.2f}"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=False)))
    for r in results:
        runs = r["measured"]
        m = sorted(runs, key=lambda x: x["reconcile_s"])[len(runs) // 2]  # the median repeat
        print(f"\n{r['summary']['engine']} {r['rows']:,}: statement times of reconcile() "
              f"(run 1 / rerun) beside the floor query of each comparison (median of {len(runs)} repeats: "
              + ", ".join(f"{x:.2f}" for x in r["summary"]["reconcile_all_s"]) + " s)")
        rerun = dict(_merge_labels(m["rerun_statements"]))
        for label, seconds in _merge_labels(m["statements"]):
            floor = m["floor_s"].get(label)
            serial = m["floor_serial_s"].get(label)
            extra = (f"  floor {floor:7.3f} s  x{seconds / floor:5.2f}   serial floor {serial:7.3f} s"
                     if floor and serial else "")
            print(f"  {label:<34} {seconds:8.3f} s / {rerun.get(label, 0.0):8.3f} s{extra}")
        v = m["verify"]
        if v["missing"] or v["extra"]:
            print(f"  MISMATCH missing={v['missing']} extra={v['extra']} samples={v['extra_samples']}")
        if m["reverify"]["exceptions_rows"] != v["exceptions_rows"] or m["reverify"]["max_id"] != v["max_id"]:
            print(f"  RERUN CHANGED IDENTITIES: {v['exceptions_rows']}/{v['max_id']} → "
                  f"{m['reverify']['exceptions_rows']}/{m['reverify']['max_id']}")
        if "explain" in runs[0]:
            e = runs[0]["explain"]
            if "plan" in e:
                print(f"\n  EXPLAIN (ANALYZE, BUFFERS) of the slowest comparison, {e['slowest']}:")
                print("    " + e["plan"].replace("\n", "\n    "))
                print("\n  EXPLAIN (ANALYZE, BUFFERS) of its floor query:")
                print("    " + e["floor_plan"].replace("\n", "\n    "))
            else:
                print("\n  SQLite full table scans in reconcile's statements: "
                      + ("none" if not e["full_scans"] else "; ".join(e["full_scans"])))
                for label, plan in e["plans"].items():
                    print(f"  -- {label}\n    " + plan.replace("\n", "\n    "))


def _merge_labels(statements: list[list[Any]]) -> list[tuple[str, float]]:
    merged: dict[str, float] = {}
    for label, seconds in statements:
        merged[label] = merged.get(label, 0.0) + float(seconds)
    return list(merged.items())


def default_day() -> date:
    return datetime.now(ZoneInfo(TZ)).date() - timedelta(days=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", default="1000000", help="notices per day; several sizes comma-separated")
    parser.add_argument("--engine", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the generated databases")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database of the same size and date")
    parser.add_argument("--date", default=None, help="business date (default: yesterday in Asia/Shanghai)")
    parser.add_argument("--sqlite-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times (runs cleared between)")
    parser.add_argument("--explain", action="store_true", help="print query plans of reconcile's statements")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--variant", default="", help="measure proposed changes to reconciliation/, comma-separated: "
                        + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    day = date.fromisoformat(args.date) if args.date else default_day()
    sizes = [int(x.replace("_", "")) for x in args.rows.split(",")]
    engines = ["postgresql", "sqlite"] if args.engine == "both" else [args.engine]
    log(f"business date {day}, {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    results: list[dict[str, Any]] = []
    for engine_name in engines:
        for rows in sizes:
            url = database_url(engine_name, rows, args.sqlite_dir)
            log(f"{engine_name} {rows:,} notices: {url}")
            gen: Generated | None = None
            if not (args.reuse and reusable(url, rows, day)):
                fresh_database(url)
                gen = generate(url, Dialect(engine_name, day), rows)
                log(f"  generated in {gen.seconds['generate']:.1f} s; planted {sum(gen.planted.values()):,}")
            runs: list[dict[str, Any]] = []
            for repeat in range(args.repeat):
                if repeat:
                    clear_runs(url)
                log(f"  measuring {repeat + 1}/{args.repeat} (load {os.getloadavg()[0]:.1f})")
                runs.append(measure(url, day, args.explain and repeat == 0, args.variant))
                log(f"  reconcile {runs[-1]['reconcile_s']:.2f} s, rerun {runs[-1]['rerun_s']:.2f} s, "
                    f"floor {sum(runs[-1]['floor_s'].values()):.2f} s")
            summary = summarise(engine_name, runs)
            results.append({"rows": rows, "url": url, "day": day.isoformat(), "summary": summary,
                            "generated": gen.__dict__ if gen else None, "measured": runs,
                            "load": os.getloadavg()})
            log(f"  median reconcile {summary['reconcile_s']:.2f} s, floor {summary['floor_s']:.2f} s, "
                f"ratio {summary['ratio']:.2f}, correct={summary['correct']}")
            if not args.keep:
                drop_database(url)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not all(r["summary"]["correct"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
