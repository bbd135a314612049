"""The finance desk (对账工作台): reconciliation runs with their totals, a run's exceptions, each
exception with its evidence and the actions finance takes on it, and bank statement uploads.

Finance works here; an admin may read. Every POST is a form with its CSRF token; every refusal is
a message on the page (the service's domain errors), never an error page of its own."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, BinaryIO, cast

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.auth import actor_of, audit_key, page_roles, page_user
from core.clock import today, utcnow
from core.db import get_db, reading, unit_of_work
from core.errors import DomainError
from core.models import Department, Role
from fees.models import FeeItem
from notices.models import Notice, NoticeLine
from notices.numbers import group_digits
from payments.models import CashierShift, Payment, PaymentMethod
from receipts.models import Certificate, Receipt
from receipts.service import receipt_settings
from reconciliation import service
from reconciliation.models import (
    BankStatement,
    ExceptionStatus,
    ReconciliationException,
    ReconciliationRun,
    RunStatus,
    StatementLine,
)
from reconciliation.statements import import_statement, list_statements
from reconciliation.texts import TYPE_LABELS, describe, severity, type_label
from webhooks.models import BankClient

log = logging.getLogger(__name__)

bp = Blueprint("finance", __name__, template_folder="templates")
READERS = (Role.FINANCE, Role.ADMIN)
NOTE_MAX = 500  # resolution_note and refund_due_reason are 500 characters
STATUS_FILTERS = ("all", "open", "resolved")
STALE_RUN = timedelta(hours=1)  # a run takes seconds to minutes


class CsrfOnly(FlaskForm):
    pass


def _today() -> date:
    return today(current_app.config["FEESVC_TIMEZONE"])


def notice_label(number: str | None) -> str:
    """A notice number as people read it (groups of four) when it is one; else as it was given."""
    if not number:
        return ""
    return group_digits(number) if len(number) == 20 and number.isascii() and number.isdigit() else number


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"notice_label": notice_label, "type_label": type_label, "severity": severity}


def _message(error: DomainError) -> str:
    """The domain error's sentence, followed by its field errors when it has any."""
    text = error.detail or str(error.title)
    fields = error.extra.get("errors") or {}
    extra = [message for messages in fields.values() for message in messages if message not in text]
    return f"{text.rstrip('。')}：{'；'.join(extra)}" if extra else text


# ----------------------------------------------------------------------------------- the desk


def _live_exception_counts(session: Session, runs: list[ReconciliationRun]) -> dict[int, tuple[int, int]]:
    """Run id → (open, all) exceptions of its business date as its page lists them now."""
    if not runs:
        return {}
    e, r = ReconciliationException, ReconciliationRun
    rows = session.execute(
        select(r.id, e.status, func.count())
        .join(e, (e.business_date == r.business_date) & (e.first_run_id <= r.id))
        .where(r.id.in_([run.id for run in runs]))
        .group_by(r.id, e.status)
    )
    counts: dict[int, list[int]] = {run.id: [0, 0] for run in runs}
    for run_id, status, n in rows:
        if status == ExceptionStatus.OPEN:
            counts[run_id][0] += int(n)
        counts[run_id][1] += int(n)
    return {run_id: (pair[0], pair[1]) for run_id, pair in counts.items()}


def _working(run: ReconciliationRun) -> bool:
    """Running and recent: a run left 'running' by a process that died is not waited for."""
    return run.status == RunStatus.RUNNING and run.started_at > utcnow() - STALE_RUN


def _render_desk(*, run_error: str | None = None, upload_error: str | None = None, status: int = 200) -> Any:
    yesterday = _today() - timedelta(days=1)
    imported_id = request.args.get("statement", "")
    with reading() as session:
        runs = sorted(service.list_runs(session, limit=100), key=lambda run: (run.business_date, run.id),
                      reverse=True)
        imported = (session.get(BankStatement, int(imported_id))
                    if imported_id.isascii() and imported_id.isdigit() and len(imported_id) < 10 else None)
        banks = list(session.scalars(select(BankClient).where(BankClient.active.is_(True))
                                     .order_by(BankClient.code)))
        return render_template(
            "reconciliation/index.html", runs=runs, totals={run.id: service.run_totals(run) for run in runs},
            counts=_live_exception_counts(session, runs), statements=list_statements(session, limit=10),
            imported=imported, banks=banks, run_error=run_error, upload_error=upload_error, today=_today(),
            form=request.form, default_date=request.form.get("business_date") or yesterday.isoformat(),
            csrf_form=CsrfOnly(), running=any(_working(run) for run in runs),
        ), status


