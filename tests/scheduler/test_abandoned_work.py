"""Work left 'running' by a killed process is taken over at once; live work never is (issue 10).

On the suite's database: SQLite knows a holder by host:pid, PostgreSQL by the lease (an advisory
lock held on a connection of the worker's own). "Dead" here is a real process that has exited,
or on PostgreSQL a claim whose lease nobody holds; "alive" is this test process holding the lease.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.clock import today, utcnow
from core.db import Database
from core.leases import JOB_RUN_SPACE, RECONCILIATION_RUN_SPACE, acquire_lease, this_process
from receipts.service import receipt_settings
from reconciliation.models import JobRun, ReconciliationRun
from reconciliation.scheduler import Job, JobContext, Runner
from reconciliation.service import reconcile
from tests.conftest import Staff, make_test_app
from tests.scheduler.conftest import at, fixed
from tests.views.conftest import signed_in

NIGHTLY = {"hour": "1", "minute": "30"}


def a_dead_process() -> str:
    """host:pid of a process of this machine that has run and exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return f"{socket.gethostname()}:{int(child.stdout)}"


@contextmanager
def held(db: Database, space: int, key: int) -> Iterator[None]:
    """This process doing that work: its lease held (PostgreSQL; on SQLite our pid says it)."""
    lease = acquire_lease(db, space, key, wait=True)
    assert lease is not None
    try:
        yield
    finally:
        lease.release()


class Nightly:
    def __init__(self) -> None:
        self.dates: list[date] = []

    def __call__(self, ctx: JobContext) -> str:
        self.dates.append(ctx.local_scheduled.date())
        return "done"


def claim(db: Database, scheduled_for_local: str, holder: str, claimed_days_ago: float = 0) -> int:
    slot = at(scheduled_for_local)
    with db.unit_of_work() as session:
        row = JobRun(job="reconcile", scheduled_for=slot, claimed_by=holder,
                     claimed_at=slot + timedelta(days=claimed_days_ago), status="running")
        session.add(row)
        session.flush()
        return row.id


def job_runs(db: Database) -> dict[int, JobRun]:
    with db.reading() as session:
        return {r.id: r for r in session.scalars(select(JobRun))}


def test_a_claim_whose_process_is_gone_is_taken_over_at_once_and_a_live_one_never(app: Flask, db: Database) -> None:
    job = Job("reconcile", Nightly(), NIGHTLY, catch_up=timedelta(days=7), catch_up_each=True,
              stale_after=timedelta(hours=6))
    # 9 March: the node was SIGKILLed a minute into the run. 8 March: a run still going after
    # two days (slow, but its process is alive and holds its lease).
    killed = claim(db, "2026-03-09 01:30", a_dead_process())
    live = claim(db, "2026-03-08 01:30", this_process())
    runner = Runner(app, jobs=(job,), now=fixed(at("2026-03-09 01:31")), node="new:3")
    with held(db, JOB_RUN_SPACE, live):
        assert runner.run(job, at("2026-03-09 01:30")) == "succeeded"
        assert runner.run(job, at("2026-03-08 01:30")) == "skipped"
        # And catch-up sees the same: only the dead claim counts as missed.
        assert runner.pending(job, at("2026-03-09 01:31"), routine=False) == [
            at(f"2026-03-0{d} 01:30") for d in range(3, 8)]
    rows = job_runs(db)
    assert (rows[live].claimed_by, rows[live].status) == (this_process(), "running")
    assert (rows[killed].claimed_by, rows[killed].status, rows[killed].result) == ("new:3", "succeeded", "done")
    assert job.func.dates == [date(2026, 3, 9)]  # type: ignore[attr-defined]


def test_a_node_taken_over_does_not_overwrite_the_outcome_of_the_node_that_redid_the_run(
        app: Flask, db: Database) -> None:
    job = Job("reconcile", Nightly(), NIGHTLY)
    run_id = claim(db, "2026-03-09 01:30", "new:3")
    with db.unit_of_work() as session:
        session.get_one(JobRun, run_id).status = "succeeded"
    Runner(app, jobs=(job,), node="old:1").finish(run_id, "failed", "came back after a partition")
    assert job_runs(db)[run_id].status == "succeeded"


def _run(db: Database, run_id: int) -> ReconciliationRun:
    with db.reading() as session:
        return session.get_one(ReconciliationRun, run_id)


def _left_running(db: Database, worker: str, business_date: date) -> int:
    with db.unit_of_work() as session:
        run = ReconciliationRun(business_date=business_date, status="running", started_at=utcnow(),
                                started_by="scheduler", worker=worker)
        session.add(run)
        session.flush()
        return run.id


def test_a_reconciliation_run_left_running_by_a_killed_process_is_marked_failed_and_the_day_redone(
        app: Flask, db: Database, client: FlaskClient, staff: Staff) -> None:
    day = today(app.config["FEESVC_TIMEZONE"]) - timedelta(days=1)
    killed = _left_running(db, a_dead_process(), day)
    live = _left_running(db, this_process(), day)
    with held(db, RECONCILIATION_RUN_SPACE, live):
        redone = reconcile(db, receipt_settings(app.config), day, started_by="finance")
        assert (_run(db, killed).status, _run(db, live).status, redone.status) == ("failed", "running", "completed")
        assert "进程" in (_run(db, killed).error or "")
        # Finance sees why, through the API and on the run's page.
        answer = client.get(f"/api/v1/reconciliation/runs/{killed}", headers=staff.headers("finance"))
        assert answer.status_code == 200 and answer.json["status"] == "failed"
        assert "已不在" in answer.json["error"]
        pages = make_test_app(app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False)
        page = signed_in(pages, staff.usernames["finance"]).get(f"/finance/runs/{killed}").get_data(as_text=True)
        pages.extensions["db"].engine.dispose()
        assert "对账失败" in page and "已不在" in page
    # The live one is its process's to finish: a sweep after it is gone marks it too.
    runner = Runner(app, jobs=(), node="new:3")
    if db.engine.dialect.name == "sqlite":
        with db.unit_of_work() as session:
            session.get_one(ReconciliationRun, live).worker = a_dead_process()
    runner.sweep_abandoned_reconciliations()
    assert _run(db, live).status == "failed"
