"""Bank statement files → statement lines: ISO 20022 camt.053 (.001.02–.001.08) and the CSV of API.md.

Pure parsing, no database. The format is told from the file's first bytes (its name proves
nothing); the readers (reconciliation.statement_camt, reconciliation.statement_csv) stream, so
a 100,000-transaction file takes flat memory. Errors name the element path or the CSV line, so
that finance can tell the bank what is wrong with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from datetime import tzinfo
from typing import Any, BinaryIO

from flask_babel import lazy_gettext as _l

from reconciliation.statement_camt import CHUNK, CamtReader
from reconciliation.statement_csv import CSV_COLUMNS, csv_lines
from reconciliation.statement_lines import (
    ParsedLine,
    StatementFormatError,
    StatementInfo,
    find_notice_number,
    format_error,
)

__all__ = ["ParsedLine", "StatementFormatError", "StatementInfo", "detect_format", "find_notice_number",
           "parse_statement"]

HEAD = 4096


def detect_format(head: bytes) -> str:
    """"camt.053" or "csv" from the first bytes of a file (its name proves nothing)."""
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):  # XML may be UTF-16 (expat reads it); the CSV is UTF-8 only
            head = head[len(bom): len(bom) + 64].decode(encoding, "ignore").encode()
            if not head.lstrip().startswith(b"<"):
                raise format_error(_l("CSV 对账单应为 UTF-8 编码。"))
    head = head.removeprefix(codecs.BOM_UTF8)
    if not head.strip():
        raise format_error(_l("文件是空的。"))
    if head.lstrip().startswith(b"<"):
        return "camt.053"  # which XML it is, is checked against its namespace while parsing
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        columns = next(csv.reader([first_line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        columns = []
    if sorted(c.strip() for c in columns) == sorted(CSV_COLUMNS):
        return "csv"
    raise format_error(_l("无法识别的文件：既不是 camt.053 XML 对账单，也不是首行为 %(header)s 的 CSV 对账单。",
                    header=",".join(CSV_COLUMNS)))


def parse_statement(stream: BinaryIO, tz: tzinfo) -> tuple[StatementInfo, Iterator[ParsedLine]]:
    """Read the statement's header now; its lines as the iterator is consumed.

    Errors in a line surface while iterating: consume the lines inside one transaction and roll
    back on StatementFormatError. The stream must stay open until the iterator is exhausted.
    """
    head = b""
    while len(head) < HEAD and (more := stream.read(HEAD - len(head))):
        head += more
    kind = detect_format(head)
    source = io.BufferedReader(_Replay(head, stream), buffer_size=CHUNK)
    if kind == "csv":
        return StatementInfo("csv", None, None, None, None), csv_lines(source, tz)
    items = CamtReader(source, tz).items()
    info = next(items)
    assert isinstance(info, StatementInfo)
    return info, _only_lines(items)


def _only_lines(items: Iterator[StatementInfo | ParsedLine]) -> Iterator[ParsedLine]:
    for item in items:
        assert isinstance(item, ParsedLine)
        yield item


class _Replay(io.RawIOBase):
    """The head already read for detection, then the rest of the stream (which may not seek)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._head[: len(view)] if self._head else self._rest.read(len(view))
        self._head = self._head[len(data):]
        view[: len(data)] = data
        return len(data)
