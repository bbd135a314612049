"""Commands: statements import, reconcile, reconciliation runs, scheduler."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import click
from flask import Flask, current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from core.audit import Actor
from core.errors import DomainError


def register(app: Flask) -> None:
    @app.cli.command("scheduler")
    @click.option("--once", is_flag=True, help="catch up missed runs and run what is due now, then exit")
    def scheduler_command(once: bool) -> None:
        """Run the nightly jobs (reconciliation, expiry, webhook delivery, clean-up) in the foreground.
        With --once the exit status is 1 when a run failed (for cron and monitoring)."""
        from reconciliation.scheduler import run_scheduler

        failed = run_scheduler(current_app._get_current_object(), once=once)  # type: ignore[attr-defined]
        if failed:
            raise click.ClickException(_("%(n)d 个任务运行失败，详见上方日志及 job_runs 表。", n=failed))

    @app.cli.group("statements", help="银行对账单 / bank statements")
    def statements() -> None:
        pass

    @statements.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @click.option("--bank", "bank_code", required=True, help="银行代码")
    def import_command(path: str, bank_code: str) -> None:
        """Import a camt.053 or CSV statement (format detected from its content)."""
        from core.db import unit_of_work
        from reconciliation.statements import import_statement

        try:
            with open(path, "rb") as stream, unit_of_work() as session:
                result = import_statement(session, current_app.config["FEESVC_AUDIT_KEY"], Actor.system("cli"),
                                          bank_code=bank_code, stream=stream, filename=os.path.basename(path),
                                          timezone=current_app.config["FEESVC_TIMEZONE"])
        except DomainError as error:
            raise click.ClickException(_problem_text(error)) from error
        statement = result.statement
        click.echo(f"已导入对账单 #{statement.id}（{statement.format}，{statement.bank_code}，"
                   f"{statement.from_date} 至 {statement.to_date}）：共 {result.lines} 笔，新增 {result.new_lines} 笔，"
                   f"重复 {result.duplicate_lines} 笔。")

    @app.cli.command("reconcile")
    @click.option("--date", "business_date", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                  help="业务日期 YYYY-MM-DD（默认昨天）")
    def reconcile_command(business_date: datetime | None) -> None:
        """Reconcile a business date and print the counts."""
        from core.clock import today
        from core.db import get_db
        from receipts.service import receipt_settings
        from reconciliation.service import reconcile, run_exception_counts, run_totals
        from reconciliation.texts import type_label

        tz = current_app.config["FEESVC_TIMEZONE"]
        day = business_date.date() if business_date else today(tz) - timedelta(days=1)
        try:
            run = reconcile(get_db(), receipt_settings(current_app.config), day, started_by="cli")
        except DomainError as error:
            raise click.ClickException(_problem_text(error)) from error
        totals = run_totals(run)
        click.echo(f"对账 #{run.id} 业务日期 {day}{'（临时）' if run.provisional else ''}：{run.status}")
        click.echo(f"  通知书 {totals.get('notices_issued', 0)} 张；"
                   f"收费窗口缴费 {totals.get('cashier_payments', 0)} 笔，"
                   f"银行缴费 {totals.get('bank_payments', 0)} 笔，挂账 {totals.get('payments_flagged', 0)} 笔；"
                   f"对账单到账 {totals.get('statement_credit_lines', 0)} 笔，已匹配 "
                   f"{totals.get('statement_matched_lines', 0)} 笔")
        counts = run_exception_counts(run)
        click.echo(f"  差异 {sum(counts.values())} 项，未处理 {totals.get('exceptions_open', 0)} 项")
        for kind, n in sorted(counts.items()):
            click.echo(f"  {kind}\t{n}\t{type_label(kind)}")


    @app.cli.group("reconciliation", help="对账记录 / reconciliation runs")
    def reconciliation() -> None:
        pass

    @reconciliation.command("runs")
    @click.option("--date", "business_date", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                  help="只列这一业务日期 YYYY-MM-DD")
    @click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="最多列出几次")
    def runs_command(business_date: datetime | None, limit: int) -> None:
        """List reconciliation runs, newest first, with why a failed one failed."""
        from core.clock import local
        from core.db import get_db
        from reconciliation.service import list_runs

        tz = current_app.config["FEESVC_TIMEZONE"]
        with get_db().reading() as session:
            runs = list_runs(session, business_date.date() if business_date else None, limit)
        if not runs:
            click.echo(_("没有对账记录。"))
        for run in runs:
            # The operator's question after a crash is "which runs failed, and why": the reason
            # (e.g. the process that ran it is gone) is printed in full on its own line.
            started = local(run.started_at, tz).strftime("%Y-%m-%d %H:%M:%S")
            finished = local(run.finished_at, tz).strftime("%H:%M:%S") if run.finished_at else "—"
            click.echo(f"#{run.id}\t{run.business_date}{_('（临时）') if run.provisional else ''}\t"
                       f"{_RUN_STATUS[run.status]}\t{started} → {finished}\t{run.started_by}")
            if run.error:
                click.echo(f"  {run.error}")


_RUN_STATUS = {"running": _l("进行中"), "completed": _l("已完成"), "failed": _l("失败")}


def _problem_text(error: DomainError) -> str:
    text = str(error.detail or error.title)
    errors = error.extra.get("errors")
    if errors:
        text += " " + "; ".join(f"{field}: {' '.join(map(str, msgs))}" for field, msgs in errors.items())
    return text
