"""Domain errors and their one mapping to RFC 9457 problem+json (API) or a page (HTML).

Packages define their errors as subclasses of DomainError with a code from API.md; the entry
points never build error responses themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/webhooks/")


class DomainError(Exception):
    """A rule of the business was broken; `code` is the problem type of API.md."""

    status: int = 409
    code: str = "conflict"
    title: Any = _l("操作无法完成")

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or str(self.title))
        self.detail = detail
        self.extra = extra


class ValidationFailed(DomainError):
    status = 422
    code = "validation"
    title = _l("输入有误")

    def __init__(self, errors: dict[str, list[str]], detail: str | None = None) -> None:
        super().__init__(detail or _("请求中有字段不合要求。"), errors=errors)
        self.errors = errors


class NotFound(DomainError):
    status = 404
    code = "not-found"
    title = _l("未找到")


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    title = _l("无权执行此操作")


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"
    title = _l("需要登录或有效的令牌")


# Titles of HTTP errors raised by the framework itself, so that they too read in Chinese.
HTTP_PROBLEMS: dict[int, tuple[str, Any]] = {
    400: ("bad-request", _l("请求格式错误")),
    401: ("unauthorized", _l("需要登录或有效的令牌")),
    403: ("forbidden", _l("无权执行此操作")),
    404: ("not-found", _l("未找到")),
    405: ("method-not-allowed", _l("不支持该请求方法")),
    406: ("not-acceptable", _l("无法提供所需格式")),
    409: ("conflict", _l("操作冲突")),
    413: ("payload-too-large", _l("请求内容过大")),
    414: ("uri-too-long", _l("请求地址过长")),
    415: ("unsupported-media-type", _l("不支持的内容类型")),
    422: ("validation", _l("输入有误")),
    429: ("too-many-requests", _l("请求过于频繁")),
    431: ("headers-too-large", _l("请求头过大")),
    500: ("internal-error", _l("服务内部错误")),
    503: ("unavailable", _l("服务暂时不可用")),
}


def wants_problem_json() -> bool:
    return request.path.startswith(API_PREFIXES)


def problem_type(code: str) -> str:
    return request.host_url.rstrip("/") + "/problems/" + code


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body: dict[str, Any] = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.path,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    try:
        text = json.dumps(body, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate echoed from the input: escape it, never fail
        text = json.dumps(body, ensure_ascii=True)
    response = Response(text, status=status, mimetype="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="feeservice"'
    return response


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nested messages → {"items.0.quantity": [msg]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = str(key) if key != "_schema" else ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            for sub_path, msgs in flatten_messages(value, path).items():
                flat.setdefault(sub_path, []).extend(msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_body"] = [str(m) for m in messages]
    elif isinstance(messages, list):
        for item in messages:
            for sub_path, msgs in flatten_messages(item, prefix).items():
                flat.setdefault(sub_path, []).extend(msgs)
    else:
        flat[prefix or "_body"] = [str(messages)]
    return flat


def render_error_page(status: int, title: str, detail: str) -> tuple[str, int]:
    return render_template("core/error.html", status=status, title=title, detail=detail), status


def _handle_domain_error(error: DomainError) -> Any:
    title = str(error.title)
    detail = error.detail or title
    if wants_problem_json():
        response = problem_response(error.status, error.code, title, detail, **error.extra)
    else:
        page, _status = render_error_page(error.status, title, detail)
        response = Response(page, status=error.status, mimetype="text/html")
    if error.status == 503:  # the outcome of a lost commit: the client should come back
        response.headers["Retry-After"] = "5"
    return response


def _handle_http_exception(error: HTTPException) -> Any:
    response = _http_exception_response(error)
    if isinstance(response, tuple):
        response = Response(response[0], status=response[1], mimetype="text/html")
    # The exception's own headers must survive the rewrite: Allow on every 405 (RFC 9110),
    # WWW-Authenticate, Retry-After.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _http_exception_response(error: HTTPException) -> Any:
    status = error.code or 500
    code, title = HTTP_PROBLEMS.get(status, ("http-error", error.name))
    if not wants_problem_json():
        return render_error_page(status, str(title), _http_detail(status))
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 422 and messages is not None:
        # flask-smorest/webargs validation: drop the location level ("json", "query") and
        # report dotted field paths.
        fields: dict[str, list[str]] = {}
        for location_messages in messages.values():
            for path, msgs in flatten_messages(location_messages).items():
                fields.setdefault(path, []).extend(msgs)
        return problem_response(422, "validation", str(title), _("请求中有字段不合要求。"), errors=fields)
    if status == 400 and messages is not None:
        return problem_response(400, "malformed-json", _("请求体不是有效的 JSON"), _("请求体无法解析为 JSON。"))
    return problem_response(status, code, str(title), _http_detail(status))


def _http_detail(status: int) -> str:
    details = {
        404: _("请求的资源不存在。"),
        405: _("该地址不支持此请求方法。"),
        413: _("请求内容超过允许的大小。"),
        414: _("请求地址（路径与查询）超过 4096 字节。"),
        431: _("请求头的数量或大小超过允许的范围。"),
    }
    return details.get(status, str(HTTP_PROBLEMS.get(status, ("", _("请求失败")))[1]))


def _handle_unexpected(error: Exception) -> Any:
    log.exception("unhandled error on %s %s", request.method, request.path)
    title = str(HTTP_PROBLEMS[500][1])
    detail = _("服务出现意外错误，操作未生效。请稍后重试或联系管理员。")
    if wants_problem_json():
        return problem_response(500, "internal-error", title, detail)
    return render_error_page(500, title, detail)


def _handle_database_unavailable(error: Exception) -> Any:
    """The database cannot be reached (or the pool timed out): nothing was written; try again."""
    log.error("database unavailable on %s %s: %s", request.method, request.path, error.__class__.__name__)
    title = str(HTTP_PROBLEMS[503][1])
    detail = _("暂时无法访问数据库，操作未生效，请稍后重试。")
    if wants_problem_json():
        response = problem_response(503, "unavailable", title, detail)
    else:
        page, _status = render_error_page(503, title, detail)
        response = Response(page, status=503, mimetype="text/html")
    response.headers["Retry-After"] = "30"
    return response


def register_error_handlers(app: Flask) -> None:
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    app.register_error_handler(OperationalError, _handle_database_unavailable)
    app.register_error_handler(PoolTimeout, _handle_database_unavailable)
    app.register_error_handler(DomainError, _handle_domain_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
    document_problems(app)


# The OpenAPI description of every error response: what problem_response() sends.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `type` ends in the problem code of API.md.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Validation errors by field, nested fields as dotted paths (items.0.quantity).",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}
PROBLEM_MEDIA_TYPE = "application/problem+json"


def document_problems(app: Flask) -> None:
    """Make the OpenAPI document tell the truth about errors.

    flask-smorest documents its own error shape (`Error`: integer `code`, string `status`,
    `application/json`), which this service never sends. Rewrite that schema into the problem
    details schema and every error response's media type into application/problem+json, both
    for the responses already referenced and for those registered lazily later.
    """
    apis = app.extensions.get("flask-smorest", {}).get("apis", {})
    for entry in apis.values():
        spec = getattr(entry.get("ext_obj"), "spec", None)
        if spec is None:
            continue
        components = spec.components
        error_ref = "#/components/schemas/Error"
        for store in (components.schemas, components.schemas_lazy):
            if "Error" in store:
                store["Error"] = dict(PROBLEM_SCHEMA)
        if "Error" not in components.schemas and "Error" not in components.schemas_lazy:
            components.schema("Error", dict(PROBLEM_SCHEMA))
        for store in (components.responses, components.responses_lazy):
            for response in store.values():
                content = response.get("content") or {}
                json_content = content.get("application/json")
                if json_content and json_content.get("schema", {}).get("$ref") == error_ref:
                    response["content"] = {PROBLEM_MEDIA_TYPE: json_content}
