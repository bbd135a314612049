"""The scheduler's claims, catch-up, failures, clean-up and shutdown, on the suite's database
(SQLite by default). The PostgreSQL tests with several processes are in test_postgres.py."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.clock import utcnow
from core.db import Database
from notices.models import Notice
from reconciliation.models import JobRun, ReconciliationRun
from reconciliation.scheduler import (
    DEFAULT_JOBS,
    Job,
    JobContext,
    Runner,
    SchedulerProcess,
    fire_times,
    latest_fire_time,
    previous_business_date,
    run_scheduler,
)
from tests.conftest import AUDIT_KEY, PROJECT_ROOT, Staff, issue
from tests.scheduler.conftest import TZ, at, fixed

NIGHTLY = {"hour": "1", "minute": "30"}


def job_runs(db: Database, job: str | None = None) -> list[JobRun]:
    with db.reading() as session:
        query = select(JobRun).order_by(JobRun.scheduled_for, JobRun.id)
        if job is not None:
            query = query.where(JobRun.job == job)
        return list(session.scalars(query))


class Recorder:
    """A fake job function that remembers the runs it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[JobContext] = []
        self.fail = fail

    def __call__(self, ctx: JobContext) -> str:
        self.calls.append(ctx)
        if self.fail:
            raise RuntimeError("boom: the bank's file server is down")
        return f"did {ctx.scheduled_for.isoformat()}"

    @property
    def dates(self) -> list[date]:
        return [previous_business_date(ctx) for ctx in self.calls]


def test_cron_times_are_whole_seconds_in_utc() -> None:
    trigger = Job("x", Recorder(), NIGHTLY).trigger(TZ)
    times = fire_times(trigger, at("2026-03-08 09:00"), at("2026-03-10 09:00"))
    assert times == [at("2026-03-09 01:30"), at("2026-03-10 01:30")]
    assert all(t.tzinfo is UTC and t.microsecond == 0 for t in times)
    # The latest time at or before a moment, whatever the wake-up delay.
    assert latest_fire_time(trigger, at("2026-03-10 01:30")) == at("2026-03-10 01:30")
    assert latest_fire_time(trigger, at("2026-03-10 01:29:59.9")) == at("2026-03-09 01:30")
    every_10s = Job("y", Recorder(), {"second": "*/10"}).trigger(TZ)
    assert latest_fire_time(every_10s, at("2026-03-10 09:00:27.5")) == at("2026-03-10 09:00:20")


