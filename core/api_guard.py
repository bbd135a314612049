"""Request checks shared by every /api/v1 write: the body must be JSON (API.md conventions)."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, request
from flask_babel import gettext as _

from core.errors import problem_response

BODY_METHODS = {"POST", "PUT", "PATCH"}


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
            json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return problem_response(400, "malformed-json", _("请求体不是有效的 JSON"),
                                    _("请求体无法解析为 JSON。"))
        if not request.is_json:
            return problem_response(415, "unsupported-media-type", _("不支持的内容类型"),
                                    _("请求体须以 Content-Type: application/json 发送。"))
        return None
