"""JSON shapes of API.md's bank statements and reconciliation."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from core.schemas import IsoDate, Moment, text
from reconciliation.models import ExceptionStatus, ExceptionType, ReconciliationException, ReconciliationRun
from reconciliation.service import run_exception_counts, run_totals
from reconciliation.statements import ImportResult
from reconciliation.texts import describe, severity, type_label

TYPES = [t.value for t in ExceptionType]


class StatementImportOut(Schema):
    id = fields.Integer(required=True)
    bank_code = fields.String(required=True)
    format = fields.String(required=True, validate=validate.OneOf(["camt.053", "csv"]))
    version = fields.String(allow_none=True)
    lines = fields.Integer(required=True)
    new_lines = fields.Integer(required=True)
    duplicate_lines = fields.Integer(required=True)
    from_date = IsoDate(allow_none=True)
    to_date = IsoDate(allow_none=True)
    sha256 = fields.String(required=True)


def import_view(result: ImportResult) -> dict[str, Any]:
    statement = result.statement
    return {"id": statement.id, "bank_code": statement.bank_code, "format": statement.format,
            "version": statement.version, "lines": result.lines, "new_lines": result.new_lines,
            "duplicate_lines": result.duplicate_lines, "from_date": statement.from_date,
            "to_date": statement.to_date, "sha256": statement.sha256}


class RunIn(Schema):
    business_date = IsoDate(required=True, metadata={"description": "业务日期（服务时区）"})


class RunArgs(Schema):
    business_date = IsoDate()


class RunOut(Schema):
    id = fields.Integer(required=True)
    business_date = IsoDate(required=True)
    status = fields.String(required=True)
    provisional = fields.Boolean(required=True)
    started_at = Moment(required=True)
    finished_at = Moment(allow_none=True)
    started_by = fields.String(required=True)
    totals = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    exception_counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    error = fields.String(allow_none=True)


class RunListOut(Schema):
    items = fields.List(fields.Nested(RunOut), required=True)


def run_view(run: ReconciliationRun) -> dict[str, Any]:
    return {"id": run.id, "business_date": run.business_date, "status": run.status, "provisional": run.provisional,
            "started_at": run.started_at, "finished_at": run.finished_at, "started_by": run.started_by,
            "totals": run_totals(run), "exception_counts": run_exception_counts(run), "error": run.error}


class ExceptionArgs(Schema):
    type = fields.String(validate=validate.OneOf(TYPES, error="须为以下之一：{choices}。"))
    department = text(32, metadata={"description": "部门代码，如 BDC"})
    status = fields.String(validate=validate.OneOf([s.value for s in ExceptionStatus],
                                                   error="须为以下之一：{choices}。"))


class ExceptionOut(Schema):
    id = fields.Integer(required=True)
    business_date = IsoDate(required=True)
    type = fields.String(required=True)
    type_label = fields.String(required=True)
    severity = fields.String(required=True, validate=validate.OneOf(["high", "medium"]))
    notice_number = fields.String(allow_none=True)
    payment_id = fields.Integer(allow_none=True)
    receipt_number = fields.String(allow_none=True)
    statement_line_id = fields.Integer(allow_none=True)
    certificate_id = fields.Integer(allow_none=True)
    shift_id = fields.Integer(allow_none=True)
    bank_code = fields.String(allow_none=True)
    bank_reference = fields.String(allow_none=True)
    expected_amount = fields.Integer(allow_none=True)
    actual_amount = fields.Integer(allow_none=True)
    detail_code = fields.String(allow_none=True)
    detail = fields.String(required=True)
    status = fields.String(required=True)
    resolution_note = fields.String(allow_none=True)
    resolved_by = fields.String(allow_none=True)
    resolved_at = Moment(allow_none=True)
    first_run_id = fields.Integer(required=True)
    last_run_id = fields.Integer(required=True)


class ExceptionListOut(Schema):
    items = fields.List(fields.Nested(ExceptionOut), required=True)


def exception_view(found: ReconciliationException) -> dict[str, Any]:
    return {
        "id": found.id, "business_date": found.business_date, "type": found.type,
        "type_label": type_label(found.type), "severity": severity(found.type),
        "notice_number": found.notice_number, "payment_id": found.payment_id,
        "receipt_number": found.receipt_number, "statement_line_id": found.statement_line_id,
        "certificate_id": found.certificate_id, "shift_id": found.shift_id, "bank_code": found.bank_code,
        "bank_reference": found.bank_reference, "expected_amount": found.expected_amount,
        "actual_amount": found.actual_amount, "detail_code": found.detail_code, "detail": describe(found),
        "status": found.status, "resolution_note": found.resolution_note, "resolved_by": found.resolved_by,
        "resolved_at": found.resolved_at, "first_run_id": found.first_run_id, "last_run_id": found.last_run_id,
    }


class ResolveIn(Schema):
    note = text(500, required=True, metadata={"description": "处理说明"})
