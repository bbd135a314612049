"""The CSV statement of API.md → statement lines, streamed line by line; errors name the line."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import BinaryIO

from flask_babel import lazy_gettext as _l

from reconciliation.statement_lines import (
    MAX_ACCOUNT,
    MAX_PAYER_NAME,
    MAX_REFERENCE,
    ParsedLine,
    checked_fen,
    cut_text,
    format_error,
    limited_text,
    local_date_of,
    recognised_notice,
    shown,
)

MAX_CSV_LINE = 16 * 1024  # a row is < 1 KiB; a longer "line" is not this CSV (and must not fill memory)
CSV_COLUMNS = ("bank_reference", "notice_number", "amount", "currency", "booked_at", "payer_name", "payer_account")
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)

def _csv_text_lines(source: BinaryIO, counter: list[int]) -> Iterator[str]:
    """Physical lines decoded one by one, so that a non-UTF-8 byte is reported on its own line."""
    while raw := source.readline(MAX_CSV_LINE + 1):
        counter[0] += 1
        where = str(_l("第 %(line)s 行", line=counter[0]))
        if len(raw) > MAX_CSV_LINE:
            raise format_error(_l("行过长（超过 %(limit)s 字节）。", limit=MAX_CSV_LINE), where)
        if counter[0] == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise format_error(_l("不是 UTF-8 编码（可能是 GBK）；请将文件另存为 UTF-8 后重新导入。"), where) from None


def csv_lines(source: BinaryIO, tz: tzinfo) -> Iterator[ParsedLine]:
    counter = [0]
    reader = csv.reader(_csv_text_lines(source, counter), strict=True)
    position = 0
    try:
        header = [c.strip() for c in next(reader)]
        column = {name: header.index(name) for name in CSV_COLUMNS}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line, e.g. at the end
            line = reader.line_num
            if len(row) != len(CSV_COLUMNS):
                raise format_error(_l("应有 %(expected)s 列，实有 %(actual)s 列。",
                                expected=len(CSV_COLUMNS), actual=len(row)), str(_l("第 %(line)s 行", line=line)))
            cells = {name: row[i].strip() or None for name, i in column.items()}
            position += 1
            yield _csv_line(position, cells, line, tz)
    except csv.Error as exc:
        raise format_error(_l("CSV 格式错误（%(reason)s）。", reason=exc),
                     str(_l("第 %(line)s 行", line=counter[0]))) from None


def _csv_line(position: int, cells: dict[str, str | None], line: int, tz: tzinfo) -> ParsedLine:
    def where(name: str) -> str:
        return str(_l("第 %(line)s 行 %(column)s 列", line=line, column=name))

    def required(name: str) -> str:
        value = cells[name]
        if value is None:
            raise format_error(_l("不能为空。"), where(name))
        return value

    reference = limited_text(required("bank_reference"), MAX_REFERENCE, where("bank_reference"))
    assert reference is not None
    amount_text = required("amount")
    if not _ASCII_DIGITS.fullmatch(amount_text):
        raise format_error(_l("金额“%(value)s”应为以分为单位的正整数。", value=shown(amount_text)), where("amount"))
    # Long digit strings are too large anyway; int() of thousands of digits is refused or slow.
    amount = checked_fen(int(amount_text[:19]), amount_text, where("amount"))
    currency = required("currency")
    if currency != "CNY":
        raise format_error(_l("币种应为 CNY，而不是“%(value)s”。", value=shown(currency)), where("currency"))
    booked_text = required("booked_at")
    try:
        booked_at = datetime.fromisoformat(booked_text)
    except ValueError:
        booked_at = None
    if booked_at is None or booked_at.tzinfo is None:
        raise format_error(_l("入账时间“%(value)s”应为带时区的 RFC 3339 时间，如 2026-11-24T10:15:02+08:00。",
                        value=shown(booked_text)), where("booked_at"))
    given = limited_text(cells["notice_number"], MAX_REFERENCE, where("notice_number"))
    return ParsedLine(
        position, reference, given, None if given is None else recognised_notice(given), amount, "CNY", "credit", False,
        local_date_of(booked_at, tz), cut_text(cells["payer_name"], MAX_PAYER_NAME),
        limited_text(cells["payer_account"], MAX_ACCOUNT, where("payer_account")), None, None)
