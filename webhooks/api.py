"""POST /webhooks/bank/{bank_code} and …/query: signed by the bank (Standard Webhooks v1)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, json, request

from core.auth import public
from core.clock import today
from core.db import unit_of_work
from webhooks.service import (
    BankUnauthorized,
    MalformedCallback,
    WebhookIdReused,
    answer_query,
    handle_callback,
    record_security_event,
)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger("feeservice.security")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


def _escaped(text: str) -> str:
    """Request text fit for one log line: control characters (a NUL, a forged newline) escaped."""
    return text[:100].encode("unicode_escape").decode("ascii")


def _log_refusal(bank_code: str, error: BankUnauthorized) -> None:
    log.warning("bank callback refused: bank=%s webhook-id=%s from=%s: %s", _escaped(bank_code),
                _escaped(request.headers.get("webhook-id", "-")), request.remote_addr, error.detail)


@bp.route("/bank/<bank_code>", methods=["POST"])
@public  # authenticated by its signature, not by a staff token
def bank_callback(bank_code: str) -> Response:
    raw = request.get_data(cache=False)
    from receipts.service import receipt_settings

    try:
        with unit_of_work() as session:
            answer = handle_callback(session, receipt_settings(current_app.config), bank_code,
                                     dict(request.headers), raw)
    except BankUnauthorized as error:
        _log_refusal(bank_code, error)
        raise
    except (WebhookIdReused, MalformedCallback) as error:
        # Verified, but refused: kept for finance, outside the rolled-back transaction.
        with unit_of_work() as session:
            record_security_event(session, error.code, bank_code, request.headers.get("webhook-id"),
                                  f"{error.detail} {json.dumps(error.extra, ensure_ascii=False)}")
        raise
    return _json(answer.body, answer.status)


@bp.route("/bank/<bank_code>/query", methods=["POST"])
@public
def bank_query(bank_code: str) -> Response:
    raw = request.get_data(cache=False)
    try:
        with unit_of_work() as session:
            body = answer_query(session, bank_code, dict(request.headers), raw,
                                today(current_app.config["FEESVC_TIMEZONE"]))
    except BankUnauthorized as error:
        _log_refusal(bank_code, error)
        raise
    return _json(body)
