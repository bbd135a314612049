"""Cashier confirmations and signed bank callbacks per second over HTTP, beside raw pgbench of the
same transaction, and notice issuing — one command, one run:

    .venv/bin/python -m bench.confirmations [--workers 3] [--clients 16,32] [--confirmations 2000]
        [--rounds 3] [--paced 0.5] [--goal-share 0.25] [--no-idempotency] [--profile]
        [--client raw|http.client|requests]

On a fresh PostgreSQL database (dropped and re-created: ``feeservice_bench_payments``):

1. seed the demo fee schedule, one window clerk, one cashier per client (each client is a cashier
   window with its own token and shift, as at a service centre) and one bank client (``BENCHBANK``);
2. start gunicorn (``wsgi:app``): sync workers, cores + 1 of them by default (see RESULTS-payments.md
   for the sweep: on two cores shared with PostgreSQL and the load generator, more workers only
   queue more transactions on the serialisation rows and preempt the one holding them);
3. issue every notice the run needs over HTTP (``POST /api/v1/notices``) with 16 clients: that is
   the issuing benchmark (d);
4. per round: cashier confirmations (``POST /api/v1/notices/{n}/payments``) at 16 and 32 clients (b),
   signed bank callbacks (``POST /webhooks/bank/BENCHBANK``, Standard Webhooks, each confirming a
   distinct notice with its own webhook-id and bank reference) at 16 and 32 clients (c), and
   16-client confirmations with an ``Idempotency-Key`` on every request as the cashier page sends
   (unless ``--no-idempotency``); each client pays notices of its own, no think time (closed loop);
5. confirmations at 16 clients in an open loop paced at half the best closed-loop rate (``--paced``):
   the latency of a server that is not saturated, counted from each request's scheduled time;
6. optionally (``--profile``) 16-client runs of confirmations and of callbacks under py-spy attached
   to every gunicorn worker, one sampling wall time and one ``--gil`` (Python CPU), the latter also
   given in ms per request; py-spy is not a requirement: ``.venv/bin/pip install py-spy``;
7. checks what the HTTP phases left: receipt numbers gap-free, one confirmed payment per notice,
   as many receipts, paid notices and ``notice.paid`` outbox events as payments, the audit chain
   verified (exit status 1 if not);
8. pgbench ``bench/pgbench_confirm.sql`` (a): the same transaction in raw SQL, including the
   serialisation points (notice row lock, receipt counter, audit chain head) at 16 and 32 clients
   on the same database;
9. with gunicorn started again, cashier confirmations and bank callbacks at 16 and 32 clients in an
   open loop paced at ``--goal-share`` (25 %) of pgbench's best rate at that client count: the
   issue's goal (≥ 25 % of pgbench, p99 < 50 ms) as a service level. After pgbench, whose audit
   rows carry no MAC, so the integrity check of step 7 does not cover them.

Every measured phase runs ``--rounds`` times and the best round is reported (other processes on a
shared machine only ever slow a round down); every round is listed too. Throughput is counted while
every client is still busy (from the start to the moment the first client finishes its share).
Latency is per request at the client. The client is a minimal HTTP/1.1 client on plain sockets, one
thread per client (``--client raw``; ~0.25 ms of CPU per request, a quarter of http.client's): the
load generator shares the two cores with the server. CPU time of the gunicorn workers, of this
database's PostgreSQL backends and of the client is read from /proc.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql+psycopg://root@127.0.0.1:5432/feeservice_bench_payments"
SCRIPT = PROJECT_ROOT / "bench" / "pgbench_confirm.sql"
AUDIT_KEY = "bench-audit-key"
SECRET = "bench-secret"
BANK_CODE = "BENCHBANK"
TOTAL = 8000  # BDC-ZZ × 1 in demo/fee-schedule.csv
GOAL_SHARE = 0.25
GOAL_P99_MS = 50.0
PROFILE_CONFIRMATIONS = 1500
PACED_CONFIRMATIONS = 1200
GOAL_CONFIRMATIONS = 2000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- measurements -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(round(share * len(sorted_values) + 0.5)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class CpuSnapshot:
    at: float
    processes: dict[int, float]  # pid → CPU seconds
    system_busy: float
    system_total: float


def _process_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _system_cpu() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def cpu_snapshot(pids: list[int]) -> CpuSnapshot:
    processes = {pid: cpu for pid in pids if (cpu := _process_cpu(pid)) is not None}
    busy, total = _system_cpu()
    return CpuSnapshot(at=time.monotonic(), processes=processes, system_busy=busy, system_total=total)


def busy_share(before: CpuSnapshot, after: CpuSnapshot) -> float:
    return (after.system_busy - before.system_busy) / max(1e-9, after.system_total - before.system_total)


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as fh:
                    if fh.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class PostgresCpuPoller:
    """Reads the CPU time of every postgres process every 0.1 s; keeps the last figure of each."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-cpu-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pid in postgres_pids():
                cpu = _process_cpu(pid)
                if cpu is not None:
                    self.last[pid] = cpu

    def __enter__(self) -> PostgresCpuPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class LockSampler:
    """Samples pg_stat_activity of the bench database every 20 ms: how many backends are running a
    statement, and how many of them wait for a lock (the notice row, the receipt counter row, the
    audit chain head): whether the serialisation points or the CPU are the limit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self.active = 0
        self.waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-sampler", daemon=True)

    def _run(self) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                query = text("SELECT count(*) FILTER (WHERE state = 'active'), "
                             "count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                while not self._stop.wait(0.02):
                    active, waiting = conn.execute(query).one()
                    self.samples += 1
                    self.active += int(active)
                    self.waiting += int(waiting)
        finally:
            engine.dispose()

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean_active(self) -> float:
        return self.active / self.samples if self.samples else 0.0

    @property
    def mean_waiting(self) -> float:
        return self.waiting / self.samples if self.samples else 0.0


@dataclass
class CpuUse:
    """CPU seconds spent during a phase, by whom."""

    workers: float = 0.0
    postgres_backends: float = 0.0  # backends connected to the bench database
    postgres_other: float = 0.0  # other postgres processes (WAL writer, checkpointer, other databases)
    client: float = 0.0
    system_busy_share: float = 0.0  # of all cores, whole machine
    system_busy_seconds: float = 0.0

    @property
    def not_ours(self) -> float:
        """Busy CPU seconds of the machine not accounted for above: other people's processes, kernel."""
        return max(0.0, self.system_busy_seconds - self.workers - self.postgres_backends - self.postgres_other
                   - self.client)


