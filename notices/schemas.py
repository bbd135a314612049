from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.schemas import DepartmentOut, IsoDate, Moment, PageArgs, money, text
from notices.models import Notice, NoticeStatus
from notices.numbers import group_digits


class PayerIn(Schema):
    name = text(100, required=True)
    id_number = text(64, allow_none=True)


class LineIn(Schema):
    fee_code = text(32, required=True)
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=100_000,
                                                      error="数量须为 {min}–{max} 的整数。"))
    override_amount = money(allow_none=True)
    override_reason = text(500, allow_none=True)

    @validates_schema
    def _override_pair(self, data: dict[str, Any], **_kwargs: Any) -> None:
        has_amount = data.get("override_amount") is not None
        has_reason = bool(data.get("override_reason"))
        if has_amount and not has_reason:
            raise ValidationError("减免必须填写原因。", field_name="override_reason")
        if has_reason and not has_amount:
            raise ValidationError("填写减免原因时必须给出减免后的金额。", field_name="override_amount")


class NoticeIn(Schema):
    department = text(32, required=True)
    case_reference = text(64, allow_none=True)
    payer = fields.Nested(PayerIn, required=True)
    items = fields.List(fields.Nested(LineIn), required=True,
                        validate=validate.Length(min=1, max=50, error="收费项目须为 {min}–{max} 项。"))
    due_date = IsoDate(allow_none=True)


class CancelIn(Schema):
    reason = text(500, required=True)


class NoticeListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in NoticeStatus],
                                                     error="须为以下之一：{choices}。"))
    from_ = IsoDate(data_key="from")
    to = IsoDate()
    q = text(100)


class LineOut(Schema):
    fee_code = fields.String(required=True)
    name = fields.String(required=True)
    unit = fields.String()
    quantity = fields.Integer(required=True)
    unit_amount = fields.Integer(required=True)
    amount = fields.Integer(required=True)
    override_reason = fields.String(allow_none=True)


class PayerOut(Schema):
    name = fields.String(required=True)
    id_number = fields.String(allow_none=True)


class NoticeOut(Schema):
    number = fields.String(required=True)
    number_display = fields.String(metadata={"description": "四位一组，便于人读"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in NoticeStatus]))
    department = fields.Nested(DepartmentOut, required=True)
    case_reference = fields.String(allow_none=True)
    payer = fields.Nested(PayerOut, required=True)
    items = fields.List(fields.Nested(LineOut), required=True)
    total = fields.Integer(required=True)
    currency = fields.String(required=True)
    issued_at = Moment(required=True)
    due_date = fields.Date(required=True)
    issued_by = fields.String(required=True)
    cancelled_at = Moment(allow_none=True)
    cancel_reason = fields.String(allow_none=True)


class NoticePageOut(Schema):
    items = fields.List(fields.Nested(NoticeOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


def notice_view(notice: Notice, today: date) -> dict[str, Any]:
    """The notice as API.md shows it; `status` reads `expired` once past due, unpaid."""
    return {
        "number": notice.number,
        "number_display": group_digits(notice.number),
        "status": notice.status_on(today),
        "department": notice.department,
        "case_reference": notice.case_reference,
        "payer": {"name": notice.payer_name, "id_number": notice.payer_id_number},
        "items": notice.lines,
        "total": notice.total,
        "currency": notice.currency,
        "issued_at": notice.issued_at,
        "due_date": notice.due_date,
        "issued_by": notice.issued_by.username,
        "cancelled_at": notice.cancelled_at,
        "cancel_reason": notice.cancel_reason,
    }
