"""Field types shared by every package's marshmallow schemas (API.md input limits)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate

from core.clock import rfc3339
from core.money import MAX_AMOUNT


class Trimmed(fields.String):
    """A string with surrounding whitespace removed; blank counts as missing when required."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("不能包含空字符。")
        return text.strip()


def text(max_length: int, *, required: bool = False, **kwargs: Any) -> Trimmed:
    min_length = 1 if required else 0
    return Trimmed(
        required=required,
        validate=validate.Length(min=min_length, max=max_length,
                                 error="长度须在 {min}–{max} 个字符之间。"),
        **kwargs,
    )


def money(**kwargs: Any) -> fields.Integer:
    # strict: marshmallow would otherwise accept "5" and 5.0 and truncate 5.5 (PITFALLS.md).
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_AMOUNT), **kwargs)


class Moment(fields.DateTime):
    """RFC 3339 in the service's time zone."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return rfc3339(value, current_app.config["FEESVC_TIMEZONE"])


class DepartmentOut(Schema):
    code = fields.String()
    name = fields.String()


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=200))