@dataclass
class PhaseResult:
    name: str
    clients: int
    requests: int
    statuses: Counter[int]
    steady_requests: int
    steady_seconds: float
    latencies_ms: list[float]
    wall_seconds: float
    cpu: CpuUse = field(default_factory=CpuUse)
    backends_active: float = 0.0  # mean number of backends running a statement
    backends_waiting: float = 0.0  # mean number of them waiting for a lock

    @property
    def rate(self) -> float:
        return self.steady_requests / self.steady_seconds if self.steady_seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    def per_request_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.requests if self.requests else 0.0


# --- HTTP client ----------------------------------------------------------------------------------


class KeepAliveClient:
    """http.client on one persistent connection: about a third of the client CPU per request of requests."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=120)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.connection.request("POST", path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.connection.close()  # reconnects on the next request
            raise
        return response.status, data

    def close(self) -> None:
        self.connection.close()


class RequestsClient:
    """requests.Session (keep-alive), for comparison with KeepAliveClient."""

    def __init__(self, host: str, port: int) -> None:
        import requests

        self.base = f"http://{host}:{port}"
        self.session = requests.Session()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        with self.session.post(self.base + path, data=body, headers=headers, timeout=120) as response:
            return response.status_code, response.content

    def close(self) -> None:
        self.session.close()


class RawClient:
    """HTTP/1.1 over a plain socket: the request bytes are built once per call, the answer is read up to its
    Content-Length. Keeps the connection while the server does (gthread), reconnects after
    `Connection: close` (gunicorn's sync workers close every connection). About a quarter of http.client's
    CPU per request, which matters when the load generator shares two cores with the server."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.host_header = f"{host}:{port}".encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        return sock

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = [f"POST {path} HTTP/1.1".encode(), b"Host: " + self.host_header,
                b"Content-Length: " + str(len(body)).encode()]
        head += [f"{k}: {v}".encode() for k, v in headers.items()]
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
        reused = self.sock is not None
        try:
            if self.sock is None:
                self.sock = self._connect()
            self.sock.sendall(request)
            return self._read()
        except (ConnectionError, EOFError):
            self.close()
            if not reused:
                raise
            self.sock = self._connect()  # the server closed a kept connection: once more on a new one
            self.sock.sendall(request)
            return self._read()

    def _read(self) -> tuple[int, bytes]:
        assert self.sock is not None
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed before the response")
            self.buffer += chunk
        head, _sep, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _colon, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by RawClient")
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside the body")
            rest += chunk
        data, self.buffer = rest[:length], rest[length:]
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""


Client = KeepAliveClient | RequestsClient | RawClient
CLIENTS: dict[str, type[KeepAliveClient] | type[RequestsClient] | type[RawClient]] = {
    "raw": RawClient, "http.client": KeepAliveClient, "requests": RequestsClient}


@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    headers: dict[str, str]


def run_phase(name: str, server: Gunicorn, database_url: str, jobs: list[list[Call]], *,
              client_kind: str = "raw",
              on_response: Callable[[int, int, bytes], None] | None = None,
              rate: float | None = None) -> PhaseResult:
    """Each list of calls is one client, in its own thread, on its own keep-alive connection.

    Closed loop by default (each client sends its next request as soon as it has the answer). With
    `rate` (requests per second, all clients together) every request has a scheduled time and its
    latency counts from then, so that a server falling behind cannot hide it (open loop)."""
    clients = len(jobs)
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    finished: list[float] = [0.0] * clients
    completions: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[Counter[int]] = [Counter() for _ in range(clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        connection: Client = CLIENTS[client_kind]("127.0.0.1", server.port)
        try:
            barrier.wait(timeout=60)
            origin = time.perf_counter()
            interval = clients / rate if rate else 0.0
            for k, call in enumerate(jobs[i]):
                if rate:
                    scheduled = origin + (k + i / clients) * interval
                    time.sleep(max(0.0, scheduled - time.perf_counter()))
                    started = scheduled
                else:
                    started = time.perf_counter()
                status, data = connection.post(call.path, call.body, call.headers)
                done = time.perf_counter()
                latencies[i].append(1000 * (done - started))
                completions[i].append(done)
                statuses[i][status] += 1
                if on_response is not None:
                    on_response(i, status, data)
            finished[i] = time.perf_counter()
        except BaseException as error:  # reported below
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), name=f"{name}-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    pids = server.worker_pids() + postgres_pids()
    before = cpu_snapshot(pids)
    client_before = time.process_time()
    with LockSampler(database_url) as sampler:
        barrier.wait(timeout=60)
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    client_cpu = time.process_time() - client_before
    after = cpu_snapshot(pids)
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} client errors, first: {errors[0]!r}") from errors[0]

    first_done = min(finished)
    steady = sum(1 for per_client in completions for t in per_client if t <= first_done)
    merged: Counter[int] = Counter()
    for counter in statuses:
        merged.update(counter)
    result = PhaseResult(name=name, clients=clients, requests=sum(len(j) for j in jobs), statuses=merged,
                         steady_requests=steady, steady_seconds=first_done - start,
                         latencies_ms=sorted(x for per_client in latencies for x in per_client), wall_seconds=wall)
    result.backends_active, result.backends_waiting = sampler.mean_active, sampler.mean_waiting
    backends = set(backend_pids(database_url))
    delta = {pid: after.processes[pid] - before.processes.get(pid, 0.0) for pid in after.processes}
    workers = set(server.worker_pids())
    result.cpu = CpuUse(
        workers=sum(v for pid, v in delta.items() if pid in workers),
        postgres_backends=sum(v for pid, v in delta.items() if pid in backends),
        postgres_other=sum(v for pid, v in delta.items() if pid not in backends and pid not in workers),
        client=client_cpu,
        system_busy_share=busy_share(before, after),
        system_busy_seconds=after.system_busy - before.system_busy,
    )
    return result


def backend_pids(database_url: str) -> list[int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [int(pid) for pid in conn.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))]
    finally:
        engine.dispose()


