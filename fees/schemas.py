from __future__ import annotations

from marshmallow import Schema, fields

from core.schemas import DepartmentOut, IsoDate


class FeeScheduleArgs(Schema):
    on = IsoDate(metadata={"description": "日期 YYYY-MM-DD（默认今天）"})


class FeeItemOut(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    department = fields.Nested(DepartmentOut, required=True)
    unit = fields.String(required=True)
    amount = fields.Integer(required=True, metadata={"description": "以分计"})
    currency = fields.Constant("CNY")
    legal_basis = fields.String(required=True)
    effective_from = fields.Date(required=True)
    effective_to = fields.Date(allow_none=True)


class FeeScheduleOut(Schema):
    on = fields.Date(required=True)
    items = fields.List(fields.Nested(FeeItemOut), required=True)