def test_the_same_run_claimed_twice_runs_once(app: Flask, db: Database,
                                              caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    job = Job("reconcile", recorder, NIGHTLY)
    scheduled_for = at("2026-03-10 01:30")
    first = Runner(app, jobs=(job,), node="node-a:1")
    second = Runner(app, jobs=(job,), node="node-b:2")

    assert first.run(job, scheduled_for) == "succeeded"
    with caplog.at_level(logging.INFO, logger="feeservice.scheduler"):
        assert second.run(job, scheduled_for) == "skipped"
        assert first.run(job, scheduled_for) == "skipped"  # the same node does not run it again either

    assert len(recorder.calls) == 1
    [run] = job_runs(db)
    assert (run.job, run.scheduled_for, run.claimed_by, run.status) == (
        "reconcile", scheduled_for, "node-a:1", "succeeded")
    assert run.finished_at is not None and run.result == f"did {scheduled_for.isoformat()}"
    assert "reconcile 2026-03-10 01:30:00 CST: skipped, claimed by node-a:1" in caplog.text


def test_different_wake_up_delays_claim_the_same_run(app: Flask, db: Database) -> None:
    """Two nodes woken 0.2 s and 7 s after 01:30 compute the same scheduled_for."""
    recorder = Recorder()
    job = Job("reconcile", recorder, NIGHTLY)
    Runner(app, jobs=(job,), now=fixed(at("2026-03-10 01:30:00.2")), node="a").fire(job)
    Runner(app, jobs=(job,), now=fixed(at("2026-03-10 01:30:07")), node="b").fire(job)
    assert len(recorder.calls) == 1
    assert [r.scheduled_for for r in job_runs(db)] == [at("2026-03-10 01:30")]


def test_a_failure_is_recorded_and_the_others_still_run(app: Flask, db: Database,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    broken, fine = Recorder(fail=True), Recorder()
    jobs = [Job("broken", broken, {"minute": "0"}), Job("fine", fine, {"minute": "0"})]
    assert run_scheduler(app, once=True, jobs=jobs, now=fixed(at("2026-03-10 09:00:05"))) == 1  # failed runs

    assert len(broken.calls) == 1 and len(fine.calls) == 1
    by_job = {r.job: r for r in job_runs(db)}
    assert by_job["broken"].status == "failed"
    assert by_job["broken"].result == "RuntimeError: boom: the bank's file server is down"
    assert by_job["broken"].finished_at is not None
    assert by_job["fine"].status == "succeeded"
    out = capsys.readouterr().out
    assert "broken 2026-03-10 09:00:00 CST: failed" in out and "RuntimeError: boom" in out
    assert "fine 2026-03-10 09:00:00 CST: succeeded" in out

    # A failed run is not retried by the next pass (an operator reruns it by hand) ...
    run_scheduler(app, once=True, jobs=jobs, now=fixed(at("2026-03-10 09:30")))
    assert len(broken.calls) == 1
    # ... and the next scheduled run goes ahead.
    run_scheduler(app, once=True, jobs=jobs, now=fixed(at("2026-03-10 10:00")))
    assert len(broken.calls) == 2 and len(fine.calls) == 2


def test_catch_up_runs_the_missed_nights_oldest_first_and_only_once(
        app: Flask, db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder()
    jobs = [Job("reconcile", recorder, NIGHTLY, catch_up=timedelta(days=7), catch_up_each=True)]
    # The nights of 4 to 7 March ran; the scheduler was down for the last three.
    with db.unit_of_work() as session:
        for day in (4, 5, 6, 7):
            session.add(JobRun(job="reconcile", scheduled_for=at(f"2026-03-0{day} 01:30"), claimed_by="old:1",
                               status="succeeded", finished_at=at(f"2026-03-0{day} 01:31")))
    now = fixed(at("2026-03-10 09:00"))

    run_scheduler(app, once=True, jobs=jobs, now=now)
    assert recorder.dates == [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)]
    assert [c.scheduled_for for c in recorder.calls] == [at("2026-03-08 01:30"), at("2026-03-09 01:30"),
                                                         at("2026-03-10 01:30")]
    assert "catch-up: 3 runs to do" in capsys.readouterr().out
    assert len(job_runs(db)) == 7 and all(r.status == "succeeded" for r in job_runs(db))

    run_scheduler(app, once=True, jobs=jobs, now=now)
    assert len(recorder.calls) == 3
    assert len(job_runs(db)) == 7
    assert "catch-up: nothing missed" in capsys.readouterr().out


def test_catch_up_looks_back_seven_days_and_expiry_only_once(app: Flask, db: Database) -> None:
    reconcile, expire = Recorder(), Recorder()
    jobs = [Job("reconcile", reconcile, NIGHTLY, catch_up=timedelta(days=7), catch_up_each=True),
            Job("expire-notices", expire, {"hour": "0", "minute": "5"}, catch_up=timedelta(days=1))]
    # Down for a fortnight: seven nights are caught up, not fourteen; expiry runs once (for today).
    run_scheduler(app, once=True, jobs=jobs, now=fixed(at("2026-03-10 09:00")))
    assert reconcile.dates == [date(2026, 3, d) for d in range(3, 10)]
    assert [c.scheduled_for for c in expire.calls] == [at("2026-03-10 00:05")]


def test_the_clean_up_prunes_old_claims_of_frequent_jobs_only(app: Flask, db: Database) -> None:
    now = at("2026-03-10 09:00")
    with db.unit_of_work() as session:
        for job, age in (("deliver-webhooks", timedelta(hours=25)), ("deliver-webhooks", timedelta(hours=1)),
                         ("reconcile", timedelta(days=400)), ("purge-idempotency-keys", timedelta(days=31))):
            session.add(JobRun(job=job, scheduled_for=now - age, claimed_by="x", status="succeeded"))
    purge = next(j for j in DEFAULT_JOBS if j.name == "purge-idempotency-keys")
    Runner(app, now=fixed(now)).run(purge, at("2026-03-10 09:00"))
    left = [(r.job, now - r.scheduled_for) for r in job_runs(db)]
    assert left == [("reconcile", timedelta(days=400)), ("deliver-webhooks", timedelta(hours=1)),
                    ("purge-idempotency-keys", timedelta(0))]
    assert job_runs(db, "purge-idempotency-keys")[0].result == "purged 0 idempotency keys, 2 old job runs"


def test_scheduler_once_exits_1_when_a_run_failed(app: Flask, db: Database,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Cron and monitoring see a failed run in the exit status of `flask scheduler --once`."""
    import reconciliation.scheduler

    broken = (Job("broken", Recorder(fail=True), {"minute": "0"}),)
    monkeypatch.setattr(reconciliation.scheduler, "DEFAULT_JOBS", broken)
    failed = app.test_cli_runner().invoke(args=["scheduler", "--once"])
    assert failed.exit_code == 1, failed.output
    assert "1 个任务运行失败" in failed.output and "RuntimeError: boom" in failed.output
    monkeypatch.setattr(reconciliation.scheduler, "DEFAULT_JOBS", (Job("fine", Recorder(), {"minute": "0"}),))
    fine = app.test_cli_runner().invoke(args=["scheduler", "--once"])
    assert fine.exit_code == 0, fine.output


def test_the_real_jobs_once(app: Flask, db: Database) -> None:
    """The default table with the real functions: a week of reconciliations (one run per
    date), expiry, webhooks and clean-up, each claimed once; a second pass adds nothing."""
    assert run_scheduler(app, once=True) == 0
    runs = job_runs(db)
    assert all(r.status == "succeeded" for r in runs), [(r.job, r.result) for r in runs]
    assert {r.job for r in runs} == {"reconcile", "expire-notices", "deliver-webhooks", "purge-idempotency-keys",
                                     "anchor-audit"}
    assert len(job_runs(db, "reconcile")) == 7 and len(job_runs(db, "anchor-audit")) == 7
    with db.reading() as session:
        dates = list(session.scalars(select(ReconciliationRun.business_date).order_by(ReconciliationRun.id)))
        started_by = set(session.scalars(select(ReconciliationRun.started_by)))
    assert len(dates) == 7 and dates == sorted(set(dates))
    assert started_by == {"scheduler"}
    reconcile_rows = job_runs(db, "reconcile")
    assert reconcile_rows[-1].result is not None and reconcile_rows[-1].result.startswith(
        f"business date {dates[-1]}: reconciliation run")

    run_scheduler(app, once=True)
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 7
    assert len(job_runs(db, "reconcile")) == 7


def test_the_expiry_job_expires_overdue_notices(app: Flask, db: Database, client: FlaskClient,
                                                staff: Staff) -> None:
    number = issue(client, staff).get_json()["number"]
    expire = [j for j in DEFAULT_JOBS if j.name == "expire-notices"]
    run_scheduler(app, once=True, jobs=expire, now=lambda: utcnow() + timedelta(days=30))
    with db.reading() as session:
        assert session.scalar(select(Notice.status).where(Notice.number == number)) == "expired"
    [run] = job_runs(db)
    assert run.status == "succeeded" and run.result is not None and run.result.startswith("expired 1 notices")


def test_apscheduler_wakes_the_runner(app: Flask, db: Database) -> None:
    """The foreground scheduler with a job every second: it fires, claims, and stops on request."""
    ticks = threading.Semaphore(0)

    def tick(ctx: JobContext) -> str:
        ticks.release()
        return "tick"

    process = SchedulerProcess(Runner(app, jobs=(Job("tick", tick, {"second": "*"}),)))
    thread = threading.Thread(target=process.serve)
    thread.start()
    try:
        assert ticks.acquire(timeout=5) and ticks.acquire(timeout=5)
    finally:
        process.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    runs = job_runs(db, "tick")
    assert len(runs) >= 2 and len({r.scheduled_for for r in runs}) == len(runs)
    assert all(r.scheduled_for.microsecond == 0 for r in runs)


def test_stopping_waits_for_the_running_job(app: Flask, db: Database) -> None:
    started, finished = threading.Event(), threading.Event()

    def slow(ctx: JobContext) -> str:
        started.set()
        time.sleep(1.5)
        finished.set()
        return "slow work done"

    process = SchedulerProcess(Runner(app, jobs=(Job("slow", slow, {"second": "*"}),)))
    thread = threading.Thread(target=process.serve)
    thread.start()
    assert started.wait(timeout=5)
    process.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and finished.is_set()
    [run] = job_runs(db, "slow")
    assert run.status == "succeeded" and run.result == "slow work done"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_cleanly_on_a_signal(app: Flask, signum: int) -> None:
    env = {**os.environ, "DATABASE_URL": app.config["DATABASE_URL"], "SECRET_KEY": "test-secret",
           "FEESVC_AUDIT_KEY": AUDIT_KEY, "PYTHONUNBUFFERED": "1"}
    flask = Path(PROJECT_ROOT) / ".venv" / "bin" / "flask"
    process = subprocess.Popen([str(flask), "--app", "wsgi", "scheduler"], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "scheduler started on" in line:
            break
    assert any("scheduler started on" in line for line in lines), "".join(lines)
    time.sleep(1)
    process.send_signal(signum)
    try:
        rest, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert f"{signal.Signals(signum).name} received: stopping" in output
    assert "scheduler stopped" in output
