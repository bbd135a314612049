"""The scheduler: nightly reconciliation, notice expiry, webhook delivery and clean-up.

`flask --app wsgi scheduler` runs APScheduler 3 in the foreground, and any number of nodes may
run it against one PostgreSQL. APScheduler only decides *when* this process wakes up; whether
it runs a given run is decided by the database: before running, a node inserts
`(job, scheduled_for)` into `job_runs` (unique) in its own committed transaction, and a node
whose insert meets another node's row inserts nothing and skips that run. An advisory lock
alone would not do: a second node would take the lock after the first released it and run the
job again (PITFALLS.md). The same rows tell a node that starts after an outage which nights
were missed.

APScheduler's job store stays in memory (PITFALLS.md: a shared persistent store must not be used
by several processes); the only shared state is the `job_runs` table.

Scheduled times come from cron triggers in FEESVC_TIMEZONE, so they fall on the same wall-clock
boundaries on every node (an interval trigger would count from each process's start time and
two nodes would never compute the same `scheduled_for`). They are stored in UTC, whole seconds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.clock import business_date, local, utcnow, zone
from core.db import Database
from core.leases import JOB_RUN_SPACE, Lease, acquire_lease, holder_is_gone, uses_advisory_locks
from reconciliation.models import JobRun

log = logging.getLogger("feeservice.scheduler")

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
RESULT_MAX_CHARS = 2000
NOTHING_TO_DO = "nothing to do"


class JobFailed(Exception):
    """A job that finished but did not do its work (e.g. a reconciliation run that failed)."""


@dataclass(frozen=True)
class JobContext:
    """What a job function gets: the app, its database, and which run this is."""

    app: Flask
    database: Database
    job: str
    scheduled_for: datetime  # UTC, whole seconds: the run's identity in job_runs
    now: datetime  # UTC, when this run started (catch-up runs start long after scheduled_for)
    jobs: tuple[Job, ...]  # the whole table, for the clean-up of old job_runs rows

    @property
    def timezone(self) -> str:
        return str(self.app.config["FEESVC_TIMEZONE"])

    @property
    def local_scheduled(self) -> datetime:
        return local(self.scheduled_for, self.timezone)


# A job returns a short summary of what it did (stored in job_runs.result), or None when there
# was nothing to do; it raises to report a failure.
JobFunction = Callable[[JobContext], str | None]


@dataclass(frozen=True)
class Job:
    """One entry of the job table. Tests pass their own tables with fake functions."""

    name: str
    func: JobFunction
    # CronTrigger fields, in FEESVC_TIMEZONE, e.g. {"hour": "1", "minute": "30"}.
    cron: Mapping[str, str]
    # On start (and in --once mode), look this far back for runs nobody claimed.
    catch_up: timedelta | None = None
    # True: every missed run is run (each is a different business date); False: only the
    # latest missed one (the job's effect does not depend on the date it was scheduled for).
    catch_up_each: bool = False
    # job_runs rows older than this are deleted by the clean-up job (None: kept for good).
    keep_runs: timedelta | None = None
    # A claim still 'running' whose process is gone is taken over at once (core/leases.py). Only
    # where that cannot be known (SQLite, a claim by another host) does age decide: after this
    # long it counts as abandoned (None: never).
    stale_after: timedelta | None = None
    # Frequent jobs log routine runs and skips at DEBUG, so that the log shows what matters.
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.keep_runs is not None and self.catch_up is not None and self.keep_runs <= self.catch_up:
            # Pruned rows inside the catch-up window would look like missed runs.
            raise ValueError(f"{self.name}: keep_runs must be longer than catch_up")

    def trigger(self, timezone: str) -> CronTrigger:
        return CronTrigger(timezone=zone(timezone), **self.cron)


# -- the jobs -------------------------------------------------------------------------------


def previous_business_date(ctx: JobContext) -> date:
    """The nightly run reconciles the day before the one it is scheduled on (local time)."""
    return ctx.local_scheduled.date() - timedelta(days=1)


def reconcile_previous_day(ctx: JobContext) -> str:
    # Imported when the job runs: the reconciliation service is the heavy end of the package
    # graph, and the scheduler's other jobs must keep running even if it fails to import.
    from receipts.service import receipt_settings
    from reconciliation.service import reconcile

    day = previous_business_date(ctx)
    run = reconcile(ctx.database, receipt_settings(ctx.app.config), day, started_by="scheduler")
    counts: dict[str, int] = json.loads(run.exception_counts or "{}")
    summary = f"business date {day}: reconciliation run {run.id} {run.status}, {sum(counts.values())} exceptions"
    if counts:
        summary += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) + ")"
    if run.status == "failed":
        raise JobFailed(f"{summary}: {getattr(run, 'error', None) or 'no error recorded'}")
    return summary


def expire_notices(ctx: JobContext) -> str:
    from notices.service import expire_overdue, settings_from_config

    settings = settings_from_config(ctx.app.config)
    # Today at run time, not at the scheduled time: a late catch-up expires what is overdue now.
    today = business_date(ctx.now, settings.timezone)
    with ctx.database.unit_of_work() as session:
        expired = expire_overdue(session, settings, today)
    return f"expired {len(expired)} notices due before {today}"


def deliver_webhooks(ctx: JobContext) -> str | None:
    from webhooks.delivery import deliver_due

    # deliver_due leases each delivery itself, so two nodes delivering at once is harmless;
    # the claim only spares the database a redundant pass.
    run = deliver_due(ctx.database.write_sessions)
    if not (run.dispatched or run.attempted):
        return None
    return (f"dispatched {run.dispatched} events, attempted {run.attempted}, "
            f"delivered {run.delivered}, failed {run.failed}")


def purge_idempotency_keys(ctx: JobContext) -> str | None:
    from core.idempotency import purge_expired

    with ctx.database.unit_of_work() as session:
        keys = purge_expired(session, ctx.now)
        runs = prune_job_runs(session, ctx.jobs, ctx.now)
    if not (keys or runs):
        return None
    return f"purged {keys} idempotency keys, {runs} old job runs"


def prune_job_runs(session: Session, jobs: Sequence[Job], now: datetime) -> int:
    """Delete the claims of frequent jobs once they are of no use (8,640 a day for webhooks)."""
    removed = 0
    for job in jobs:
        if job.keep_runs is not None:
            result: Any = session.execute(delete(JobRun).where(
                JobRun.job == job.name, JobRun.scheduled_for < now - job.keep_runs))
            removed += int(result.rowcount or 0)
    return removed


def anchor_audit(ctx: JobContext) -> str:
    """Record and publish the audit chain head of the previous business date (core.audit_anchors)."""
    from core.audit_anchors import anchor_audit_day

    day = previous_business_date(ctx)
    with ctx.database.unit_of_work() as session:
        anchor = anchor_audit_day(session, str(ctx.app.config["FEESVC_AUDIT_KEY"]), day, timezone=ctx.timezone,
                                  now=ctx.now)
    return f"business date {day}: audit anchor at entry {anchor.last_seq} ({anchor.entries} entries)"


DEFAULT_JOBS: tuple[Job, ...] = (
    Job("expire-notices", expire_notices, {"hour": "0", "minute": "5"},
        catch_up=timedelta(days=1), stale_after=timedelta(hours=1)),
    # Each missed night is anchored (oldest first: each verifies the chain from the one before).
    Job("anchor-audit", anchor_audit, {"hour": "0", "minute": "15"},
        catch_up=timedelta(days=7), catch_up_each=True, stale_after=timedelta(hours=1)),
    Job("reconcile", reconcile_previous_day, {"hour": "1", "minute": "30"},
        catch_up=timedelta(days=7), catch_up_each=True, stale_after=timedelta(hours=6)),
    Job("deliver-webhooks", deliver_webhooks, {"second": "*/10"}, keep_runs=timedelta(days=1), quiet=True),
    Job("purge-idempotency-keys", purge_idempotency_keys, {"minute": "0"}, keep_runs=timedelta(days=30)),
)


# -- scheduled times ------------------------------------------------------------------------


def fire_times(trigger: CronTrigger, after: datetime, until: datetime) -> list[datetime]:
    """The trigger's scheduled times in (after, until], oldest first, in UTC whole seconds."""
    times: list[datetime] = []
    moment: datetime | None = trigger.get_next_fire_time(None, after)
    while moment is not None and moment <= until:
        if moment > after:
            times.append(normalise(moment))
        # Cron times are whole seconds, so the next one is at least a second later.
        moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
    return times