@bp.route("/finance")
@page_roles(*READERS)
def index() -> Any:
    return _render_desk()


@bp.route("/finance/runs", methods=["POST"])
@page_roles(Role.FINANCE)
def start_run() -> Any:
    clerk = page_user()
    if not CsrfOnly().validate_on_submit():
        return _render_desk(run_error=_("页面已过期，请刷新后重试。"), status=400)
    try:
        business_date = date.fromisoformat(request.form.get("business_date", "").strip())
    except ValueError:
        return _render_desk(run_error=_("请选择要对账的业务日期。"), status=422)
    try:
        run = service.reconcile(get_db(), receipt_settings(current_app.config), business_date,
                                started_by=clerk.username)
    except DomainError as error:
        return _render_desk(run_error=_message(error), status=error.status)
    except OperationalError:
        raise  # the database is unreachable: the 503 page says so
    except Exception:
        # The service logged it and recorded the run as failed, with its error, in the list below.
        # The page answers 200: the request did its job, which was to record the run.
        message = _("%(d)s 的对账未能完成，已记为失败（原因见下方对账记录）。请稍后重试或联系管理员。",
                    d=business_date.isoformat())
        return _render_desk(run_error=message)
    flash(_("%(d)s 对账完成。", d=business_date.isoformat()), "ok")
    return redirect(url_for("finance.run", run_id=run.id), 303)


@bp.route("/finance/statements", methods=["POST"])
@page_roles(Role.FINANCE)
def upload_statement() -> Any:
    clerk = page_user()
    if not CsrfOnly().validate_on_submit():
        return _render_desk(upload_error=_("页面已过期，请刷新后重试。"), status=400)
    upload = request.files.get("file")
    bank_code = request.form.get("bank_code", "").strip()
    if not bank_code:
        return _render_desk(upload_error=_("请选择对账单所属的银行。"), status=422)
    if upload is None or not upload.filename:
        return _render_desk(upload_error=_("请选择要导入的对账单文件（camt.053 XML 或 CSV）。"), status=422)
    try:
        with unit_of_work() as session:
            result = import_statement(session, audit_key(), actor_of(clerk), bank_code=bank_code,
                                      stream=cast(BinaryIO, upload.stream), filename=upload.filename,
                                      timezone=current_app.config["FEESVC_TIMEZONE"])
            statement_id = result.statement.id
    except DomainError as error:  # malformed or contradicting: refused whole, nothing stored
        return _render_desk(upload_error=_message(error), status=error.status)
    return redirect(url_for("finance.index", statement=statement_id, _anchor="import-result"), 303)


# ------------------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class RunFilter:
    type: str
    status: str
    department: int | None
    errors: tuple[str, ...]

    def service_filter(self) -> service.ExceptionFilter:
        return service.ExceptionFilter(type=self.type or None, status=None if self.status == "all" else self.status,
                                       department_id=self.department)


def _run_filter(departments: list[Department]) -> RunFilter:
    """The GET parameters, each one ignored (and said so) when it is not one of the choices."""
    errors: list[str] = []
    kind = request.args.get("type", "")
    if kind and kind not in TYPE_LABELS:
        errors.append(_("差异类型“%(t)s”不存在，已显示全部类型。", t=kind[:40]))
        kind = ""
    status = request.args.get("status", "") or "all"
    if status not in STATUS_FILTERS:
        errors.append(_("处理状态只能是待处理、已处理或全部，已显示全部。"))
        status = "all"
    text = request.args.get("department", "")
    department = None
    if text:
        known = {str(d.id): d.id for d in departments}
        if text in known:
            department = known[text]
        else:
            errors.append(_("没有所选的部门，已显示全部部门。"))
    return RunFilter(kind, status, department, tuple(errors))


