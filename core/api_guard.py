"""Request checks shared by every /api/v1 write: the body must be JSON (API.md conventions)."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, request
from flask_babel import gettext as _

from core.errors import problem_response

BODY_METHODS = {"POST", "PUT", "PATCH"}


def parse_json_text(data: bytes) -> Any:
    """The JSON value of a request body; ValueError when it is not JSON that we can store and echo.

    Besides syntax errors this refuses nesting too deep for the parser (RecursionError) and
    strings with lone UTF-16 surrogates (`"\\ud800"`): valid JSON escapes, but not text that
    UTF-8, PostgreSQL or a response body can carry.
    """
    try:
        value = json.loads(data)
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error
    except UnicodeDecodeError as error:
        raise ValueError("body is not UTF-8") from error
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error
    except UnicodeEncodeError as error:
        raise ValueError("JSON string with a lone surrogate") from error
    return value


def install(app: Flask) -> None:
    @app.before_request
    def _require_json_body() -> Any:
        if request.method not in BODY_METHODS or not request.path.startswith("/api/"):
            return None
        if request.mimetype == "multipart/form-data":
            return None
        data = request.get_data(cache=True)
        if not data.strip():
            return None
        try:
            parse_json_text(data)
        except ValueError:
            return problem_response(400, "malformed-json", _("请求体不是有效的 JSON"),
                                    _("请求体无法解析为 JSON。"))
        if not request.is_json:
            return problem_response(415, "unsupported-media-type", _("不支持的内容类型"),
                                    _("请求体须以 Content-Type: application/json 发送。"))
        return None