# --- database and server --------------------------------------------------------------------------


def fresh_database(url: str) -> None:
    """Drop and re-create the bench database, then migrate it to the newest schema."""
    from core.cli import upgrade_database

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()
    upgrade_database(url)


@dataclass
class Seeded:
    window_token: str
    cashier_tokens: list[str]
    cashier_ids: list[int]
    bank_code: str = BANK_CODE
    bank_secret: str = ""


def seed(url: str, cashiers: int) -> Seeded:
    """Demo schedule, one window clerk and `cashiers` cashiers, each with a token; one bank client."""
    import core.users
    from core.app import create_app
    from core.audit import Actor
    from core.models import User
    from fees.service import import_fee_schedule
    from webhooks.service import create_bank

    core.users.PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"  # nobody signs in with these passwords
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": SECRET, "FEESVC_AUDIT_KEY": AUDIT_KEY})
    database = app.extensions["db"]
    actor = Actor.system("bench")
    try:
        with app.app_context(), database.unit_of_work() as session:
            import_fee_schedule(session, AUDIT_KEY, actor, (PROJECT_ROOT / "demo" / "fee-schedule.csv").read_bytes())
            core.users.create_user(session, AUDIT_KEY, actor, username="bench-window", role="window",
                                   department_code="BDC")
            window = core.users.create_token(session, AUDIT_KEY, actor, username="bench-window")
            tokens, ids = [], []
            for i in range(cashiers):
                username = f"bench-cashier-{i + 1:02d}"
                user, _password = core.users.create_user(session, AUDIT_KEY, actor, username=username, role="cashier")
                tokens.append(core.users.create_token(session, AUDIT_KEY, actor, username=username))
                ids.append(user.id)
            assert session.scalar(select(User.id).where(User.username == "bench-window")) is not None
            bank_secret = create_bank(session, AUDIT_KEY, actor, BANK_CODE, "压测银行")
    finally:
        database.engine.dispose()
    return Seeded(window_token=window, cashier_tokens=tokens, cashier_ids=ids, bank_secret=bank_secret)


