"""/api/v1 bank statements and reconciliation (finance): parse → service → dump."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint
from flask_smorest.fields import Upload
from marshmallow import Schema

from core.api_idempotency import idempotent
from core.audit import Actor
from core.auth import BEARER, api_roles, api_user
from core.db import get_db, reading, unit_of_work
from core.models import Role
from core.schemas import text
from receipts.service import receipt_settings
from reconciliation import service
from reconciliation.schemas import (
    ExceptionArgs,
    ExceptionListOut,
    ExceptionOut,
    ResolveIn,
    RunArgs,
    RunIn,
    RunListOut,
    RunOut,
    StatementImportOut,
    exception_view,
    import_view,
    run_view,
)
from reconciliation.statements import import_statement

blp = Blueprint("reconciliation_api", __name__, url_prefix="/api/v1", description="银行对账单与对账")

READERS = (Role.FINANCE, Role.ADMIN)


class StatementForm(Schema):
    bank_code = text(32, required=True, metadata={"description": "银行代码（banks create 登记的）"})


class StatementFile(Schema):
    file = Upload(required=True, metadata={"description": "camt.053 XML 或 CSV；格式按内容识别"})


@blp.route("/bank-statements", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent
@blp.arguments(StatementForm, location="form")
@blp.arguments(StatementFile, location="files")
@blp.response(201, StatementImportOut)
@blp.doc(security=BEARER)
def upload_statement(form: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    """Import a bank's statement; lines already imported are counted, not added again."""
    clerk = api_user(Role.FINANCE)
    upload = files["file"]
    with unit_of_work() as session:
        result = import_statement(session, current_app.config["FEESVC_AUDIT_KEY"],
                                  Actor("user", clerk.username, clerk.id), bank_code=form["bank_code"],
                                  stream=upload.stream, filename=upload.filename,
                                  timezone=current_app.config["FEESVC_TIMEZONE"])
        return import_view(result)


@blp.route("/reconciliation/runs", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent(own_transactions=True)
@blp.arguments(RunIn)
@blp.response(201, RunOut)
@blp.doc(security=BEARER)
def start_run(data: dict[str, Any]) -> dict[str, Any]:
    """Reconcile a business date; answers once the run is complete."""
    clerk = api_user(Role.FINANCE)
    run = service.reconcile(get_db(), receipt_settings(current_app.config), data["business_date"],
                            started_by=clerk.username)
    return run_view(run)


@blp.route("/reconciliation/runs", methods=["GET"])
@api_roles(*READERS)
@blp.arguments(RunArgs, location="query")
@blp.response(200, RunListOut)
@blp.doc(security=BEARER)
def list_runs(args: dict[str, Any]) -> dict[str, Any]:
    """Runs, newest first, optionally of one business date."""
    with reading() as session:
        return {"items": [run_view(run) for run in service.list_runs(session, args.get("business_date"))]}


@blp.route("/reconciliation/runs/<int(max=2147483647):run_id>", methods=["GET"])
@api_roles(*READERS)
@blp.response(200, RunOut)
@blp.doc(security=BEARER)
def get_run(run_id: int) -> dict[str, Any]:
    with reading() as session:
        return run_view(service.find_run(session, run_id))


@blp.route("/reconciliation/runs/<int(max=2147483647):run_id>/exceptions", methods=["GET"])
@api_roles(*READERS)
@blp.arguments(ExceptionArgs, location="query")
@blp.response(200, ExceptionListOut)
@blp.doc(security=BEARER)
def list_exceptions(args: dict[str, Any], run_id: int) -> dict[str, Any]:
    """The exceptions of the run's business date, each root cause once, with its resolution."""
    with reading() as session:
        run = service.find_run(session, run_id)
        department = service.department_id_of(session, args["department"]) if args.get("department") else None
        found = service.list_exceptions(session, run, service.ExceptionFilter(args.get("type"), args.get("status"),
                                                                              department))
        return {"items": [exception_view(item) for item in found]}


@blp.route("/reconciliation/exceptions/<int(max=2147483647):exception_id>/resolve", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent
@blp.arguments(ResolveIn)
@blp.response(200, ExceptionOut)
@blp.doc(security=BEARER)
def resolve(data: dict[str, Any], exception_id: int) -> dict[str, Any]:
    clerk = api_user(Role.FINANCE)
    with unit_of_work() as session:
        found = service.resolve_exception(session, current_app.config["FEESVC_AUDIT_KEY"], clerk, exception_id,
                                          data["note"])
        return exception_view(found)


@blp.route("/reconciliation/runs/<int(max=2147483647):run_id>/report.pdf", methods=["GET"])
@api_roles(*READERS)
@blp.doc(security=BEARER, responses={"200": {"content": {"application/pdf": {}}}})
def report_pdf(run_id: int) -> Response:
    from reconciliation import reports

    with reading() as session:
        run = service.find_run(session, run_id)
        pdf = reports.render_pdf(session, run, current_app.config)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="reconciliation-{run.business_date}.pdf"'})


@blp.route("/reconciliation/runs/<int(max=2147483647):run_id>/report.csv", methods=["GET"])
@api_roles(*READERS)
@blp.doc(security=BEARER, responses={"200": {"content": {"text/csv": {}}}})
def report_csv(run_id: int) -> Response:
    from reconciliation import reports

    with reading() as session:
        run = service.find_run(session, run_id)
        body = reports.render_csv(session, run)
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="reconciliation-{run.business_date}.csv"'})
