"""Field types shared by every package's marshmallow schemas (API.md input limits)."""

from __future__ import annotations

import re
from datetime import date
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
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate such as "\ud800"
            raise ValidationError("不是有效的 UTF-8 文本。") from error
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
    amount_range = validate.Range(min=0, max=MAX_AMOUNT, error="须为 {min}–{max} 之间的整数（以分计）。")
    return fields.Integer(strict=True, validate=amount_range, **kwargs)


ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2999, 12, 31)


class IsoDate(fields.Date):
    """A calendar date written exactly `YYYY-MM-DD` (OpenAPI `format: date`, RFC 3339 full-date),
    between 1900-01-01 and 2999-12-31.

    marshmallow's Date uses `date.fromisoformat`, which on Python 3.11 also takes `20260101` and
    week dates such as `2026-W01-1`; API.md promises one spelling, so take only that one. The range
    keeps 0001-01-01 and 9999-12-31 away from time-zone arithmetic, which overflows on them.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        day = super()._deserialize(value, attr, data, **kwargs)
        if not EARLIEST_DATE <= day <= LATEST_DATE:
            raise ValidationError(f"日期须在 {EARLIEST_DATE} 至 {LATEST_DATE} 之间。")
        return day


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
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000, error="页码须为 {min}–{max}。"))
    per_page = fields.Integer(load_default=20,
                              validate=validate.Range(min=1, max=200, error="每页条数须为 {min}–{max}。"))


def localise_marshmallow_messages() -> None:
    """Field errors reach clerks and bank developers: say them in Chinese, once, for every schema."""
    fields.Field.default_error_messages.update(
        required="必填。", null="不能为空值（null）。", validator_failed="取值无效。")
    fields.Integer.default_error_messages.update(invalid="须为整数（JSON 数字，不带引号和小数）。")
    fields.Number.default_error_messages.update(invalid="须为数字。", too_large="数值过大。")
    fields.String.default_error_messages.update(invalid="须为字符串。", invalid_utf8="不是有效的 UTF-8 文本。")
    fields.Date.default_error_messages.update(invalid="须为 YYYY-MM-DD 格式的日期。")
    fields.DateTime.default_error_messages.update(invalid="须为 RFC 3339 格式的时间。")
    fields.Nested.default_error_messages.update(type="须为 JSON 对象。")
    fields.List.default_error_messages.update(invalid="须为 JSON 数组。")
    fields.Boolean.default_error_messages.update(invalid="须为 true 或 false。")
    Schema.error_messages = {"type": "须为 JSON 对象。", "unknown": "不认识的字段。"}


localise_marshmallow_messages()
