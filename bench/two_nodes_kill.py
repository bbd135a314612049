"""Two gunicorn nodes and two schedulers on one PostgreSQL; one node and one scheduler killed with
SIGKILL half way through their work. Issue 10, section 2. One command:

    .venv/bin/python -m bench.two_nodes_kill [--database URL] [--notices 240] [--clients 4]

On a fresh database (dropped and re-created; default ``feeservice_two_nodes``):

1. seed the demo fee schedule, a window clerk, one cashier per cashier client, a bank client;
   start two gunicorn nodes (2 sync workers each) and issue the notices;
2. hold the reconciliation tables locked, start two schedulers (``flask --app wsgi scheduler``,
   the foreground one): their start-up catch-up reconciles the last 7 nights, and each blocks
   inside the first reconciliation it claims;
3. load both nodes: cashier clients pay half the notices (``Idempotency-Key`` on every request,
   as the cashier page sends), bank clients post signed callbacks for the other half
   (webhooks.simulator's signing; the same webhook-id and body on every retry). A client that
   meets a refused connection, a dropped one or a 5xx retries on the other node, as behind a load
   balancer;
4. once a third of the payments are answered, SIGKILL node A (master and workers, requests in
   flight); meanwhile SIGKILL the scheduler whose reconciliation is blocked (its run recorded as
   running, its job claim held), then release the lock so that the other one carries on;
5. when the load is done and the surviving scheduler has caught up, stop it and run
   ``scheduler --once``, as the killed node would on restart (or cron): the killed run is to be
   taken over;
6. check: every payment request answered 201 / 200 in the end, each notice has exactly one
   confirmed payment and one valid receipt (the number the client was given), nothing else was
   recorded (no second payment, no flagged one, one bank event per webhook-id, one idempotency key
   per cashier request, an outbox event per payment), receipt numbers gap-free, ``audit verify``
   passes; each nightly job (expiry, audit anchor, reconciliation) of the catch-up window ran
   exactly once and succeeded, one completed reconciliation run per night, none left running,
   and the killed night reconciled again after the killed run.

It prints every check and exits 1 if any failed. tests/postgres/test_two_nodes.py runs it in CI.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from bench.confirmations import AUDIT_KEY, SECRET, Gunicorn, fresh_database, seed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "postgresql+psycopg://root@127.0.0.1:5432/feeservice_two_nodes"
TIMEZONE = "Asia/Shanghai"
TOTAL = 8000  # the demo schedule's BDC-ZZ, one line per notice
NIGHTLY = ("expire-notices", "anchor-audit", "reconcile")
# What a reconciliation run writes first; locking them stops a run after it recorded itself.
RECONCILIATION_TABLES = ("reconciliation_findings", "reconciliation_exceptions")
ATTEMPTS = 30


def environment(url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "FEESVC_AUDIT_KEY": AUDIT_KEY,
            "FEESVC_TIMEZONE": TIMEZONE}


def flask(*args: str) -> list[str]:
    return [str(PROJECT_ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi", *args]


# --- the checks ---------------------------------------------------------------------------------


@dataclass
class Report:
    failures: int = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f" — {detail}" if detail else ""), flush=True)
        self.failures += not ok
        return ok


# --- HTTP, with fail-over between the nodes ----------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw[:200].decode(errors="replace")}
        return Answer(response.status, parsed if isinstance(parsed, dict) else {"value": parsed},
                      {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


@dataclass
class Outcome:
    """How one payment request ended, after every retry it needed."""

    notice: str
    channel: str  # "cashier" | "bank"
    answer: Answer | None = None
    errors: list[str] = field(default_factory=list)  # what the attempts before the last one met


class Nodes:
    def __init__(self, nodes: list[Gunicorn]) -> None:
        self.nodes = nodes
        self.answered = 0
        self._lock = threading.Lock()

    def send(self, outcome: Outcome, path: str, make: Callable[[], tuple[bytes, dict[str, str]]], first: int) -> None:
        """POST until a node answers below 500, starting at node `first`, alternating; `make` gives
        the body and headers of each attempt (the bank signs every attempt anew)."""
        for attempt in range(ATTEMPTS):
            node = self.nodes[(first + attempt) % len(self.nodes)]
            body, headers = make()
            try:
                answer = post(node.port, path, body, headers)
            except (OSError, http.client.HTTPException) as error:
                outcome.errors.append(f"node :{node.port}: {type(error).__name__}")
                time.sleep(0.05)
                continue
            if answer.status >= 500:
                outcome.errors.append(f"node :{node.port}: {answer.status} {answer.body.get('code')}")
                time.sleep(0.2)
                continue
            outcome.answer = answer
            break
        with self._lock:
            self.answered += 1


def issue_notices(port: int, token: str, count: int, clients: int) -> list[str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"department": "BDC", "payer": {"name": "张三"},
                       "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]}).encode()
    numbers: list[str] = []
    lock = threading.Lock()

    def issue(share: int) -> None:
        for _ in range(share):
            answer = post(port, "/api/v1/notices", body, headers)
            if answer.status != 201:
                raise RuntimeError(f"issuing a notice: {answer.status} {answer.body}")
            with lock:
                numbers.append(str(answer.body["number"]))

    threads = [threading.Thread(target=issue, args=(count // clients + (i < count % clients),)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(numbers) != count:
        raise RuntimeError(f"issued {len(numbers)} notices of {count}")
    return numbers


def keyed_attempts(token: str, number: str) -> Callable[[], tuple[bytes, dict[str, str]]]:
    """One cashier payment: the same Idempotency-Key and body on every attempt."""
    body = json.dumps({"amount": TOTAL, "method": "cash"}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Idempotency-Key": f"pay-{number}"}
    return lambda: (body, headers)


def cashier_client(nodes: Nodes, token: str, numbers: list[str], outcomes: list[Outcome]) -> None:
    for k, number in enumerate(numbers):
        outcome = Outcome(number, "cashier")
        outcomes.append(outcome)
        nodes.send(outcome, f"/api/v1/notices/{number}/payments", keyed_attempts(token, number), k % 2)


def signed_attempts(secret: str, number: str) -> Callable[[], tuple[bytes, dict[str, str]]]:
    """One bank event: the same webhook-id and body on every attempt, signed anew each time."""
    from webhooks.simulator import callback_body, signed_headers

    body = callback_body(number, TOTAL, bank_reference=f"TN{number}", payer_name="张三")
    return lambda: (body.encode(), signed_headers(secret, f"msg_{number}", body))


def bank_client(nodes: Nodes, bank_code: str, secret: str, numbers: list[str], outcomes: list[Outcome]) -> None:
    for k, number in enumerate(numbers):
        outcome = Outcome(number, "bank")
        outcomes.append(outcome)
        nodes.send(outcome, f"/webhooks/bank/{bank_code}", signed_attempts(secret, number), k % 2)


def kill_node(node: Gunicorn) -> int:
    """SIGKILL the master and every worker at once: the machine is gone, requests in flight too."""
    workers = node.worker_pids()
    os.kill(node.process.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.process.wait(timeout=10)
    return len(workers)


# --- the schedulers --------------------------------------------------------------------------------


class ReconciliationHold:
    """Holds the reconciliation tables locked in an open transaction: a run records itself as
    running, then waits here, so that the scheduler doing it can be killed mid-reconciliation."""

    def __init__(self, engine: Engine) -> None:
        self.connection: Connection | None = engine.connect()
        self.connection.begin()
        self.connection.execute(text(f"LOCK TABLE {', '.join(RECONCILIATION_TABLES)} IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None


@dataclass
class KilledRun:
    pid: int
    scheduled_for: datetime
    run_id: int
    business_date: str


def blocked_reconciliation(engine: Engine) -> tuple[int, datetime, int, str] | None:
    """The oldest reconciliation claimed and recorded as running whose process waits on the held
    lock: (claiming pid, scheduled_for, reconciliation run id, business date)."""
    with engine.connect() as conn:
        waiting = conn.scalar(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE NOT l.granted AND c.relname = ANY(:tables)"), {"tables": list(RECONCILIATION_TABLES)})
        if not waiting:
            return None
        claim = conn.execute(text(
            "SELECT claimed_by, scheduled_for FROM job_runs WHERE job = 'reconcile' AND status = 'running' "
            "ORDER BY scheduled_for LIMIT 1")).first()
        if claim is None:
            return None
        scheduled_for = claim.scheduled_for if claim.scheduled_for.tzinfo else claim.scheduled_for.replace(tzinfo=UTC)
        from core.clock import local

        day = (local(scheduled_for, TIMEZONE).date() - timedelta(days=1)).isoformat()
        run = conn.execute(text("SELECT id FROM reconciliation_runs WHERE status = 'running' AND business_date = :d"),
                           {"d": day}).first()
        if run is None:
            return None
        return int(str(claim.claimed_by).rsplit(":", 1)[1]), scheduled_for, int(run.id), day


def kill_scheduler_mid_reconciliation(engine: Engine, schedulers: list[subprocess.Popen[bytes]],
                                      hold: ReconciliationHold, result: list[KilledRun], seconds: float) -> None:
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = blocked_reconciliation(engine)
            if found is not None:
                pid, scheduled_for, run_id, day = found
                victim = next((p for p in schedulers if p.pid == pid), None)
                if victim is None:
                    raise RuntimeError(f"the reconciliation is claimed by pid {pid}, not by a scheduler started here")
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                result.append(KilledRun(pid, scheduled_for, run_id, day))
                return
            time.sleep(0.05)
    finally:
        hold.release()


def expected_runs(now: datetime) -> dict[str, set[datetime]]:
    """The nightly runs the start-up catch-up at `now` should do: every night of the window for
    the jobs that catch up each one, the latest for the others."""
    from reconciliation.scheduler import DEFAULT_JOBS, fire_times

    expected: dict[str, set[datetime]] = {}
    for job in DEFAULT_JOBS:
        if job.name in NIGHTLY and job.catch_up is not None:
            times = fire_times(job.trigger(TIMEZONE), now - job.catch_up, now)
            expected[job.name] = set(times if job.catch_up_each else times[-1:])
    return expected


def job_runs(engine: Engine, until: datetime) -> dict[str, dict[datetime, list[str]]]:
    runs: dict[str, dict[datetime, list[str]]] = {name: {} for name in NIGHTLY}
    with engine.connect() as conn:
        for row in conn.execute(text("SELECT job, scheduled_for, status FROM job_runs WHERE job = ANY(:jobs)"),
                                {"jobs": list(NIGHTLY)}):
            moment = row.scheduled_for if row.scheduled_for.tzinfo else row.scheduled_for.replace(tzinfo=UTC)
            if moment <= until:
                runs[row.job].setdefault(moment, []).append(str(row.status))
    return runs


def wait_for_catch_up(engine: Engine, expected: dict[str, set[datetime]], except_for: datetime | None,
                      until: datetime, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = job_runs(engine, until)
        if all(moment in runs[job] and "running" not in runs[job][moment]
               for job, moments in expected.items() for moment in moments
               if not (job == "reconcile" and moment == except_for)):
            return True
        time.sleep(0.25)
    return False


# --- the run -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="PostgreSQL URL; dropped and re-created")
    parser.add_argument("--notices", type=int, default=240, help="notices paid under load (half each channel)")
    parser.add_argument("--clients", type=int, default=4, help="cashier clients, and as many bank clients")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report()
    url: str = args.database
    print(f"# two nodes, two schedulers, one PostgreSQL: {url.rsplit('@', 1)[-1]}", flush=True)
    fresh_database(url)
    seeded = seed(url, args.clients)
    engine = create_engine(url, poolclass=NullPool)
    logs = Path(tempfile.mkdtemp(prefix="two-nodes-"))
    nodes: list[Gunicorn] = []
    schedulers: list[subprocess.Popen[bytes]] = []
    hold: ReconciliationHold | None = None
    try:
        os.environ["FEESVC_TIMEZONE"] = TIMEZONE  # Gunicorn passes os.environ on
        nodes = [Gunicorn(url, 2, 1, logs / f"node-{name}.log") for name in "AB"]
        for node in nodes:
            node.wait_ready()
        numbers = issue_notices(nodes[1].port, seeded.window_token, args.notices, args.clients)
        print(f"# nodes A :{nodes[0].port} and B :{nodes[1].port} up; {len(numbers)} notices issued", flush=True)

        hold = ReconciliationHold(engine)
        catch_up_from = datetime.now(UTC).replace(microsecond=0)
        for name in "XY":
            with (logs / f"scheduler-{name}.log").open("wb") as log:
                schedulers.append(subprocess.Popen(flask("scheduler"), cwd=PROJECT_ROOT, env=environment(url),
                                                   stdout=log, stderr=subprocess.STDOUT))
        killed_runs: list[KilledRun] = []
        scheduler_killer = threading.Thread(target=kill_scheduler_mid_reconciliation,
                                            args=(engine, schedulers, hold, killed_runs, 60.0))
        scheduler_killer.start()

        cashier_numbers, bank_numbers = numbers[: len(numbers) // 2], numbers[len(numbers) // 2:]
        balancer = Nodes(nodes)
        outcomes: list[list[Outcome]] = [[] for _ in range(2 * args.clients)]
        threads = [threading.Thread(target=cashier_client,
                                    args=(balancer, seeded.cashier_tokens[i], cashier_numbers[i::args.clients],
                                          outcomes[i])) for i in range(args.clients)]
        threads += [threading.Thread(target=bank_client,
                                     args=(balancer, seeded.bank_code, seeded.bank_secret,
                                           bank_numbers[i::args.clients], outcomes[args.clients + i]))
                    for i in range(args.clients)]
        for thread in threads:
            thread.start()
        while balancer.answered < len(numbers) // 3 and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        answered_at_kill = balancer.answered
        workers = kill_node(nodes[0])
        print(f"# node A killed (SIGKILL, master and {workers} workers) after {answered_at_kill} of "
              f"{len(numbers)} payments were answered", flush=True)
        for thread in threads:
            thread.join()
        scheduler_killer.join()
        every = [o for group in outcomes for o in group]

        # -- the load --
        report.check(0 < answered_at_kill < len(numbers), "node A was killed mid-load",
                     f"{answered_at_kill} of {len(numbers)} answered before")
        met_errors = [o for o in every if o.errors]
        report.check(bool(met_errors), "requests met the killed node and were retried on the other",
                     f"{len(met_errors)} requests, {sum(len(o.errors) for o in every)} failed attempts: "
                     + ", ".join(sorted({e.split(': ', 1)[1] for o in every for e in o.errors})))
        unanswered = [o for o in every if o.answer is None]
        cashier_bad = [o for o in every if o.channel == "cashier" and o.answer is not None and o.answer.status != 201]
        bank_bad = [o for o in every if o.channel == "bank" and o.answer is not None
                    and (o.answer.status != 200 or o.answer.body.get("result") not in ("confirmed", "duplicate"))]
        report.check(not unanswered and not cashier_bad and not bank_bad,
                     f"every request ended paid: {len(cashier_numbers)} cashier 201s, "
                     f"{len(bank_numbers)} bank 200s (confirmed or duplicate)",
                     "; ".join(f"{o.channel} {o.notice}: {o.answer.status if o.answer else 'no answer'} "
                               f"{o.answer.body if o.answer else o.errors[-3:]}"
                               for o in (unanswered + cashier_bad + bank_bad)[:5]))
        replays = sum(1 for o in every if o.answer is not None and o.answer.headers.get("idempotent-replayed"))
        duplicates = sum(1 for o in every if o.answer is not None and o.answer.body.get("result") == "duplicate")
        print(f"# retries answered by a replay of the first 201: {replays}; bank retries answered "
              f"'duplicate': {duplicates}", flush=True)
        check_payments(engine, report, every, numbers)
        verify = subprocess.run(flask("audit", "verify"), cwd=PROJECT_ROOT, env=environment(url),
                                capture_output=True, text=True, timeout=120, check=False)
        report.check(verify.returncode == 0, "audit verify passes",
                     (verify.stdout.strip().splitlines() or ["(no output)"])[-1] + verify.stderr.strip()[-300:])

        # -- the schedulers --
        killed = killed_runs[0] if killed_runs else None
        report.check(killed is not None, "a scheduler was killed mid-reconciliation",
                     f"pid {killed.pid}, run {killed.run_id} of {killed.business_date} left running"
                     if killed else "no reconciliation was caught running within 60 s")
        expected = expected_runs(catch_up_from)
        caught_up = wait_for_catch_up(engine, expected, killed.scheduled_for if killed else None,
                                      catch_up_from, 90.0)
        report.check(caught_up, "the surviving scheduler caught up every other night")
        for process in schedulers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        once = subprocess.run(flask("scheduler", "--once"), cwd=PROJECT_ROOT, env=environment(url),
                              capture_output=True, text=True, timeout=120, check=False)
        report.check(once.returncode == 0, "`scheduler --once` (the killed node restarted) exits 0",
                     "" if once.returncode == 0 else once.stdout.strip()[-500:])
        check_nightly(engine, report, expected, catch_up_from, killed)
    finally:
        if hold is not None:
            hold.release()
        for process in schedulers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for node in nodes:
            node.stop()
        engine.dispose()
    print(f"# logs in {logs}; {time.monotonic() - started:.0f} s", flush=True)
    if report.failures:
        print(f"FAILED: {report.failures} checks", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


def check_payments(engine: Engine, report: Report, every: list[Outcome], numbers: list[str]) -> None:
    with engine.connect() as conn:
        per_notice = {row.number: row for row in conn.execute(text("""
            SELECT n.number, n.status,
                   (SELECT count(*) FROM payments p WHERE p.notice_id = n.id) AS payments,
                   (SELECT count(*) FROM payments p WHERE p.notice_id = n.id AND p.status = 'confirmed') AS confirmed,
                   (SELECT count(*) FROM receipts r WHERE r.notice_id = n.id AND r.status = 'valid') AS receipts,
                   (SELECT max(r.number) FROM receipts r WHERE r.notice_id = n.id) AS receipt
            FROM notices n"""))}
        totals = conn.execute(text("""
            SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM receipts),
                   (SELECT count(*) FROM outbox_events WHERE event_type = 'notice.paid'),
                   (SELECT count(*) FROM bank_events), (SELECT count(DISTINCT webhook_id) FROM bank_events),
                   (SELECT count(*) FROM idempotency_keys),
                   (SELECT count(*) FROM idempotency_keys WHERE completed_at IS NULL)""")).one()
        receipt_numbers = [str(n) for n in conn.scalars(text("SELECT number FROM receipts"))]
    wrong = [n for n in numbers if n not in per_notice or per_notice[n].status != "paid"
             or (per_notice[n].payments, per_notice[n].confirmed, per_notice[n].receipts) != (1, 1, 1)]
    report.check(not wrong, f"each of the {len(numbers)} notices is paid with exactly one payment, "
                            "confirmed, and one valid receipt",
                 "; ".join(f"{n}: {dict(per_notice[n]._mapping) if n in per_notice else 'missing'}" for n in wrong[:5]))
    given = {o.notice: str(o.answer.body.get("receipt", {}).get("number") if o.channel == "cashier"
                           else o.answer.body.get("receipt_number"))
             for o in every if o.answer is not None and o.answer.body.get("result") != "duplicate"}
    mismatched = [n for n, receipt in given.items() if n in per_notice and per_notice[n].receipt != receipt]
    report.check(not mismatched, f"the receipt number each client was given is its notice's receipt "
                                 f"({len(given)} answers carried one)",
                 "; ".join(f"{n}: told {given[n]}, has {per_notice[n].receipt}" for n in mismatched[:5]))
    payments, receipts, outbox, bank_events, webhook_ids, keys, open_keys = (int(v) for v in totals)
    bank_count = sum(o.channel == "bank" for o in every)
    report.check((payments, receipts, outbox) == (len(numbers),) * 3,
                 "nothing else was recorded: as many payments, receipts and notice.paid events as notices",
                 f"{payments} payments, {receipts} receipts, {outbox} events")
    report.check(bank_events == webhook_ids == bank_count, "one bank event per webhook-id",
                 f"{bank_events} events, {webhook_ids} webhook-ids, {bank_count} callbacks")
    report.check(keys == len(numbers) - bank_count and open_keys == 0,
                 "one idempotency key per cashier request, each with its stored answer",
                 f"{keys} keys, {open_keys} without an answer")
    series: dict[str, list[int]] = {}
    for number in receipt_numbers:
        prefix, _dash, sequence = number.rpartition("-")
        series.setdefault(prefix, []).append(int(sequence))
    gaps = {prefix: s for prefix, s in series.items() if sorted(s) != list(range(1, len(s) + 1))}
    report.check(not gaps, "receipt numbers gap-free and unique in each series",
                 ", ".join(f"{p}: {len(s)} receipts up to {max(s)}" for p, s in gaps.items()))


def check_nightly(engine: Engine, report: Report, expected: dict[str, set[datetime]], until: datetime,
                  killed: KilledRun | None) -> None:
    runs = job_runs(engine, until)
    for job in NIGHTLY:
        moments = expected.get(job, set())
        statuses = runs[job]
        report.check(set(statuses) == moments and all(s == ["succeeded"] for s in statuses.values()),
                     f"{job}: each of its {len(moments)} runs of the catch-up window done once, succeeded",
                     ", ".join(f"{m:%m-%d %H:%M}Z {s}" for m, s in sorted(statuses.items())
                               if s != ["succeeded"]) + (f"; expected {len(moments)}, found {len(statuses)}"
                                                         if set(statuses) != moments else ""))
    from core.clock import local

    days = sorted((local(m, TIMEZONE).date() - timedelta(days=1)).isoformat() for m in expected.get("reconcile", ()))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(
            "SELECT id, business_date, status FROM reconciliation_runs ORDER BY id"))]
    by_day: dict[str, list[tuple[int, str]]] = {}
    for run_id, day, status in rows:
        by_day.setdefault(str(day), []).append((int(run_id), str(status)))
    completed = {day: [r for r, s in by_day.get(day, []) if s == "completed"] for day in days}
    report.check(all(len(c) == 1 for c in completed.values()),
                 f"one completed reconciliation run for each of the {len(days)} nights",
                 ", ".join(f"{d}: {by_day.get(d, [])}" for d, c in completed.items() if len(c) != 1))
    running = [r for r in rows if r[2] == "running"]
    report.check(not running, "no reconciliation run left running", f"{running}")
    if killed is not None:
        left = dict((r, s) for r, s in by_day.get(killed.business_date, []))
        redone = [r for r in completed.get(killed.business_date, []) if r > killed.run_id]
        report.check(left.get(killed.run_id) == "failed" and bool(redone),
                     f"the killed run {killed.run_id} of {killed.business_date} was marked failed and redone",
                     f"runs of that night: {by_day.get(killed.business_date, [])}")


if __name__ == "__main__":
    sys.exit(main())