def latest_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The most recent scheduled time at or before now, looking back in widening windows so
    that a 10-second job does not enumerate a day of times."""
    for lookback in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=8),
                     timedelta(days=367)):
        times = fire_times(trigger, now - lookback, now)
        if times:
            return times[-1]
    return None


def normalise(moment: datetime) -> datetime:
    """UTC, whole seconds: the same scheduled time is the same value on every node."""
    return moment.astimezone(UTC).replace(microsecond=0)


# -- claiming and running -------------------------------------------------------------------


def default_node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runner:
    """Claims and runs job runs; APScheduler (or --once) only tells it when to look."""

    app: Flask
    jobs: tuple[Job, ...] = DEFAULT_JOBS
    now: Callable[[], datetime] = utcnow
    node: str = field(default_factory=default_node_name)

    def __post_init__(self) -> None:
        self.active: set[str] = set()  # jobs running now, for the shutdown message
        self._active_lock = threading.Lock()
        self.database: Database = self.app.extensions["db"]
        self.timezone = str(self.app.config["FEESVC_TIMEZONE"])
        self.triggers = {job.name: job.trigger(self.timezone) for job in self.jobs}

    # The claim: an INSERT under the unique (job, scheduled_for), committed before the work, with
    # a lease (core/leases.py) taken before that commit and held until the outcome is recorded.
    def claim(self, job: Job, scheduled_for: datetime) -> tuple[int, Lease] | None:
        """This node's claim on the run and its lease, or None when another live node has it."""
        lease: Lease | None = None
        try:
            with self.database.unit_of_work() as session:
                # ON CONFLICT DO NOTHING rather than catching IntegrityError: the same claim by the
                # unique constraint (a concurrent insert not yet committed makes this one wait for
                # it, then do nothing), without PostgreSQL logging a duplicate-key ERROR for every
                # node that loses, which for the 10-second job would be most of the server's log.
                connection = session.connection()
                insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
                run_id: int | None = connection.execute(
                    insert(JobRun).values(job=job.name, scheduled_for=scheduled_for, claimed_by=self.node,
                                          claimed_at=self.now(), status=RUNNING)
                    .on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
                    .returning(JobRun.id)).scalar()
                if run_id is not None:
                    lease = acquire_lease(self.database, JOB_RUN_SPACE, run_id, wait=True)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        if run_id is not None and lease is not None:
            return run_id, lease
        return self._take_over_abandoned(job, scheduled_for)

    def _abandoned(self, run: JobRun, job: Job) -> bool:
        return holder_is_gone(self.database, JOB_RUN_SPACE, run.id, run.claimed_by, normalise(run.claimed_at),
                              self.now(), job.stale_after)

    def _take_over_abandoned(self, job: Job, scheduled_for: datetime) -> tuple[int, Lease] | None:
        """Take over a claim still 'running' whose process is gone (SIGKILL, power loss): the
        lease says so at once, so a live run is never taken over however long it takes."""
        with self.database.reading() as session:
            row = session.scalars(select(JobRun).where(
                JobRun.job == job.name, JobRun.scheduled_for == scheduled_for, JobRun.status == RUNNING)).first()
        if row is None:
            return None
        run_id, previous = row.id, row.claimed_by
        lease: Lease | None
        if uses_advisory_locks(self.database):
            # Obtaining the lease is the proof that its holder is gone, and makes this node the holder.
            lease = acquire_lease(self.database, JOB_RUN_SPACE, run_id, wait=False)
        else:
            lease = Lease(None) if self._abandoned(row, job) else None
        if lease is None:
            return None
        try:
            # Conditional on the holder the check judged: of two nodes that both found it gone,
            # the second finds the row changed and takes nothing.
            with self.database.unit_of_work() as session:
                result: Any = session.execute(
                    update(JobRun)
                    .where(JobRun.id == run_id, JobRun.status == RUNNING, JobRun.claimed_by == previous)
                    .values(claimed_by=self.node, claimed_at=self.now(),
                            result=f"taken over from {previous}: its process is gone"))
                taken = result.rowcount == 1
        except BaseException:
            lease.release()
            raise
        if not taken:
            lease.release()
            return None
        log.warning("%s %s: the process of claim %s (%s) is gone; taken over", job.name, self._show(scheduled_for),
                    run_id, previous)
        return int(run_id), lease

    def claimed_by(self, job: Job, scheduled_for: datetime) -> str | None:
        with self.database.reading() as session:
            return session.scalar(select(JobRun.claimed_by).where(
                JobRun.job == job.name, JobRun.scheduled_for == scheduled_for))

    def finish(self, run_id: int, status: str, result: str) -> None:
        with self.database.unit_of_work() as session:
            # Only while the claim is still this node's: a node cut off long enough to be taken
            # over must not overwrite the outcome of the node that redid the run.
            recorded: Any = session.execute(update(JobRun).where(
                JobRun.id == run_id, JobRun.claimed_by == self.node, JobRun.status == RUNNING).values(
                status=status, finished_at=self.now(), result=result[:RESULT_MAX_CHARS]))
        if recorded.rowcount != 1:
            log.warning("claim %s is no longer this node's (taken over); outcome %s not recorded", run_id, status)

    def run(self, job: Job, scheduled_for: datetime) -> str:
        """Claim the run and do it; returns 'succeeded', 'failed' or 'skipped'. Never raises
        (short of KeyboardInterrupt): one job's failure must not stop the scheduler."""
        when = self._show(scheduled_for)
        routine = logging.DEBUG if job.quiet else logging.INFO
        try:
            claimed = self.claim(job, scheduled_for)
        except Exception:
            log.exception("%s %s: could not claim the run (database unavailable?)", job.name, when)
            return FAILED
        if claimed is None:
            try:
                other = self.claimed_by(job, scheduled_for)
            except Exception:
                other = "?"
            log.log(routine, "%s %s: skipped, claimed by %s", job.name, when, other)
            return "skipped"
        run_id, lease = claimed
        try:
            return self._run_claimed(job, scheduled_for, run_id)
        finally:
            lease.release()

    def _run_claimed(self, job: Job, scheduled_for: datetime, run_id: int) -> str:
        when = self._show(scheduled_for)
        routine = logging.DEBUG if job.quiet else logging.INFO
        log.log(routine, "%s %s: running (claim %s)", job.name, when, run_id)
        ctx = JobContext(app=self.app, database=self.database, job=job.name, scheduled_for=scheduled_for,
                         now=self.now(), jobs=self.jobs)
        with self._active_lock:
            self.active.add(job.name)
        try:
            with self.app.app_context():
                summary = job.func(ctx)
        except Exception as exc:
            log.exception("%s %s: failed", job.name, when)
            self._record(job, run_id, FAILED, f"{type(exc).__name__}: {exc}")
            return FAILED
        finally:
            with self._active_lock:
                self.active.discard(job.name)
        self._record(job, run_id, SUCCEEDED, summary or NOTHING_TO_DO)
        log.log(logging.INFO if summary or not job.quiet else logging.DEBUG,
                "%s %s: succeeded: %s", job.name, when, summary or NOTHING_TO_DO)
        return SUCCEEDED

    def _record(self, job: Job, run_id: int, status: str, result: str) -> None:
        try:
            self.finish(run_id, status, result)
        except Exception:
            # The claim stays 'running'; once this process is gone a later catch-up takes it over.
            log.exception("%s: could not record the outcome of claim %s (%s)", job.name, run_id, status)

    def fire(self, job: Job) -> None:
        """Called by APScheduler when a job's time comes: the run is the latest scheduled time,
        which is the same on every node whatever the wake-up delay."""
        scheduled_for = latest_fire_time(self.triggers[job.name], self.now())
        if scheduled_for is not None:
            self.run(job, scheduled_for)

    # -- catch-up --

    def pending(self, job: Job, now: datetime, *, routine: bool) -> list[datetime]:
        """Scheduled times of this job that nobody claimed: the catch-up window's (every one, or
        the latest), or with routine=True, for a job without catch-up, its latest time."""
        trigger = self.triggers[job.name]
        if job.catch_up is not None:
            candidates = fire_times(trigger, now - job.catch_up, now)
        elif routine:
            latest = latest_fire_time(trigger, now)
            candidates = [latest] if latest is not None else []
        else:
            return []
        if not candidates:
            return []
        with self.database.reading() as session:
            rows = list(session.scalars(select(JobRun).where(
                JobRun.job == job.name, JobRun.scheduled_for >= candidates[0],
                JobRun.scheduled_for <= candidates[-1])))
        # A claim whose process is gone is as good as missed: catch-up takes it over.
        claimed = {normalise(r.scheduled_for) for r in rows if r.status != RUNNING or not self._abandoned(r, job)}
        if job.catch_up is not None and not job.catch_up_each:
            # Only the latest matters (e.g. expiry judges by today); an older missed run whose
            # successor happened is not missed in effect.
            candidates = candidates[-1:]
        return [t for t in candidates if t not in claimed]

    def catch_up(self, *, routine: bool = False) -> int:
        """Run every pending run, oldest first across jobs; returns how many failed (a database
        that cannot be read counts as one failure)."""
        now = self.now()
        try:
            self.sweep_abandoned_reconciliations()
        except Exception:
            log.exception("catch-up: could not sweep abandoned reconciliation runs")
        try:
            todo = sorted((t, index) for index, job in enumerate(self.jobs)
                          for t in self.pending(job, now, routine=routine))
        except Exception:
            log.exception("catch-up: could not read job_runs (database unavailable?)")
            return 1
        if todo:
            log.info("catch-up: %d runs to do: %s", len(todo),
                     ", ".join(f"{self.jobs[i].name} {self._show(t)}" for t, i in todo))
        else:
            log.info("catch-up: nothing missed")
        return sum(self.run(self.jobs[index], scheduled_for) == FAILED for scheduled_for, index in todo)

    def sweep_abandoned_reconciliations(self) -> None:
        """Runs of any date left 'running' by a killed process (the scheduler's or a web
        worker's) are marked failed; the nightly ones are then redone by the catch-up."""
        from reconciliation.service import sweep_abandoned_runs

        with self.database.unit_of_work() as session:
            swept = sweep_abandoned_runs(self.database, session)
        if swept:
            log.warning("catch-up: reconciliation runs %s were left running by a process that is gone; "
                        "marked failed", ", ".join(map(str, swept)))

    def _show(self, moment: datetime) -> str:
        return local(moment, self.timezone).strftime("%Y-%m-%d %H:%M:%S %Z")


