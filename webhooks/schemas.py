"""The callback body of API.md (bank → us). Unknown fields are ignored: banks add their own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from core.money import MAX_AMOUNT
from core.schemas import text

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


class Moment(fields.AwareDateTime):
    """An RFC 3339 time with an offset, in a range that can be stored (0001-01-01+08:00 cannot be
    turned into UTC) and that a bank could mean."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            in_range = EARLIEST <= moment.astimezone(UTC) <= LATEST
        except OverflowError:
            in_range = False
        if not in_range:
            raise ValidationError("须在 2000–2999 年之间。")
        return moment


class CallbackDataIn(Schema):
    class Meta:
        unknown = EXCLUDE

    notice_number = text(64, required=True)
    amount = fields.Integer(required=True, strict=True,
                            validate=validate.Range(min=1, max=MAX_AMOUNT, error="须为 {min}–{max} 的整数（分）。"))
    currency = fields.String(required=True, validate=validate.Equal("CNY", error="只接受 CNY。"))
    paid_at = Moment(required=True)
    bank_reference = text(64, required=True)
    payer_name = text(100, allow_none=True)
    payer_account = text(64, allow_none=True)


class CallbackIn(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("payment.succeeded",
                                                               error="只接受 payment.succeeded。"))
    timestamp = Moment(required=True)
    data = fields.Nested(CallbackDataIn, required=True)
