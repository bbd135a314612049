"""The `Idempotency-Key` header on API writes (API.md conventions), and the same rule for the
cashier page's form key: one helper, one transaction."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast, overload

from flask import Response, current_app, request
from flask_babel import gettext as _

from core import idempotency
from core.auth import bearer_user
from core.db import get_db
from core.errors import ValidationFailed

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "Idempotency-Key"


class _Refused(Exception):
    """Carries an error response out of the shared transaction, so that it rolls back."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _stored(response: Response) -> idempotency.StoredResponse:
    return idempotency.StoredResponse(status=response.status_code,
                                      content_type=response.content_type or "application/json",
                                      body=response.get_data(as_text=True))


def _replay(stored: idempotency.StoredResponse) -> Response:
    return Response(stored.body, status=stored.status, content_type=stored.content_type,
                    headers={"Idempotent-Replayed": "true"})


def run_once(client: str, key: str, print_: str, produce: Callable[[], Response], *,
             keep_refusals: bool = True) -> tuple[Response, bool]:
    """Run `produce` under the key, or replay the stored response; returns (response, replayed).

    The claim, everything `produce` writes through unit_of_work() and the stored response are one
    transaction. An error response rolls it all back; a 4xx is then kept for replay when
    `keep_refusals`. Raises IdempotencyKeyReuse / IdempotencyKeyInUse, and OutcomeUnknown when
    the commit's answer is lost (the retry then replays the stored response if it committed)."""
    database = get_db()
    try:
        with database.shared_unit_of_work() as session:
            stored = idempotency.claim(session, client, key, print_)
            if stored is not None:
                return _replay(stored), True
            response = produce()
            if response.status_code >= 400:
                raise _Refused(response)
            idempotency.complete(session, client, key, _stored(response))
        return response, False
    except _Refused as refused:
        if keep_refusals and refused.response.status_code < 500:
            with database.unit_of_work() as session:
                idempotency.store_refusal(session, client, key, print_, _stored(refused.response))
        return refused.response, False


def _respond(view: Callable[..., Any], *args: Any, **kwargs: Any) -> Response:
    try:
        return current_app.make_response(view(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 - every outcome must settle the key
        return current_app.make_response(current_app.handle_user_exception(error))


@overload
def idempotent(view: F) -> F: ...
@overload
def idempotent(*, own_transactions: bool) -> Callable[[F], F]: ...


def idempotent(view: F | None = None, *, own_transactions: bool = False) -> Any:
    """Replay the stored first response for a repeated key; goes inside the role check.

    `own_transactions`: the view calls a service that commits its own transactions (a
    reconciliation run records itself first, so that pages show it working); those cannot join
    the key's transaction, so the key is claimed, and its result stored, in transactions of their
    own. Only for work that is safe to repeat; never for money."""

    def decorate(view: F) -> F:
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
            if own_transactions:
                return _run_in_own_transactions(client, key, print_, lambda: _respond(view, *args, **kwargs))
            response, _replayed = run_once(client, key, print_, lambda: _respond(view, *args, **kwargs))
            return response

        return cast(F, wrapper)

    return decorate(view) if view is not None else decorate


def _run_in_own_transactions(client: str, key: str, print_: str, produce: Callable[[], Response]) -> Response:
    database = get_db()
    with database.unit_of_work() as session:
        stored = idempotency.claim(session, client, key, print_)
    if stored is not None:
        return _replay(stored)
    response = produce()
    with database.unit_of_work() as session:
        if response.status_code >= 500:
            idempotency.release(session, client, key)
        else:
            idempotency.complete(session, client, key, _stored(response))
    return response