# -- the process ----------------------------------------------------------------------------


class SchedulerProcess:
    """The foreground scheduler: APScheduler wakes the runner; SIGTERM/SIGINT stop it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.executor = ThreadPoolExecutor(max_workers=8)
        self.scheduler = BlockingScheduler(
            timezone=zone(runner.timezone),
            jobstores={"default": MemoryJobStore()},
            executors={"default": self.executor},
            # coalesce: a node that slept through several times runs once (fire() takes the
            # latest time); no misfire limit, since fire() decides what the run is.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for job in runner.jobs:
            self.scheduler.add_job(runner.fire, runner.triggers[job.name], args=[job], id=job.name, name=job.name)
        # The catch-up runs on the executor, so that a week of missed reconciliations does not
        # hold up webhook delivery.
        self.scheduler.add_job(runner.catch_up, "date", id="catch-up", name="catch-up")
        self._stopping = False

    def serve(self) -> None:
        now = self.runner.now()
        for job in self.runner.jobs:
            upcoming = self.runner.triggers[job.name].get_next_fire_time(None, now)
            log.info("job %s: cron %s (%s), next %s", job.name, dict(job.cron), self.runner.timezone,
                     self.runner._show(upcoming) if upcoming else "never")
        log.info("scheduler started on %s", self.runner.node)
        self.scheduler.start()  # blocks until stop()
        if self.runner.active:
            log.info("waiting for %s to finish (a second signal exits at once)",
                     ", ".join(sorted(self.runner.active)))
        # A running job finishes and records its outcome before the process exits: killed, it
        # would leave its claim 'running' until another scheduler takes it over.
        self.executor.shutdown(wait=True)

    def stop(self) -> None:
        if self.scheduler.state != STATE_STOPPED:
            # wait=False: the signal handler runs on the main thread, which must return to let
            # start() exit; serve() then waits for the running jobs.
            self.scheduler.shutdown(wait=False)

    def handle_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            log.warning("second %s: exiting now; unfinished claims are taken over later",
                        signal.Signals(signum).name)
            os._exit(128 + signum)
        self._stopping = True
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.stop()


def _stdout_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s scheduler %(levelname)s %(message)s"))
    return handler


def run_scheduler(app: Flask, *, once: bool = False, jobs: Sequence[Job] | None = None,
                  now: Callable[[], datetime] | None = None) -> int:
    """Run the jobs in the foreground until SIGTERM/SIGINT; with once=True, catch up, run each
    job whose latest scheduled time nobody claimed, and return (for tests and cron). Returns the
    number of runs that failed (always 0 for the foreground scheduler, which logs and goes on).

    jobs and now replace the job table and the clock (tests)."""
    runner = Runner(app, jobs=tuple(jobs) if jobs is not None else DEFAULT_JOBS, now=now or utcnow)
    handler = _stdout_handler()
    log.addHandler(handler)
    # The app's root handler writes to stderr; the scheduler's account of itself goes to stdout
    # once, not twice.
    propagate, level = log.propagate, log.level
    log.propagate = False
    log.setLevel(logging.INFO)
    # APScheduler logs every execution at INFO (8,640 a day for webhooks) to the root handler;
    # the runner logs what matters, and APScheduler's warnings (e.g. a run skipped because the
    # previous one is still going) still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        if once:
            return runner.catch_up(routine=True)
        process = SchedulerProcess(runner)
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                current = signal.getsignal(signum)
                # A shell starts background commands with SIGINT ignored (`flask scheduler &`);
                # respect that and leave stopping to the SIGTERM it is sent.
                if current is signal.SIG_IGN:
                    continue
                previous[signum] = current
                signal.signal(signum, process.handle_signal)
        try:
            process.serve()
        finally:
            for restored, old in previous.items():
                signal.signal(restored, old)
        log.info("scheduler stopped")
        return 0
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = propagate, level
