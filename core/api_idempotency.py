"""The `Idempotency-Key` header on API writes (API.md conventions)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Response, current_app, request
from flask_babel import gettext as _

from core import idempotency
from core.auth import bearer_user
from core.db import unit_of_work
from core.errors import ValidationFailed

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "Idempotency-Key"


def idempotent(view: F) -> F:
    """Replay the stored first response for a repeated key; goes inside the role check."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        user = bearer_user()
        if key is None or user is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= idempotency.MAX_KEY_LENGTH or not key.isprintable():
            raise ValidationFailed({HEADER: [_("须为 1–255 个可打印字符。")]})
        client = f"user:{user.id}"
        print_ = idempotency.fingerprint(request.method, request.path, request.get_data(cache=True))
        with unit_of_work() as session:
            stored = idempotency.claim(session, client, key, print_)
        if stored is not None:
            return Response(stored.body, status=stored.status, content_type=stored.content_type,
                            headers={"Idempotent-Replayed": "true"})
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - every outcome must settle the key
            response = current_app.make_response(current_app.handle_user_exception(error))
        with unit_of_work() as session:
            if response.status_code >= 500:
                idempotency.release(session, client, key)
            else:
                idempotency.complete(session, client, key, idempotency.StoredResponse(
                    status=response.status_code, content_type=response.content_type or "application/json",
                    body=response.get_data(as_text=True)))
        return response

    return cast(F, wrapper)
