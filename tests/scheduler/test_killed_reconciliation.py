"""What an operator sees after a scheduler was killed mid-reconciliation: the next
`flask scheduler --once` (the real job table, the real clock) marks the killed run failed with
its reason (the API and `flask reconciliation runs` show it), redoes that night once and records
the claim succeeded; while the holder lives, however long it has been running, the same command
leaves its claim and its run alone.

On the suite's database (SQLite: the holder is host:pid; PostgreSQL: the leases, i.e. advisory
locks held on connections of the holder's own). tests/scheduler/test_abandoned_work.py tests the
pieces; this is the command end to end.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.clock import local, utcnow
from core.db import Database
from core.leases import JOB_RUN_SPACE, RECONCILIATION_RUN_SPACE, acquire_lease, this_process
from reconciliation.models import JobRun, ReconciliationRun
from reconciliation.scheduler import Runner, latest_fire_time
from tests.conftest import Staff


def a_dead_process() -> str:
    """host:pid of a process of this machine that has run, exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return f"{socket.gethostname()}:{int(child.stdout)}"


def night_before_last(app: Flask) -> tuple[datetime, date]:
    """The reconcile slot of two nights ago (over a day old: far past any age limit) and the
    business date it reconciles."""
    latest = latest_fire_time(Runner(app).triggers["reconcile"], utcnow())
    assert latest is not None
    slot = latest - timedelta(days=1)
    return slot, local(slot, app.config["FEESVC_TIMEZONE"]).date() - timedelta(days=1)


def left_running(db: Database, slot: datetime, day: date, holder: str) -> tuple[int, int]:
    """A scheduler's claim on the slot and the reconciliation run it had started, both 'running'."""
    with db.unit_of_work() as session:
        claim = JobRun(job="reconcile", scheduled_for=slot, claimed_by=holder, claimed_at=slot, status="running")
        run = ReconciliationRun(business_date=day, status="running", started_at=slot, started_by="scheduler",
                                worker=holder)
        session.add_all([claim, run])
        session.flush()
        return claim.id, run.id


@contextmanager
def alive(db: Database, claim_id: int, run_id: int) -> Iterator[None]:
    """This process still doing both: its leases held (on SQLite its pid says so)."""
    with ExitStack() as stack:
        for space, key in ((JOB_RUN_SPACE, claim_id), (RECONCILIATION_RUN_SPACE, run_id)):
            lease = acquire_lease(db, space, key, wait=True)
            assert lease is not None
            stack.callback(lease.release)
        yield


def claims_of(db: Database, slot: datetime) -> list[JobRun]:
    with db.reading() as session:
        return list(session.scalars(select(JobRun).where(JobRun.job == "reconcile", JobRun.scheduled_for == slot)))


def runs_of(db: Database, day: date) -> list[ReconciliationRun]:
    with db.reading() as session:
        return list(session.scalars(select(ReconciliationRun).where(ReconciliationRun.business_date == day)
                                    .order_by(ReconciliationRun.id)))


def test_the_next_scheduler_once_marks_the_killed_run_failed_and_redoes_the_night(
        app: Flask, db: Database, client: FlaskClient, staff: Staff) -> None:
    slot, day = night_before_last(app)
    killed = a_dead_process()
    claim_id, run_id = left_running(db, slot, day, killed)

    result = app.test_cli_runner().invoke(args=["scheduler", "--once"])

    assert result.exit_code == 0, result.output
    assert f"reconciliation runs {run_id} were left running" in result.output
    failed, redone = runs_of(db, day)
    assert (failed.id, failed.status) == (run_id, "failed")
    assert failed.error is not None and "已不在" in failed.error and killed in failed.error
    assert (redone.status, redone.started_by) == ("completed", "scheduler")
    [claim] = claims_of(db, slot)  # the same claim, taken over: the night is done once
    assert claim.id == claim_id and claim.status == "succeeded" and claim.claimed_by != killed
    assert claim.result is not None and claim.result.startswith(f"business date {day}: reconciliation run {redone.id}")
    # Finance sees the failed run with its reason beside the run that replaced it.
    listed = client.get(f"/api/v1/reconciliation/runs?business_date={day}", headers=staff.headers("finance"))
    assert listed.status_code == 200
    by_id = {r["id"]: r for r in listed.json["items"]}
    assert by_id[run_id]["status"] == "failed" and "已不在" in by_id[run_id]["error"]
    assert by_id[redone.id]["status"] == "completed"
    # And so does the operator at the server.
    shown = app.test_cli_runner().invoke(args=["reconciliation", "runs", "--date", str(day)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"#{redone.id}\t{day}\t已完成\t") and lines[0].endswith("\tscheduler")
    assert lines[1].startswith(f"#{run_id}\t{day}\t失败\t")
    assert lines[2] == f"  {failed.error}" and len(lines) == 3
    none = app.test_cli_runner().invoke(args=["reconciliation", "runs", "--date", "2000-01-01"])
    assert none.exit_code == 0 and none.output == "没有对账记录。\n"

    again = app.test_cli_runner().invoke(args=["scheduler", "--once"])
    assert again.exit_code == 0, again.output
    assert len(runs_of(db, day)) == 2 and len(claims_of(db, slot)) == 1


def test_the_scheduler_once_leaves_a_live_long_run_alone(app: Flask, db: Database) -> None:
    slot, day = night_before_last(app)
    claim_id, run_id = left_running(db, slot, day, this_process())

    with alive(db, claim_id, run_id):
        result = app.test_cli_runner().invoke(args=["scheduler", "--once"])
        assert result.exit_code == 0, result.output
        [run] = runs_of(db, day)
        [claim] = claims_of(db, slot)
        assert (run.id, run.status, run.error) == (run_id, "running", None)
        assert (claim.status, claim.claimed_by) == ("running", this_process())
    # The other nights of the catch-up were reconciled as usual.
    with db.reading() as session:
        others = list(session.scalars(select(ReconciliationRun.status).where(ReconciliationRun.business_date != day)))
    assert others and set(others) == {"completed"}
