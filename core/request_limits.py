"""Limits on the request line and headers, enforced by the app so that the refusal is problem+json.

gunicorn refuses an over-long request line or header itself, with an HTML page, before the app
sees the request (414/400), which breaks the API's problem+json contract. gunicorn.conf.py
therefore sets its own limits out of the way and these, the real ones, answer 414 and 431
through the one error mapping of core.errors like every other refusal.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import RequestHeaderFieldsTooLarge, RequestURITooLarge

MAX_URL_BYTES = 4096  # path + query as sent: below gunicorn's largest request line (8190), so the app refuses first
MAX_HEADER_FIELDS = 100  # gunicorn's default
MAX_HEADER_FIELD_BYTES = 8 * 1024


def check_request_size() -> None:
    environ = request.environ
    url_bytes = len(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "") or (
        len(environ.get("PATH_INFO", "").encode("latin-1", "replace")) + len(environ.get("QUERY_STRING", "")) + 1)
    if url_bytes > MAX_URL_BYTES:
        raise RequestURITooLarge()
    headers = [(k, v) for k, v in environ.items() if k.startswith("HTTP_")]
    if len(headers) > MAX_HEADER_FIELDS or any(len(k) + len(str(v)) > MAX_HEADER_FIELD_BYTES for k, v in headers):
        raise RequestHeaderFieldsTooLarge()


def register(app: Flask) -> None:
    # First of all before_request hooks: a request too large is refused before sign-in is looked at.
    app.before_request_funcs.setdefault(None, []).insert(0, check_request_size)
