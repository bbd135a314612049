"""In-process CPU per request of the confirm paths, with statement counts and lock windows.

    .venv/bin/python -m bench.confirm_cpu [--rounds 7] [--per-round 120] [--pyinstrument]

One thread, the Flask test client, a fresh PostgreSQL database (``feeservice_bench_cpu``, dropped
and re-created): no queueing and no other worker competing, so the figures are the CPU that one
request costs this process (the test client's own share, ~0.2 ms, included) and the wall time from
taking a serialisation row to the end of the commit. Used to weigh each change to the confirm path
before the HTTP benchmark (`bench.confirmations`) measures it under load.

Phases (each `--rounds` × `--per-round` requests, alternating, median reported):

- ``cashier``: ``POST /api/v1/notices/{n}/payments`` (bearer token of a cashier);
- ``cashier + Idempotency-Key``: the same with a fresh key per request (as the cashier page);
- ``bank callback``: ``POST /webhooks/bank/{code}`` signed with the bank's secret;
- ``issue notice``: ``POST /api/v1/notices``.

Statements are counted with an engine event (BEGIN/COMMIT/SAVEPOINT not included; psycopg sends
those outside the cursor), and the lock windows are measured from the ``UPDATE receipt_counters``
and ``UPDATE audit_chain_head … RETURNING`` statements to the end of the commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from bench.confirmations import AUDIT_KEY, SECRET, TOTAL, fresh_database, seed
from webhooks.simulator import callback_body, signed_headers

DEFAULT_DATABASE = "postgresql+psycopg://root@127.0.0.1:5432/feeservice_bench_cpu"


class Probe:
    """Counts statements and measures the serialisation windows of the current request."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.counter_at: float | None = None
        self.head_at: float | None = None
        self.counter_windows: list[float] = []
        self.head_windows: list[float] = []
        self.per_request: list[int] = []
        self._count = 0

    def install(self, engine: Any) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            words = statement.split()
            key = " ".join(words[:3]) if words else "?"
            self.statements[key] += 1
            self._count += 1
            if "receipt_counters" in statement and words[0].upper() in ("UPDATE", "WITH"):
                self.counter_at = time.perf_counter()
            if "audit_chain_head" in statement and "RETURNING" in statement.upper():
                self.head_at = time.perf_counter()

        @event.listens_for(Session, "after_commit")
        def _committed(_session: Session) -> None:
            now = time.perf_counter()
            if self.counter_at is not None:
                self.counter_windows.append(1000 * (now - self.counter_at))
            if self.head_at is not None:
                self.head_windows.append(1000 * (now - self.head_at))
            self.counter_at = self.head_at = None

    def end_request(self) -> None:
        self.per_request.append(self._count)
        self._count = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="dropped and re-created")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=120)
    parser.add_argument("--only", default="", help="comma-separated phase names to run (default: all)")
    parser.add_argument("--pyinstrument", type=Path, default=None,
                        help="write a pyinstrument text profile of the cashier phase here (pip install pyinstrument)")
    args = parser.parse_args(argv)

    from core.app import create_app

    fresh_database(args.database)
    seeded = seed(args.database, 1)
    app = create_app({"DATABASE_URL": args.database, "SECRET_KEY": SECRET, "FEESVC_AUDIT_KEY": AUDIT_KEY})
    database = app.extensions["db"]
    bank_secret, bank_code = seeded.bank_secret, seeded.bank_code
    probe = Probe()
    probe.install(database.engine)
    client = app.test_client()
    window = {"Authorization": f"Bearer {seeded.window_token}"}
    cashier = {"Authorization": f"Bearer {seeded.cashier_tokens[0]}"}

    def issue() -> str:
        response = client.post("/api/v1/notices", headers=window, json={
            "department": "BDC", "payer": {"name": "压测缴款人"}, "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]})
        assert response.status_code == 201, response.get_data(as_text=True)
        return str(response.get_json()["number"])

    def pay(number: str, *, key: bool = False) -> None:
        headers = {**cashier, "Idempotency-Key": uuid.uuid4().hex} if key else cashier
        response = client.post(f"/api/v1/notices/{number}/payments", headers=headers,
                               json={"amount": TOTAL, "method": "cash"})
        assert response.status_code == 201, response.get_data(as_text=True)

    def callback(number: str) -> None:
        body = callback_body(number, TOTAL)
        response = client.post(f"/webhooks/bank/{bank_code}", data=body.encode(),
                               headers=signed_headers(bank_secret, "msg_" + uuid.uuid4().hex, body))
        assert response.status_code == 200 and response.get_json()["result"] == "confirmed", response.get_data()

    phases: dict[str, Callable[[str], None]] = {
        "cashier": pay,
        "cashier + Idempotency-Key": lambda n: pay(n, key=True),
        "bank callback": callback,
        "issue notice": lambda _n: None,  # measured by issuing itself, below
    }
    wanted = [p for p in phases if not args.only or p in args.only.split(",")]
    cpu: dict[str, list[float]] = {p: [] for p in wanted}
    wall: dict[str, list[float]] = {p: [] for p in wanted}
    statements: dict[str, list[int]] = {p: [] for p in wanted}
    windows: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in wanted}
    shapes: dict[str, Counter[str]] = {}

    with app.app_context():
        # warm-up: code paths, the connection pool, the cashier's shift
        for _ in range(20):
            for name in wanted:
                (issue() if name == "issue notice" else phases[name](issue()))
        for _round in range(args.rounds):
            for name in wanted:
                numbers = [] if name == "issue notice" else [issue() for _ in range(args.per_round)]
                probe.reset()
                started_cpu, started = time.process_time(), time.perf_counter()
                for k in range(args.per_round):
                    if name == "issue notice":
                        issue()
                    else:
                        phases[name](numbers[k])
                    probe.end_request()
                cpu[name].append(1000 * (time.process_time() - started_cpu) / args.per_round)
                wall[name].append(1000 * (time.perf_counter() - started) / args.per_round)
                statements[name].append(int(statistics.median(probe.per_request)))
                windows[name][0].extend(probe.counter_windows)
                windows[name][1].extend(probe.head_windows)
                shapes[name] = Counter({k: -(-v // args.per_round) for k, v in probe.statements.items()})

        if args.pyinstrument is not None:
            from pyinstrument import Profiler

            numbers = [issue() for _ in range(args.per_round * 3)]
            profiler = Profiler(interval=0.0005)
            profiler.start()
            for number in numbers:
                pay(number)
            profiler.stop()
            args.pyinstrument.write_text(profiler.output_text(unicode=True, color=False, show_all=False))

    print(f"# {datetime.now(UTC).isoformat(timespec='seconds')}; {args.rounds} rounds × {args.per_round}; "
          f"database {args.database}")
    print("| phase | CPU ms (median) | min | wall ms | statements | counter → commit ms | head → commit ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def median_or_dash(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "–"

    for name in wanted:
        counter_w, head_w = windows[name]
        print(f"| {name} | {statistics.median(cpu[name]):.2f} | {min(cpu[name]):.2f} | "
              f"{statistics.median(wall[name]):.2f} | {statistics.median(statements[name]):.0f} | "
              f"{median_or_dash(counter_w)} | {median_or_dash(head_w)} |")
    for name in wanted:
        print(f"\nstatements of one '{name}' request: " + json.dumps(dict(shapes[name]), ensure_ascii=False))
    database.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
