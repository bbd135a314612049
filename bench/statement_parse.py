"""Parsing a large camt.053 statement: wall time and memory of parse_statement alone (no database).

    .venv/bin/python -m bench.statement_parse [--lines 100000] [--rounds 3] [--keep PATH]

Generates a camt.053.001.08 statement of --lines transactions into a temporary directory (or into
PATH with --keep, for an import benchmark to reuse): single entries with a structured reference,
batches of three with the notice number in free text (grouped by spaces), some batches whose
transactions have no reference of their own, bank charges (debits) and pending entries, which
are not lines. Then parses it fully --rounds times (wall clock, best and median), and once more
under tracemalloc beside a file a tenth the size: the two peaks should be about equal.
Goal (issue 5): 100,000 lines well under 10 s, the whole import included; memory flat.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from notices.numbers import compose_notice_number, group_digits
from reconciliation.statement_formats import parse_statement

TZ = ZoneInfo("Asia/Shanghai")
NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


def _single(ref: str, number: str, yuan: str, booked: date) -> str:
    return (f'<Ntry><Amt Ccy="CNY">{yuan}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>'
            f"<BookgDt><Dt>{booked}</Dt></BookgDt><ValDt><Dt>{booked}</Dt></ValDt>"
            f"<AcctSvcrRef>{ref}</AcctSvcrRef><BkTxCd><Prtry><Cd>TRF</Cd></Prtry></BkTxCd>"
            f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>{ref}</AcctSvcrRef><EndToEndId>NOTPROVIDED</EndToEndId></Refs>"
            f'<Amt Ccy="CNY">{yuan}</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
            f"<RltdPties><Dbtr><Pty><Nm>张三</Nm></Pty></Dbtr><DbtrAcct><Id><Othr><Id>6222020200001234567</Id>"
            f"</Othr></Id></DbtrAcct></RltdPties><RmtInf><Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry>"
            f"</Tp><Ref>{number}</Ref></CdtrRefInf></Strd></RmtInf></TxDtls></NtryDtls></Ntry>\n")


def _batch(entry_ref: str, refs: list[str | None], numbers: list[str], booked: date) -> str:
    parts = [f'<Ntry><Amt Ccy="CNY">{20 * len(refs)}.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>'
             f"<BookgDt><Dt>{booked}</Dt></BookgDt><ValDt><Dt>{booked}</Dt></ValDt>"
             f"<AcctSvcrRef>{entry_ref}</AcctSvcrRef><BkTxCd><Prtry><Cd>BATCH</Cd></Prtry></BkTxCd>"
             f'<NtryDtls><Btch><NbOfTxs>{len(refs)}</NbOfTxs><TtlAmt Ccy="CNY">{20 * len(refs)}.00</TtlAmt></Btch>']
    for ref, number in zip(refs, numbers, strict=True):
        own = "" if ref is None else f"<Refs><AcctSvcrRef>{ref}</AcctSvcrRef></Refs>"
        parts.append(f'<TxDtls>{own}<Amt Ccy="CNY">20</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
                     f"<RltdPties><Dbtr><Pty><Nm>李四</Nm></Pty></Dbtr></RltdPties>"
                     f"<RmtInf><Ustrd>缴款码 {group_digits(number)} 身份证工本费</Ustrd></RmtInf></TxDtls>")
    parts.append("</NtryDtls></Ntry>\n")
    return "".join(parts)


def _charge(ref: str, booked: date) -> str:
    return (f'<Ntry><Amt Ccy="CNY">15.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>'
            f"<BookgDt><Dt>{booked}</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>"
            f"<BkTxCd><Prtry><Cd>CHRG</Cd></Prtry></BkTxCd><AddtlNtryInf>账户管理费</AddtlNtryInf></Ntry>\n")


def _pending(ref: str, booked: date) -> str:
    return (f'<Ntry><Amt Ccy="CNY">50.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>PDNG</Cd></Sts>'
            f"<BookgDt><Dt>{booked}</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef></Ntry>\n")


def camt053_entries(lines: int, *, booked: date, prefix: str) -> Iterator[str]:
    """The entries of a statement with exactly `lines` transactions, one string per entry."""
    made = 0
    entry = 0
    while made < lines:
        entry += 1
        serial = made + 1
        if entry % 100 == 0:
            yield _charge(f"{prefix}F{entry:010d}", booked)
            made += 1
        elif entry % 50 == 7:
            yield _pending(f"{prefix}P{entry:010d}", booked)
        elif entry % 4 == 0 and lines - made >= 3:
            numbers = [compose_notice_number("990001", 2026, serial + k) for k in range(3)]
            refs: list[str | None] = [f"{prefix}{serial + k:012d}" for k in range(3)]
            if entry % 40 == 0:
                refs = [None, None, None]  # identified as f"{entry reference}/{n}"
            yield _batch(f"{prefix}B{entry:010d}", refs, numbers, booked)
            made += 3
        else:
            yuan = ("80.00", "80.5", "80")[entry % 3]
            yield _single(f"{prefix}{serial:012d}", compose_notice_number("990001", 2026, serial), yuan, booked)
            made += 1


def write_camt053(out: BinaryIO, lines: int, *, booked: date = date(2026, 11, 24), prefix: str = "BENCH") -> None:
    """A camt.053.001.08 statement of `lines` transactions, written a few entries at a time."""
    out.write((f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{NAMESPACE}"><BkToCstmrStmt>'
               f"<GrpHdr><MsgId>{prefix}-{booked}</MsgId><CreDtTm>{booked}T23:50:00+08:00</CreDtTm></GrpHdr>"
               f"<Stmt><Id>{prefix}-{booked}</Id><CreDtTm>{booked}T23:50:00+08:00</CreDtTm>"
               f"<FrToDt><FrDtTm>{booked}T00:00:00+08:00</FrDtTm><ToDtTm>{booked}T23:59:59+08:00</ToDtTm></FrToDt>"
               f"<Acct><Id><Othr><Id>1202021309900001234</Id></Othr></Id><Ccy>CNY</Ccy></Acct>\n").encode())
    buffer: list[str] = []
    for text in camt053_entries(lines, booked=booked, prefix=prefix):
        buffer.append(text)
        if len(buffer) >= 500:
            out.write("".join(buffer).encode())
            buffer.clear()
    buffer.append("</Stmt></BkToCstmrStmt></Document>\n")
    out.write("".join(buffer).encode())


def parse_all(path: Path) -> tuple[int, int]:
    """(lines, total fen) of the file, keeping no line."""
    count = total = 0
    with path.open("rb") as stream:
        _info, lines = parse_statement(stream, TZ)
        for line in lines:
            count += 1
            total += line.amount
    return count, total


def traced_peak(path: Path) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        parse_all(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs (nproc), {model}; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}; load average {load:.1f}")


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--lines", type=int, default=100_000)
    options.add_argument("--rounds", type=int, default=3)
    options.add_argument("--keep", type=Path, help="write the statement here and leave it")
    args = options.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-statement-") as workdir:
        path = args.keep or Path(workdir) / "statement.xml"
        small = Path(workdir) / "small.xml"
        started = time.perf_counter()
        with path.open("wb") as out:
            write_camt053(out, args.lines)
        generated = time.perf_counter() - started
        with small.open("wb") as out:
            write_camt053(out, max(args.lines // 10, 1))
        print(machine())
        print(f"file: {path} ({path.stat().st_size / 1e6:.1f} MB, {args.lines:,} transactions, "
              f"written in {generated:.1f} s)")

        # CPU time beside wall time: on a shared machine the wall clock also counts other work.
        walls: list[float] = []
        cpus: list[float] = []
        for round_ in range(1, args.rounds + 1):
            started, cpu_started = time.perf_counter(), time.process_time()
            count, total = parse_all(path)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_started)
            print(f"round {round_}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU, {count:,} lines, {total:,} fen, "
                  f"{count / walls[-1]:,.0f} lines/s")
        if count != args.lines:
            print(f"expected {args.lines} lines, parsed {count}", file=sys.stderr)
            return 1
        print(f"wall: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s "
              f"({min(walls) / count * 1e6:.1f} µs a line at best); CPU: best {min(cpus):.2f} s, "
              f"median {statistics.median(cpus):.2f} s")

        big_peak = traced_peak(path)
        small_peak = traced_peak(small)
        print(f"tracemalloc peak: {big_peak / 1024:,.0f} KiB for {args.lines:,} lines, "
              f"{small_peak / 1024:,.0f} KiB for {max(args.lines // 10, 1):,} lines")
        maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"ru_maxrss of this process (interpreter and imports included): {maxrss_kib / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
