"""Several scheduler processes against one PostgreSQL: each job run happens once (issue 5:
"two scheduler processes against one PostgreSQL → the job runs once")."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from core.db import Database
from reconciliation.models import JobRun, ReconciliationRun
from reconciliation.scheduler import Job, JobContext, Runner, previous_business_date, run_scheduler
from tests.conftest import AUDIT_KEY, PROJECT_ROOT, make_test_app
from tests.scheduler.conftest import at, fixed

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

NOW = at("2026-03-10 09:00:05")


def record_effect(ctx: JobContext) -> str:
    """A fake job whose effect can be counted: one reconciliation_runs row per run, named after
    the run; it takes a moment, so that the other process is there while it works."""
    with ctx.database.unit_of_work() as session:
        session.add(ReconciliationRun(business_date=previous_business_date(ctx), status="completed",
                                      started_by=f"{ctx.job} {ctx.scheduled_for.isoformat()}",
                                      totals=str(os.getpid())))
    time.sleep(0.05)
    return "effect recorded"


def fake_jobs() -> list[Job]:
    return [
        Job("reconcile", record_effect, {"hour": "1", "minute": "30"}, catch_up=timedelta(days=7),
            catch_up_each=True),
        Job("expire-notices", record_effect, {"hour": "0", "minute": "5"}, catch_up=timedelta(days=1)),
        Job("deliver-webhooks", record_effect, {"second": "*/10"}),
        Job("purge-idempotency-keys", record_effect, {"minute": "0"}),
    ]


def scheduler_process(url: str, start: Any, now: datetime) -> None:
    """One scheduler node (a separate OS process): `scheduler --once` with the fake job table."""
    app = make_test_app(url)
    start.wait(timeout=60)  # both nodes begin their catch-up together
    run_scheduler(app, once=True, jobs=fake_jobs(), now=fixed(now))
    app.extensions["db"].engine.dispose()


def counts(db: Database) -> tuple[Counter[str], Counter[tuple[str, datetime]], set[str]]:
    with db.reading() as session:
        effects = Counter(session.scalars(select(ReconciliationRun.started_by)))
        runs = Counter((job, when) for job, when in session.execute(select(JobRun.job, JobRun.scheduled_for)))
        pids = set(session.scalars(select(ReconciliationRun.totals)))
    return effects, runs, {p for p in pids if p}


def test_two_processes_run_each_job_run_once(sched_pg_app: Flask) -> None:
    db: Database = sched_pg_app.extensions["db"]
    context = multiprocessing.get_context("spawn")  # no forked engines or threads
    start = context.Barrier(2)
    nodes = [context.Process(target=scheduler_process, args=(sched_pg_app.config["DATABASE_URL"], start, NOW))
             for _ in range(2)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join(timeout=120)
    assert [node.exitcode for node in nodes] == [0, 0]

    effects, runs, _pids = counts(db)
    # 7 nights + today's expiry + the latest 10-second and hourly runs, each claimed once ...
    assert sum(runs.values()) == 10 and set(runs.values()) == {1}
    assert Counter(job for job, _ in runs.elements()) == {"reconcile": 7, "expire-notices": 1,
                                                         "deliver-webhooks": 1, "purge-idempotency-keys": 1}
    # ... and done once: one effect per run, none twice.
    assert sum(effects.values()) == 10 and set(effects.values()) == {1}
    with db.reading() as session:
        statuses = set(session.scalars(select(JobRun.status)))
        nightly = list(session.scalars(select(ReconciliationRun.business_date).where(
            ReconciliationRun.started_by.like("reconcile %")).order_by(ReconciliationRun.business_date)))
    assert statuses == {"succeeded"}
    assert nightly == [date(2026, 3, day) for day in range(3, 10)]


def test_two_scheduler_commands_reconcile_each_night_once(sched_pg_app: Flask) -> None:
    """The real command, twice at once: `flask --app wsgi scheduler --once` on one database."""
    db: Database = sched_pg_app.extensions["db"]
    env = {**os.environ, "DATABASE_URL": sched_pg_app.config["DATABASE_URL"], "SECRET_KEY": "test-secret",
           "FEESVC_AUDIT_KEY": AUDIT_KEY}
    command = [str(PROJECT_ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi", "scheduler", "--once"]
    processes = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs

    with db.reading() as session:
        runs = Counter(session.scalars(select(JobRun.job)))
        statuses = set(session.scalars(select(JobRun.status)))
        per_date = Counter(session.scalars(select(ReconciliationRun.business_date)))
        started_by = set(session.scalars(select(ReconciliationRun.started_by)))
    assert runs["reconcile"] == 7 and runs["expire-notices"] == 1, outputs
    assert statuses == {"succeeded"}, outputs
    # One reconciliation run per night, for the seven nights before today.
    assert len(per_date) == 7 and set(per_date.values()) == {1}, outputs
    assert started_by == {"scheduler"}
    # The two logs together tell each night's run once.
    lines = "".join(outputs).splitlines()
    assert sum(" reconcile " in line and ": running (claim" in line for line in lines) == 7, outputs


def test_only_one_node_takes_over_an_abandoned_claim(sched_pg_app: Flask) -> None:
    db: Database = sched_pg_app.extensions["db"]
    calls: list[str] = []
    release = threading.Event()

    def slow(ctx: JobContext) -> str:
        calls.append(ctx.job)
        release.wait(timeout=5)
        return "done"

    job = Job("reconcile", slow, {"hour": "1", "minute": "30"}, catch_up=timedelta(days=7), catch_up_each=True,
              stale_after=timedelta(hours=6))
    slot = at("2026-03-09 01:30")
    with db.unit_of_work() as session:
        session.add(JobRun(job="reconcile", scheduled_for=slot, claimed_by="dead:1", claimed_at=slot,
                           status="running"))
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def node(name: str) -> None:
        runner = Runner(sched_pg_app, jobs=(job,), now=fixed(at("2026-03-10 09:00")), node=name)
        start.wait(timeout=10)
        outcomes.append(runner.run(job, slot))
        release.set()

    threads = [threading.Thread(target=node, args=(f"node-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert calls == ["reconcile"]
    with db.reading() as session:
        [row] = session.scalars(select(JobRun))
        assert row.status == "succeeded" and row.claimed_by.startswith("node-")
        assert session.scalar(select(func.count()).select_from(JobRun)) == 1
