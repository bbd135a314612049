"""Statement import with the database: a generated camt.053 of N transactions imported through
`reconciliation.statements.import_statement` (parse, batch INSERT … ON CONFLICT, conflict check,
audit) into a fresh SQLite file and a fresh PostgreSQL database; wall time and peak memory.

    .venv/bin/python -m bench.statement_import [--lines 100000] [--engine sqlite|postgresql|both]

Peak memory is the Python heap's peak while importing (tracemalloc, which slows the run, so it is
measured in a second import of a fresh copy) and the process's max RSS growth; run at two sizes
to see it flat in the file's size. The goal (issue 5): 100,000 lines in ≤ 10 s, flat memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.statement_parse import machine, write_camt053

PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/postgres"


def fresh_url(engine: str, workdir: Path, name: str) -> str:
    if engine == "sqlite":
        return f"sqlite:///{workdir / (name + '.sqlite3')}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "root", "-d", "postgres", "-q", "-c",
                    f"DROP DATABASE IF EXISTS {name}", "-c", f"CREATE DATABASE {name}"], check=True)
    return f"postgresql+psycopg://root@127.0.0.1:5432/{name}"


def import_once(url: str, path: Path, *, traced: bool) -> tuple[float, int, int]:
    """(seconds, lines, python heap peak bytes) of one import into a freshly migrated database."""
    from core.app import create_app
    from core.audit import Actor
    from core.db import Database
    from reconciliation.statements import import_statement
    from webhooks.service import create_bank

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench"})
    db: Database = app.extensions["db"]
    with app.app_context():
        from core.cli import upgrade_database

        upgrade_database(url)
        key = app.config["FEESVC_AUDIT_KEY"]
        with db.unit_of_work() as session:
            create_bank(session, key, Actor.system("bench"), "BENCH-BANK", "基准银行")
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        with path.open("rb") as stream, db.unit_of_work() as session:
            result = import_statement(session, key, Actor.system("bench"), bank_code="BENCH-BANK", stream=stream,
                                      filename=path.name, timezone=app.config["FEESVC_TIMEZONE"])
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        if traced:
            tracemalloc.stop()
    db.engine.dispose()
    return elapsed, result.new_lines, peak


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--lines", type=int, default=100_000)
    options.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    args = options.parse_args(argv)
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "statement.xml"
        with path.open("wb") as out:
            write_camt053(out, args.lines)
        size_mb = path.stat().st_size / 1e6
        print(f"camt.053.001.08 with {args.lines:,} transactions, {size_mb:.1f} MB")
        print(f"{'engine':<11} {'lines':>9} {'seconds':>8} {'lines/s':>9} {'heap peak MB':>13} {'RSS growth MB':>14}")
        for engine in engines:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            seconds, lines, _ = import_once(fresh_url(engine, workdir, "feeservice_bench_import"), path, traced=False)
            rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
            _, _, peak = import_once(fresh_url(engine, workdir, "feeservice_bench_import_traced"), path, traced=True)
            print(f"{engine:<11} {lines:>9,} {seconds:>8.2f} {lines / seconds:>9,.0f} {peak / 1e6:>13.1f} "
                  f"{rss_growth:>14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
