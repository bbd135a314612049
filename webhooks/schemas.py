"""The callback body of API.md (bank → us). Unknown fields are ignored: banks add their own."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from core.money import MAX_AMOUNT
from core.schemas import text


class CallbackDataIn(Schema):
    class Meta:
        unknown = EXCLUDE

    notice_number = text(64, required=True)
    amount = fields.Integer(required=True, strict=True,
                            validate=validate.Range(min=1, max=MAX_AMOUNT, error="须为 {min}–{max} 的整数（分）。"))
    currency = fields.String(required=True, validate=validate.Equal("CNY", error="只接受 CNY。"))
    paid_at = fields.AwareDateTime(required=True, format="iso")
    bank_reference = text(64, required=True)
    payer_name = text(100, allow_none=True)
    payer_account = text(64, allow_none=True)


class CallbackIn(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("payment.succeeded",
                                                               error="只接受 payment.succeeded。"))
    timestamp = fields.AwareDateTime(required=True, format="iso")
    data = fields.Nested(CallbackDataIn, required=True)