@bp.route("/finance/runs/<int(max=2147483647):run_id>")
@page_roles(*READERS)
def run(run_id: int) -> Any:
    with reading() as session:
        found = service.find_run(session, run_id)
        departments = list(session.scalars(select(Department).order_by(Department.code)))
        flt = _run_filter(departments)
        exceptions = service.list_exceptions(session, found, flt.service_filter())
        latest = service.list_runs(session, found.business_date, limit=1)
        return render_template(
            "reconciliation/run.html", run=found, totals=service.run_totals(found),
            counts=service.run_exception_counts(found), exceptions=exceptions, flt=flt,
            departments=departments, department_names={d.id: d.name for d in departments},
            type_labels=TYPE_LABELS, describe=describe,
            newer=latest[0] if latest and latest[0].id != found.id else None, working=_working(found),
        )


def _report(run_id: int, kind: str) -> Response:
    from reconciliation import reports  # written beside this module; the API imports it lazily too

    with reading() as session:
        found = service.find_run(session, run_id)
        if kind == "pdf":
            body: Any = reports.render_pdf(session, found, current_app.config)
        else:
            body = reports.render_csv(session, found)
    name = f"reconciliation-{found.business_date.isoformat()}-{found.id}.{kind}"
    if kind == "pdf":
        return Response(body, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})
    return Response(body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.route("/finance/runs/<int(max=2147483647):run_id>/report.pdf")
@page_roles(*READERS)
def report_pdf(run_id: int) -> Response:
    return _report(run_id, "pdf")


@bp.route("/finance/runs/<int(max=2147483647):run_id>/report.csv")
@page_roles(*READERS)
def report_csv(run_id: int) -> Response:
    return _report(run_id, "csv")


# ------------------------------------------------------------------------------ an exception


@dataclass
class Evidence:
    """Whatever the exception has ids for, loaded for the page."""

    notice: Notice | None = None
    payment: Payment | None = None
    payment_matches_line: bool = False  # found by the line's bank reference, not named by the exception
    receipt: Receipt | None = None
    line: StatementLine | None = None
    notice_line: NoticeLine | None = None
    priced_version: FeeItem | None = None  # the schedule row the notice line was priced from
    in_force_version: FeeItem | None = None  # the schedule row in force on the notice's date
    certificate: Certificate | None = None
    shift: CashierShift | None = None


def _evidence(session: Session, found: ReconciliationException) -> Evidence:
    ev = Evidence()
    if found.statement_line_id is not None:
        ev.line = session.get(StatementLine, found.statement_line_id)
    if found.notice_id is not None:
        ev.notice = session.get(Notice, found.notice_id)
    elif found.notice_number and len(found.notice_number) == 20:
        ev.notice = session.scalar(select(Notice).where(Notice.number == found.notice_number))
    if found.payment_id is not None:
        ev.payment = session.get(Payment, found.payment_id)
    elif ev.line is not None:  # e.g. the payment confirmed from this line since
        ev.payment = session.scalar(select(Payment).where(Payment.bank_code == ev.line.bank_code,
                                                          Payment.bank_reference == ev.line.bank_reference))
        ev.payment_matches_line = ev.payment is not None
    if found.receipt_number:
        ev.receipt = session.scalar(select(Receipt).where(Receipt.number == found.receipt_number))
    elif ev.payment is not None:
        ev.receipt = session.scalar(select(Receipt).where(Receipt.payment_id == ev.payment.id))
    if found.notice_line_id is not None:
        ev.notice_line = session.get(NoticeLine, found.notice_line_id)
        if ev.notice_line is not None:
            ev.priced_version = session.get(FeeItem, ev.notice_line.fee_item_id)
    if found.fee_item_id is not None:
        ev.in_force_version = session.get(FeeItem, found.fee_item_id)
    if found.certificate_id is not None:
        ev.certificate = session.get(Certificate, found.certificate_id)
    if found.shift_id is not None:
        ev.shift = session.get(CashierShift, found.shift_id)
    return ev


def _render_exception(exception_id: int, *, error: str | None = None, status: int = 200) -> Any:
    with reading() as session:
        found = service.find_exception(session, exception_id)
        ev = _evidence(session, found)
        department = session.get(Department, found.department_id) if found.department_id else None
        confirmed = request.args.get("receipt", "")
        confirmed_receipt = (session.scalar(select(Receipt).where(Receipt.number == confirmed))
                             if confirmed and len(confirmed) <= 16 else None)
        return render_template(
            "reconciliation/exception.html", e=found, ev=ev, department=department, detail=describe(found),
            can_confirm=service.can_confirm_from_line(found) and found.statement_line_id is not None,
            can_refund=service.can_mark_refund_due(found, ev.payment), error=error, form=request.form,
            run=session.get(ReconciliationRun, found.last_run_id), confirmed_receipt=confirmed_receipt,
            csrf_form=CsrfOnly(), group_digits=group_digits, methods=list(PaymentMethod),
        ), status


@bp.route("/finance/exceptions/<int(max=2147483647):exception_id>")
@page_roles(*READERS)
def exception(exception_id: int) -> Any:
    return _render_exception(exception_id)


def _note(field: str, missing: str) -> tuple[str, str | None]:
    text = request.form.get(field, "").strip()
    if not text:
        return text, missing
    if len(text) > NOTE_MAX:
        return text, _("说明不能超过 %(n)d 字。", n=NOTE_MAX)
    return text, None


@bp.route("/finance/exceptions/<int(max=2147483647):exception_id>/resolve", methods=["POST"])
@page_roles(Role.FINANCE)
def resolve(exception_id: int) -> Any:
    if not CsrfOnly().validate_on_submit():
        return _render_exception(exception_id, error=_("页面已过期，请刷新后重试。"), status=400)
    note, problem = _note("note", _("请填写处理说明：查明的原因和所做的处理。"))
    if problem:
        return _render_exception(exception_id, error=problem, status=422)
    try:
        with unit_of_work() as session:
            service.resolve_exception(session, audit_key(), page_user(), exception_id, note)
    except DomainError as error:
        return _render_exception(exception_id, error=_message(error), status=error.status)
    flash(_("差异已处理。"), "ok")
    return redirect(url_for("finance.exception", exception_id=exception_id), 303)


@bp.route("/finance/exceptions/<int(max=2147483647):exception_id>/confirm", methods=["POST"])
@page_roles(Role.FINANCE)
def confirm(exception_id: int) -> Any:
    if not CsrfOnly().validate_on_submit():
        return _render_exception(exception_id, error=_("页面已过期，请刷新后重试。"), status=400)
    try:
        with unit_of_work() as session:
            confirmation = service.confirm_from_statement_line(session, receipt_settings(current_app.config),
                                                               page_user(), exception_id)
            receipt_number = confirmation.receipt.number
    except DomainError as error:
        return _render_exception(exception_id, error=_message(error), status=error.status)
    return redirect(url_for("finance.exception", exception_id=exception_id, receipt=receipt_number), 303)


@bp.route("/finance/exceptions/<int(max=2147483647):exception_id>/refund", methods=["POST"])
@page_roles(Role.FINANCE)
def refund(exception_id: int) -> Any:
    if not CsrfOnly().validate_on_submit():
        return _render_exception(exception_id, error=_("页面已过期，请刷新后重试。"), status=400)
    reason, problem = _note("reason", _("请填写退款原因。"))
    if problem:
        return _render_exception(exception_id, error=problem, status=422)
    try:
        with unit_of_work() as session:
            service.refund_flagged_payment(session, receipt_settings(current_app.config), page_user(),
                                           exception_id, reason)
    except DomainError as error:
        return _render_exception(exception_id, error=_message(error), status=error.status)
    flash(_("已标记为待退款，差异已处理。退款给缴款人后，请在本页登记退款。"), "ok")
    return redirect(url_for("finance.exception", exception_id=exception_id), 303)
