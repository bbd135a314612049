"""What a bank statement file yields, whatever its format: statement lines (ParsedLine), the
statement's header (StatementInfo), format errors that name where they are, and the value rules
both readers share (amounts in yuan → fen, lengths, the notice number in free text).

Pure, no database; the readers are reconciliation.statement_camt and reconciliation.statement_csv,
the entry point reconciliation.statement_formats."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from flask_babel import lazy_gettext as _l

from core.money import MAX_AMOUNT
from notices.numbers import InvalidNoticeNumber, normalise_notice_number

MAX_REFERENCE = 64
MAX_PAYER_NAME = 100
MAX_ACCOUNT = 64
MAX_REMITTANCE = 500

_YUAN = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,15}", re.ASCII)  # ISO 20022 Max15NumericText
_DIGIT_RUN = re.compile(r"[0-9]+(?: [0-9]+)*", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# Payers type notice numbers on phones and in Chinese input methods: full-width digits and
# ideographic spaces are the same number. One character for one, so offsets stay valid.
_SEARCHABLE = str.maketrans({**{chr(0xFF10 + d): str(d) for d in range(10)}, "\u3000": " ", "\u00a0": " "})
_UNSEARCHABLE = re.compile("[\uff10-\uff19\u3000\u00a0]")  # translate() costs more than looking first


@dataclass(frozen=True)
class ParsedLine:
    position: int  # 1-based order of the transaction among the lines of the file
    bank_reference: str
    notice_number_given: str | None  # as the payer or bank wrote it
    notice_number: str | None  # the normalised 20 digits, only when they pass the check digits
    amount: int  # fen, > 0
    currency: str
    direction: str  # "credit" | "debit"
    reversal: bool
    booked_date: date
    payer_name: str | None
    payer_account: str | None
    remittance: str | None
    entry_reference: str | None


@dataclass(frozen=True)
class StatementInfo:
    format: str  # "camt.053" | "csv"
    version: str | None  # "001.08"
    statement_id: str | None
    from_date: date | None
    to_date: date | None


class StatementFormatError(Exception):
    """A file that cannot be read as a statement; `where` names the element path or the CSV line."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message, where)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}：{self.message}" if self.where else self.message


def format_error(message: Any, where: str | None = None) -> StatementFormatError:
    # Rendered now: the importer runs inside the request (or command) whose language it speaks,
    # and str() of a lazy string needs no app context.
    return StatementFormatError(str(message), where)


def shown(text: str) -> str:
    """The offending value in a message, cut short: it came from an untrusted file."""
    return text if len(text) <= 40 else text[:40] + "…"


def fen_from_yuan(text: str | None, where: str) -> int:
    if text is None:
        raise format_error(_l("缺少金额。"), where)
    match = _YUAN.fullmatch(text.strip())
    if not match:
        raise format_error(_l("金额“%(value)s”不是正数金额（应如 80、80.5 或 80.50）。", value=shown(text)), where)
    if match.group(2) is not None and len(match.group(2)) > 2:
        raise format_error(_l("金额“%(value)s”超过两位小数。", value=shown(text)), where)
    if len(match.group(1)) > 18:  # Decimal would overflow on a million digits; > 10^12 fen anyway
        raise format_error(_l("金额“%(value)s”过大。", value=shown(text)), where)
    return checked_fen(int(Decimal(match.group(0)) * 100), text, where)


def fen_of_total(text: str | None, where: str) -> int:
    """A total the statement states about itself (TxsSummry/…/Sum): yuan like an amount, but zero
    is a fair total (a day without debits)."""
    if text is not None and _YUAN.fullmatch(text.strip()) and Decimal(text.strip()) == 0:
        return 0
    return fen_from_yuan(text, where)


def count_of(text: str | None, where: str) -> int:
    """A number of entries or transactions the statement states (NbOfNtries, NbOfTxs)."""
    stripped = (text or "").strip()
    if not _COUNT.fullmatch(stripped):
        raise format_error(_l("笔数“%(value)s”不是非负整数。", value=shown(text or "")), where)
    return int(stripped)


def checked_fen(fen: int, text: str, where: str) -> int:
    if fen <= 0:
        raise format_error(_l("金额“%(value)s”应大于零。", value=shown(text)), where)
    if fen > MAX_AMOUNT:
        raise format_error(_l("金额“%(value)s”过大。", value=shown(text)), where)
    return fen


def local_date_of(moment: datetime, tz: tzinfo) -> date:
    # A time without an offset is the bank's local clock, which is the service's time zone.
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).astimezone(tz).date()


def limited_text(text: str | None, limit: int, where: str) -> str | None:
    if text is not None and len(text) > limit:
        raise format_error(_l("内容超过 %(limit)s 个字符：“%(value)s”。", limit=limit, value=shown(text)), where)
    return text


def cut_text(text: str | None, limit: int) -> str | None:
    """Free text only informs finance: a long one is shortened, not a reason to refuse the file."""
    return text[:limit] if text is not None else None


def _searchable(text: str) -> str:
    return text.translate(_SEARCHABLE) if _UNSEARCHABLE.search(text) else text


def recognised_notice(given: str) -> str | None:
    try:
        return normalise_notice_number(_searchable(given))
    except InvalidNoticeNumber:
        return None


def find_notice_number(text: str) -> tuple[str | None, str | None]:
    """(as written, normalised) of the first valid 20-digit notice number in free text.

    Digits may be grouped by single spaces ("缴款码 9900 0126 0000 0000 0216 身份证工本费").
    A candidate starts and ends at a group boundary, so digits glued to a longer number (an ID
    card, a phone) never make one. Without a valid one, the first 20-digit candidate is returned
    as written with None, so that finance sees what the payer typed.
    """
    searchable = _searchable(text)
    first: str | None = None
    for run in _DIGIT_RUN.finditer(searchable):
        for start, end in _candidates(run):
            try:
                return text[start:end], normalise_notice_number(searchable[start:end])
            except InvalidNoticeNumber:
                first = first or text[start:end]
    return first, None


def _candidates(run: re.Match[str]) -> Iterator[tuple[int, int]]:
    """Spans of 20 digits in a run of space-separated digit groups, whole groups only."""
    digits = len(run.group(0)) - run.group(0).count(" ")
    if digits == 20:  # the usual case: the number alone, grouped or not
        yield run.span()
        return
    if digits < 20:
        return
    groups = [(run.start() + g.start(), run.start() + g.end()) for g in _DIGITS.finditer(run.group(0))]
    for i, (start, _end) in enumerate(groups):
        count = 0
        for g_start, g_end in groups[i:]:
            count += g_end - g_start
            if count >= 20:
                break
        if count == 20:
            yield start, g_end