def prepare_pgbench_notices(url: str, count: int, window_username: str = "bench-window") -> None:
    """`count` notices for pgbench (one line each, like the app's), and the sequence that hands them out."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("""
                INSERT INTO notices (number, region_code, year, serial, department_id, payer_name, total, currency,
                                     status, issued_at, issued_by_id, due_date)
                SELECT '99000126' || lpad((1000000000 + g)::text, 10, '0') || '00', '990001', 26, 1000000000 + g,
                       u.department_id, 'pgbench', 8000, 'CNY', 'issued', now(), u.id, current_date + 15
                FROM generate_series(1, :count) AS g, users u WHERE u.username = :window
            """), {"count": count, "window": window_username})
            conn.execute(text("""
                INSERT INTO notice_lines (notice_id, position, fee_item_id, fee_code, name, unit, quantity,
                                          unit_amount, amount)
                SELECT n.id, 0, f.id, f.code, f.name, f.unit, 1, f.amount, f.amount
                FROM notices n, fee_items f WHERE n.payer_name = 'pgbench' AND f.code = 'BDC-ZZ'
            """))
            low, high = conn.execute(text("SELECT min(id), max(id) FROM notices WHERE payer_name = 'pgbench'")).one()
            conn.execute(text(f"CREATE SEQUENCE bench_notice_seq MINVALUE {low} START {low} MAXVALUE {high}"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def has_outbox(url: str) -> bool:
    """Whether confirm_payment writes an outbox event in this schema (migration 0003 on)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT to_regclass('outbox_events')")) is not None
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    def __init__(self, url: str, workers: int, threads: int, log_path: Path, worker_class: str = "sync") -> None:
        self.port = _free_port()
        self.log_path = log_path
        env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "FEESVC_AUDIT_KEY": AUDIT_KEY}
        command = [str(PROJECT_ROOT / ".venv" / "bin" / "gunicorn"), "--workers", str(workers),
                   "--bind", f"127.0.0.1:{self.port}", "--timeout", "120", "--backlog", "2048",
                   "--no-control-socket"]  # gunicorn 27's default one in ~/.gunicorn is shared by every gunicorn
        if threads > 1 or worker_class == "gthread":
            command += ["--worker-class", "gthread", "--threads", str(threads)]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([*command, "wsgi:app"], cwd=PROJECT_ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.workers = workers

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log_path.read_text(errors='replace')}")
            if len(self.worker_pids()) == self.workers:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    try:
                        connection.request("GET", "/api/v1/fee-schedule")
                        if connection.getresponse().status == 200:
                            return
                    finally:
                        connection.close()
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready in {seconds} s:\n{self.log_path.read_text(errors='replace')}")

    def worker_pids(self) -> list[int]:
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children", encoding="ascii") as fh:
                return [int(p) for p in fh.read().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def gunicorn(url: str, workers: int, threads: int, log_path: Path, worker_class: str = "sync") -> Iterator[Gunicorn]:
    server = Gunicorn(url, workers, threads, log_path, worker_class)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- phases -----------------------------------------------------------------------------------------


def issue_calls(token: str, count: int, tag: str) -> list[Call]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return [Call("/api/v1/notices", json.dumps({
        "department": "BDC", "payer": {"name": f"压测缴款人{tag}-{i}"},
        "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]}).encode(), headers) for i in range(count)]


def pay_calls(token: str, numbers: list[str], *, idempotent: bool = False) -> list[Call]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"amount": TOTAL, "method": "cash"}).encode()
    return [Call(f"/api/v1/notices/{number}/payments", body,
                 {**headers, "Idempotency-Key": f"pay-{number}"} if idempotent else headers) for number in numbers]


def callback_calls(bank_code: str, secret: str, numbers: list[str], tag: str) -> list[Call]:
    """Signed `payment.succeeded` callbacks (Standard Webhooks v1, as webhooks.simulator signs them), one per
    notice, each with its own webhook-id and bank reference. Signed when the phase is built (the server
    accepts ±300 s; a phase takes well under a minute)."""
    from webhooks.simulator import callback_body, signed_headers

    calls = []
    for k, number in enumerate(numbers):
        body = callback_body(number, TOTAL, bank_reference=f"B{tag}-{k:06d}-{number[-8:]}", payer_name="压测缴款人")
        headers = signed_headers(secret, f"msg_{tag}_{k}_{number}", body)
        calls.append(Call(f"/webhooks/bank/{bank_code}", body.encode(), headers))
    return calls


@dataclass
class Integrity:
    """What the database holds after the HTTP phases: the guarantees, checked once at the end."""

    confirmed_payments: int
    notices_paid: int
    receipts: int
    receipt_sequence_max: int
    receipts_gap_free: bool
    notices_with_two_payments: int
    outbox_events: int
    audit_entries: int
    audit_ok: bool
    bank_events_confirmed: int

    def ok(self) -> bool:
        return (self.receipts_gap_free and self.notices_with_two_payments == 0
                and self.confirmed_payments == self.receipts == self.notices_paid == self.outbox_events
                and self.audit_ok)


def check_integrity(url: str, year: int) -> Integrity:
    from core.audit import verify_audit_chain
    from core.db import Database

    database = Database(url)
    try:
        with database.reading() as session:
            one = session.execute(text("""
                SELECT (SELECT count(*) FROM payments WHERE status = 'confirmed'),
                       (SELECT count(*) FROM notices WHERE status = 'paid'),
                       (SELECT count(*) FROM receipts WHERE year = :y),
                       (SELECT coalesce(max(sequence), 0) FROM receipts WHERE year = :y),
                       (SELECT count(DISTINCT sequence) FROM receipts WHERE year = :y),
                       (SELECT count(*) FROM (SELECT notice_id FROM payments WHERE status = 'confirmed'
                                              GROUP BY notice_id HAVING count(*) > 1) AS twice),
                       (SELECT count(*) FROM outbox_events WHERE event_type = 'notice.paid'),
                       (SELECT count(*) FROM bank_events WHERE result = 'confirmed')
            """), {"y": year}).one()
            report = verify_audit_chain(session, AUDIT_KEY)
    finally:
        database.engine.dispose()
    confirmed, paid, receipts, seq_max, distinct, twice, outbox, bank = (int(v) for v in one)
    return Integrity(confirmed_payments=confirmed, notices_paid=paid, receipts=receipts, receipt_sequence_max=seq_max,
                     receipts_gap_free=receipts == seq_max == distinct, notices_with_two_payments=twice,
                     outbox_events=outbox, audit_entries=report.entries, audit_ok=report.ok,
                     bank_events_confirmed=bank)


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def run_pgbench(url: str, clients: int, seconds: int, seeded: Seeded, year: int, log_dir: Path) -> PhaseResult:
    executable = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    parsed = make_url(url)
    prefix = log_dir / f"pgbench-{clients}-{time.monotonic_ns()}"
    command = [executable, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 1)),
               "-T", str(seconds), "-f", str(SCRIPT), "-l", "--log-prefix", str(prefix),
               "-D", f"year={year}", "-D", f"first_cashier={min(seeded.cashier_ids)}",
               "-D", f"cashiers={len(seeded.cashier_ids)}", "-D", f"outbox={int(has_outbox(url))}",
               "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username or "root",
               parsed.database or ""]
    before = cpu_snapshot(postgres_pids())
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with PostgresCpuPoller() as poller, LockSampler(url) as sampler:  # pgbench's backends exit with it
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = cpu_snapshot(postgres_pids())
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pgbench_cpu = (children_after.ru_utime + children_after.ru_stime
                   - children_before.ru_utime - children_before.ru_stime)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{completed.stdout}\n{completed.stderr}")
    tps_match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", completed.stdout)
    done_match = re.search(r"number of transactions actually processed: (\d+)", completed.stdout)
    failed_match = re.search(r"number of failed transactions: (\d+)", completed.stdout)
    assert tps_match and done_match, completed.stdout
    latencies: list[float] = []
    for log in log_dir.glob(f"{prefix.name}.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2].isdigit():  # "failed"/"skipped" carry no latency
                latencies.append(int(parts[2]) / 1000)  # µs → ms
    latencies.sort()
    done = int(done_match.group(1))
    statuses: Counter[int] = Counter({200: done})
    if failed_match and int(failed_match.group(1)):
        statuses[500] = int(failed_match.group(1))  # failed transactions (pgbench 15 counts them)
    tps = float(tps_match.group(1))
    result = PhaseResult(name=f"pgbench {clients}", clients=clients, requests=done, statuses=statuses,
                         steady_requests=round(tps * seconds), steady_seconds=seconds, latencies_ms=latencies,
                         wall_seconds=wall)
    result.backends_active, result.backends_waiting = sampler.mean_active, sampler.mean_waiting
    seen = {**poller.last, **after.processes}
    delta = sum(cpu - before.processes.get(pid, 0.0) for pid, cpu in seen.items())
    result.cpu = CpuUse(postgres_backends=delta, client=pgbench_cpu, system_busy_share=busy_share(before, after),
                        system_busy_seconds=after.system_busy - before.system_busy)
    return result


# --- profile ---------------------------------------------------------------------------------------


PROFILE_BUCKETS: list[tuple[str, str]] = [
    # (label, regular expression on a py-spy frame "Class.function (package/file.py:line)");
    # a sample counts for the first bucket found from the leaf up
    ("psycopg (driver, wire protocol, waiting on the server)", r"\(psycopg/"),
    ("SQLAlchemy ORM (unit of work, loading)", r"\(sqlalchemy/orm/"),
    ("SQLAlchemy Core (compile, execute, pool)", r"\(sqlalchemy/"),
    ("marshmallow / webargs / flask-smorest (schemas)", r"\((marshmallow|flask_smorest|webargs|apispec)/"),
    ("flask-babel / babel (translations)", r"\((flask_babel|babel)/"),
    ("Flask / Werkzeug / Jinja (request, routing)", r"\((werkzeug|flask|jinja2)/"),
    ("gunicorn (HTTP parsing, socket I/O)", r"\(gunicorn/"),
    ("feeservice code", r"\((core|payments|receipts|notices|fees)/"),
]
PROFILE_STAGES: list[tuple[str, str]] = [
    # (label, regular expression on any frame of an in-request stack); inclusive, so they overlap
    ("bearer token lookup (core.auth.bearer_user)", r"^bearer_user "),
    ("idempotency claim + store (core.api_idempotency)", r"^(claim|complete|release) \(core/idempotency"),
    ("JSON body guard (core.api_guard)", r"^_require_json_body "),
    ("body parsing and validation (webargs, PaymentIn)", r"^Parser\.parse \(webargs/"),
    ("confirm_cashier_payment (the service, to its last statement)", r"^confirm_cashier_payment "),
    ("handle_callback (the whole callback service)", r"^handle_callback "),
    ("  bank secrets + signature (live_secrets, verify_signature)", r"^(live_secrets|verify_signature) "),
    ("  callback body validation (CallbackIn)", r"^Schema\.load .*|^_parse_json "),
    ("  confirm_payment (inside either)", r"^confirm_payment "),
    ("payment_view + receipt_view (incl. lazy loads)", r"^(payment_view|receipt_view) "),
    ("commit (Database.unit_of_work exit)", r"^Session\.commit "),
    ("response schema dump + JSON", r"^Schema\.dump |^ResponseMixin\._prepare_response_content|json/"),
]


def _function(frame: str) -> str:
    name, _sep, location = frame.partition(" (")
    return f"{name} ({location.split(':', 1)[0]})" if location else name


def callees(functions: tuple[str, ...], stacks: list[tuple[list[str], int]]) -> Counter[str]:
    """Samples below one of `functions`, grouped by the function it called directly ('(self)' for its own lines)."""
    shares: Counter[str] = Counter()
    prefixes = tuple(f + " " for f in functions)
    for frames, count in stacks:
        index = next((i for i, f in enumerate(frames) if f.startswith(prefixes)), None)
        if index is not None:
            shares[_function(frames[index + 1]) if index + 1 < len(frames) else "(self)"] += count
    return shares


def profile_workers(server: Gunicorn, output: Path, *, gil: bool) -> subprocess.Popen[bytes] | None:
    """py-spy on every worker until SIGINT. Without --gil a sample is taken whatever the thread does
    (psycopg waiting for the server counts): wall time. With --gil only the thread holding the GIL is
    sampled: Python CPU time."""
    spy = shutil.which("py-spy") or str(PROJECT_ROOT / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed (`.venv/bin/pip install py-spy`): no profile", file=sys.stderr)
        return None
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--rate", "200",
               "--duration", "600", "--format", "raw", "--output", str(output), "--nonblocking"]
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def analyse_profile(path: Path) -> dict[str, Any]:
    """Shares of the samples taken inside a request: by library (leaf up), by stage, and below the view
    and the service function."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _space, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks.append((stack.split(";"), int(count_text)))
    in_request = [(frames, count) for frames, count in stacks if any(f.startswith("Flask.wsgi_app ") for f in frames)]
    in_handler = [(frames, count) for frames, count in stacks
                  if any(f.startswith("SyncWorker.handle ") or f.startswith("ThreadWorker.handle ") for f in frames)]
    total = sum(count for _frames, count in in_handler) or 1

    by_library: Counter[str] = Counter()
    for frames, count in in_handler:
        for frame in reversed(frames):
            label = next((label for label, pattern in PROFILE_BUCKETS if re.search(pattern, frame)), None)
            if label is not None:
                by_library[label] += count
                break
        else:
            by_library["other (standard library, C)"] += count
    by_stage: Counter[str] = Counter()
    for frames, count in in_request:
        for label, pattern in PROFILE_STAGES:
            if any(re.search(pattern, frame) for frame in frames):
                by_stage[label] += count
    return {
        "samples": total,
        "in_flask_share": sum(c for _f, c in in_request) / total,
        "by_library": {k: v / total for k, v in by_library.most_common()},
        "by_stage": {k: v / total for k, v in by_stage.most_common()},
        "view": {k: v / total for k, v in callees(("record_payment", "bank_callback"), in_request).most_common(10)},
        "handle_callback": {k: v / total for k, v in callees(("handle_callback",), in_request).most_common(10)},
        "confirm_payment": {k: v / total for k, v in callees(("confirm_payment",), in_request).most_common(12)},
    }


def print_profile(title: str, profile: dict[str, Any], cpu_ms: float | None) -> None:
    """Shares of the samples; with the worker CPU per request of the unprofiled best round (`cpu_ms`), the
    CPU profile's shares are also given as milliseconds of worker CPU per request."""
    scale = cpu_ms if profile.get("gil") and cpu_ms else None
    print(f"\n### py-spy, {title}: {profile['samples']} samples in request handling "
          f"({100 * profile['in_flask_share']:.0f} % inside Flask), throughput meanwhile {profile['rate']:.0f}/s"
          + (f"; ms = share × {scale:.2f} ms worker CPU per request (best unprofiled 16-client round)"
             if scale else ""))
    for key, heading in (("by_library", "by library (innermost known frame)"),
                         ("by_stage", "by stage of the request (inclusive)"),
                         ("view", "below the view (inclusive, by direct callee)"),
                         ("handle_callback", "below handle_callback (inclusive, by direct callee)"),
                         ("confirm_payment", "below confirm_payment (inclusive, by direct callee)")):
        if not profile[key]:
            continue
        print(f"{heading}:")
        for label, share in profile[key].items():
            ms = f"  {share * scale:5.2f} ms" if scale else ""
            print(f"  {100 * share:5.1f} %{ms}  {label}")


# --- report --------------------------------------------------------------------------------------


def machine(url: str) -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    with open("/proc/meminfo", encoding="ascii") as fh:
        mem_kb = int(fh.readline().split()[1])
    engine = create_engine(make_url(url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            pg_version = str(conn.scalar(text("SHOW server_version")))
            settings = {name: str(conn.scalar(text(f"SHOW {name}"))) for name in
                        ("max_connections", "shared_buffers", "synchronous_commit", "fsync")}
    finally:
        engine.dispose()
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "python": platform.python_version(), "postgresql": pg_version,
            "postgresql settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
            "loadavg at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def closed_loop(result: PhaseResult) -> bool:
    return result.name.startswith(("confirm", "bank callbacks")) and "paced" not in result.name


def phase_row(result: PhaseResult, baseline: float | None = None) -> str:
    share = f"{100 * result.rate / baseline:.0f} %" if baseline else ""
    non_ok = {k: v for k, v in result.statuses.items() if k not in (200, 201)}
    return (f"| {result.name} | {result.clients} | {result.rate:,.0f} | {result.p50:.1f} | {result.p99:.1f} | "
            f"{share} | {result.requests} | {non_ok or '–'} |")


def cpu_row(result: PhaseResult) -> str:
    cpu = result.cpu
    per = result.per_request_ms
    ours = per(cpu.workers) + per(cpu.postgres_backends) + per(cpu.postgres_other) + per(cpu.client)
    ceiling = 1000 * (os.cpu_count() or 1) / ours if ours else 0.0
    return (f"| {result.name} | {per(cpu.workers):.2f} | {per(cpu.postgres_backends):.2f}"
            f" | {per(cpu.postgres_other):.2f} | {per(cpu.client):.2f} | "
            f"{per(cpu.not_ours):.2f} | {100 * cpu.system_busy_share:.0f} % | {ceiling:,.0f} | "
            f"{result.backends_active:.1f} | {result.backends_waiting:.1f} |")


def best_rounds(results: list[PhaseResult]) -> list[PhaseResult]:
    """Per phase name, the round with the highest rate: other people's processes on the machine
    only ever slow a round down, so the best round is the least disturbed one."""
    best: dict[str, PhaseResult] = {}
    for result in results:
        if result.name not in best or result.rate > best[result.name].rate:
            best[result.name] = result
    return list(best.values())


def print_report(results: list[PhaseResult], profiles: dict[str, dict[str, Any]], rounds: int) -> None:
    best = best_rounds(results)
    pgbench = {r.clients: r.rate for r in best if r.name.startswith("pgbench")}
    print(f"\n## Best of {rounds} rounds (per phase)\n")
    print("| phase | clients | per second | p50 ms | p99 ms | HTTP ÷ pgbench | requests | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for result in best:
        print(phase_row(result, pgbench.get(result.clients) if closed_loop(result) else None))
    print("\nEvery round (per second):\n")
    for name in dict.fromkeys(r.name for r in results):
        print(f"- {name}: " + ", ".join(f"{r.rate:,.0f}" for r in results if r.name == name))
    print("\nCPU per request in ms (best round), the machine's busy share meanwhile, and the CPU ceiling: the rate "
          "at which our own processes alone would fill every core (cores ÷ our CPU per request), which hardly "
          "depends on what else runs on the machine. The last two columns: mean number of this database's "
          "backends running a statement, and of those waiting for a row lock (sampled every 20 ms):\n")
    print("| phase | gunicorn workers | PostgreSQL backends (pgbench: all postgres) | other postgres | client "
          "(pgbench: pgbench) | not ours (others, kernel) | machine busy | CPU ceiling /s "
          "| backends running a statement | of which waiting for a lock |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in best:
        print(cpu_row(result))
    print()
    for result in best:
        if result.name.startswith(("confirm", "bank callbacks")):
            baseline = pgbench.get(result.clients) if closed_loop(result) else None
            verdict = []
            if baseline:
                verdict.append(f"{100 * result.rate / baseline:.0f} % of pgbench (goal ≥ {100 * GOAL_SHARE:.0f} %)")
            verdict.append(f"p99 {result.p99:.1f} ms (goal < {GOAL_P99_MS:.0f} ms)")
            print(f"# {result.name}: " + ", ".join(verdict))
    for title, profile in profiles.items():
        unprofiled = next((r for r in best if r.name == ("confirm (HTTP) 16" if profile["kind"] == "confirm"
                                                         else "bank callbacks (HTTP) 16")), None)
        print_profile(title, profile, unprofiled.per_request_ms(unprofiled.cpu.workers) if unprofiled else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=DEFAULT_SERVER, help="dropped and re-created")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1,
                        help="gunicorn workers (default: cores + 1)")
    parser.add_argument("--threads", type=int, default=1, help="> 1: gthread workers")
    parser.add_argument("--worker-class", choices=["sync", "gthread"], default="sync",
                        help="gthread with --threads 1: one thread per worker, but keep-alive connections")
    parser.add_argument("--clients", default="16,32")
    parser.add_argument("--confirmations", type=int, default=2000, help="per confirmation phase and round")
    parser.add_argument("--rounds", type=int, default=3, help="of every measured phase; the best one is reported")
    parser.add_argument("--issue-clients", type=int, default=16)
    parser.add_argument("--client", choices=list(CLIENTS), default="raw",
                        help="raw: a minimal HTTP/1.1 client on plain sockets (the least client CPU)")
    parser.add_argument("--pgbench-seconds", type=int, default=10, help="per pgbench round")
    parser.add_argument("--no-pgbench", action="store_true")
    parser.add_argument("--paced", type=float, default=0.5,
                        help="an open-loop 16-client phase at this share of the best closed-loop rate (0: none)")
    parser.add_argument("--goal-share", type=float, default=0.25,
                        help="after pgbench: cashier and bank phases paced at this share of pgbench's best rate at "
                             "each client count (the issue's goal: ≥ 25 %% with p99 < 50 ms; 0: none)")
    parser.add_argument("--no-idempotency", dest="idempotency", action="store_false",
                        help="skip the 16-client rounds with an Idempotency-Key on every request (as the cashier page)")
    parser.add_argument("--profile", action="store_true", help="two further 16-client runs under py-spy (wall, CPU)")
    parser.add_argument("--profile-dir", type=Path, default=None, help="keep the raw py-spy stacks here")
    args = parser.parse_args(argv)
    client_counts = [int(c) for c in args.clients.split(",")]
    rounds = max(1, args.rounds)

    info = machine(args.database)
    print("# machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    worker_class = "gthread" if args.threads > 1 else args.worker_class
    print(f"# gunicorn: {args.workers} workers × {args.threads} threads ({worker_class}); client: {args.client}; "
          f"rounds: {rounds}", flush=True)
    fresh_database(args.database)
    seeded = seed(args.database, max(client_counts + [args.issue_clients]))
    year = datetime.now(UTC).year  # the receipt counter row is per year; pgbench adds to the same row
    warm = 4 * len(seeded.cashier_tokens)
    needed = (2 * warm + rounds * args.confirmations * (2 * len(client_counts) + (1 if args.idempotency else 0))
              + (PACED_CONFIRMATIONS if args.paced else 0) + (4 * PROFILE_CONFIRMATIONS if args.profile else 0)
              + (2 * len(client_counts) * GOAL_CONFIRMATIONS + len(seeded.cashier_tokens)
                 if args.goal_share and not args.no_pgbench else 0))
    results: list[PhaseResult] = []
    profiles: dict[str, dict[str, Any]] = {}

    def record(result: PhaseResult) -> None:
        results.append(result)
        print(phase_row(result), flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-confirm-") as tmp:
        tmp_path = Path(tmp)
        servers: list[Gunicorn] = []
        with gunicorn(args.database, args.workers, args.threads, tmp_path / "gunicorn.log", worker_class) as server:
            servers.append(server)
            numbers: list[str] = []
            lock = threading.Lock()
            callback_results: Counter[str] = Counter()

            def keep_number(_client: int, status: int, data: bytes) -> None:
                if status == 201:
                    with lock:
                        numbers.append(json.loads(data)["number"])

            def phase(name: str, jobs: list[list[Call]], **options: Any) -> PhaseResult:
                return run_phase(name, servers[-1], args.database, jobs, client_kind=args.client, **options)

            # warm the workers' connection pools and code paths (not measured)
            phase("warm-up", [issue_calls(seeded.window_token, 10, f"w{i}") for i in range(args.issue_clients)],
                  on_response=keep_number)
            per_client = -(-(needed - len(numbers)) // (args.issue_clients * rounds))
            for r in range(rounds):
                record(phase("issue notices", [issue_calls(seeded.window_token, per_client, f"r{r}c{i}")
                                               for i in range(args.issue_clients)], on_response=keep_number))
            if len(numbers) < needed:
                raise RuntimeError(f"only {len(numbers)} of {needed} notices issued")
            pool = iter(numbers)

            def payers(clients: int, count: int, *, idempotent: bool = False) -> list[list[Call]]:
                share = split([next(pool) for _ in range(count)], clients)
                return [pay_calls(seeded.cashier_tokens[i], share[i], idempotent=idempotent) for i in range(clients)]

            def callers(clients: int, count: int, tag: str) -> list[list[Call]]:
                share = split([next(pool) for _ in range(count)], clients)
                return [callback_calls(seeded.bank_code, seeded.bank_secret, share[i], f"{tag}c{i}")
                        for i in range(clients)]

            def check_callback(_client: int, status: int, data: bytes) -> None:
                result = json.loads(data).get("result") if status == 200 else f"HTTP {status}"
                with lock:
                    callback_results[str(result)] += 1

            # every cashier opens its shift and warms its path; the bank path too (not measured)
            phase("warm-up confirm", payers(len(seeded.cashier_tokens), warm))
            phase("warm-up callbacks", callers(args.issue_clients, warm, "warm"), on_response=check_callback)
            for r in range(rounds):
                for clients in client_counts:
                    record(phase(f"confirm (HTTP) {clients}", payers(clients, args.confirmations)))
                for clients in client_counts:
                    record(phase(f"bank callbacks (HTTP) {clients}", callers(clients, args.confirmations, f"r{r}"),
                                 on_response=check_callback))
                if args.idempotency:
                    record(phase("confirm (HTTP, Idempotency-Key) 16", payers(16, args.confirmations, idempotent=True)))
            if args.paced:
                rate = args.paced * max(r.rate for r in results if r.name.startswith("confirm (HTTP) "))
                record(phase(f"confirm (HTTP) 16, paced at {rate:.0f}/s", payers(16, PACED_CONFIRMATIONS), rate=rate))
            profiled_kinds = [(k, g) for k in ("confirm", "callbacks") for g in (False, True)] if args.profile else []
            for kind, gil in profiled_kinds:
                output = tmp_path / f"profile-{kind}-{'gil' if gil else 'wall'}.txt"
                jobs = payers(16, PROFILE_CONFIRMATIONS) if kind == "confirm" else callers(
                    16, PROFILE_CONFIRMATIONS, f"p{int(gil)}")
                spy = profile_workers(server, output, gil=gil)
                if spy is None:
                    break
                time.sleep(2.0)  # py-spy attaches to every worker
                profiled = phase(f"{kind} under py-spy", jobs,
                                 on_response=check_callback if kind == "callbacks" else None)
                spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
                spy.wait(timeout=120)
                profile = analyse_profile(output)
                profile["rate"] = profiled.rate
                profile["kind"] = kind
                profile["gil"] = gil
                profiles[f"{kind}, " + ("CPU (--gil: samples only while a worker runs Python)" if gil else
                                        "wall time (every sample of a busy worker, waiting on PostgreSQL included)")
                         ] = profile
                if args.profile_dir:
                    args.profile_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copy(output, args.profile_dir / output.name)
            log = (tmp_path / "gunicorn.log").read_text(errors="replace")
            if "Traceback" in log:
                print("# gunicorn logged tracebacks:\n" + log[-3000:], file=sys.stderr)

        # Before pgbench (whose audit rows are not HMAC-chained): what the HTTP phases left behind.
        integrity = check_integrity(args.database, year)
        print(f"# bank callback answers: {dict(callback_results)}", flush=True)
        print(f"# integrity after the HTTP phases: {'OK' if integrity.ok() else 'BROKEN'} {integrity}", flush=True)

        if not args.no_pgbench:
            prepare_pgbench_notices(args.database, 150_000)
            for _round in range(rounds):
                for clients in client_counts:
                    record(run_pgbench(args.database, clients, args.pgbench_seconds, seeded, year, tmp_path))
            if args.goal_share:
                # The goal as a service level: the app carrying goal-share of pgbench's best rate (an open
                # loop: requests at that rate whatever the answers' speed, latency from their scheduled
                # time). After pgbench, whose audit rows carry no MAC: the chain was checked above.
                best_pgbench = {c: max(r.rate for r in results if r.name.startswith("pgbench") and r.clients == c)
                                for c in client_counts}
                with gunicorn(args.database, args.workers, args.threads, tmp_path / "gunicorn-goal.log",
                              worker_class) as server:
                    servers.append(server)
                    phase("warm-up confirm", payers(len(seeded.cashier_tokens), len(seeded.cashier_tokens)))
                    for clients in client_counts:
                        rate = args.goal_share * best_pgbench[clients]
                        record(phase(f"confirm (HTTP) {clients}, paced at {rate:.0f}/s = "
                                     f"{100 * args.goal_share:.0f} % of pgbench",
                                     payers(clients, GOAL_CONFIRMATIONS), rate=rate))
                        record(phase(f"bank callbacks (HTTP) {clients}, paced at {rate:.0f}/s = "
                                     f"{100 * args.goal_share:.0f} % of pgbench",
                                     callers(clients, GOAL_CONFIRMATIONS, f"goal{clients}"),
                                     on_response=check_callback, rate=rate))

    print_report(results, profiles, rounds)
    print(f"\n# bank callback answers: {dict(callback_results)}")
    print(f"# integrity after the HTTP phases: {'OK' if integrity.ok() else 'BROKEN'} {integrity}")
    return 0 if integrity.ok() and set(callback_results) <= {"confirmed"} else 1


if __name__ == "__main__":
    sys.exit(main())
