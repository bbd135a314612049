"""Registered banks, a signer and notices, for the callback, query and delivery tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from standardwebhooks import Webhook

from core.audit import Actor
from core.clock import today, utcnow
from core.db import Database
from tests.conftest import AUDIT_KEY, Staff, issue
from webhooks.service import create_bank
from webhooks.simulator import callback_body, signed_headers

TZ = "Asia/Shanghai"


def sign(secret: str, webhook_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers for `body` signed at exactly `timestamp` (unix seconds)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": Webhook(secret).sign(webhook_id, moment, body.decode())}


def now_seconds() -> int:
    """The current unix second, rounded: a skew of ±299 s stays within 300 s for half a second."""
    return round(time.time())


@dataclass
class Bank:
    code: str
    secret: str
    client: FlaskClient

    def post(self, body: str, *, webhook_id: str, secret: str | None = None, skew: int = 0,
             code: str | None = None, headers: dict[str, str] | None = None) -> Any:
        moment = datetime.now(UTC) + timedelta(seconds=skew)
        sent = headers if headers is not None else signed_headers(secret or self.secret, webhook_id, body, moment)
        return self.client.post(f"/webhooks/bank/{code or self.code}", data=body.encode(), headers=sent)

    def post_raw(self, body: bytes, headers: dict[str, str], *, code: str | None = None) -> Any:
        return self.client.post(f"/webhooks/bank/{code or self.code}", data=body, headers=headers)

    def pay(self, number: str, amount: int, *, webhook_id: str, reference: str | None = None, **kw: Any) -> Any:
        return self.post(callback_body(number, amount, bank_reference=reference or f"REF-{webhook_id}"),
                         webhook_id=webhook_id, **kw)

    def query(self, number: Any, *, webhook_id: str = "q-1", secret: str | None = None,
              headers: dict[str, str] | None = None) -> Any:
        body = json.dumps({"notice_number": number})
        sent = headers if headers is not None else sign(secret or self.secret, webhook_id, body.encode(),
                                                        now_seconds())
        return self.client.post(f"/webhooks/bank/{self.code}/query", data=body.encode(), headers=sent)


@pytest.fixture
def bank(db: Database, client: FlaskClient, staff: Staff) -> Bank:
    with db.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), "ICBC-T", "测试银行")
    return Bank("ICBC-T", secret, client)


@pytest.fixture
def other_bank(db: Database, client: FlaskClient, bank: Bank) -> Bank:
    with db.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), "ABC-T", "另一家银行")
    return Bank("ABC-T", secret, client)


@pytest.fixture
def notice_factory(client: FlaskClient, staff: Staff) -> Callable[..., str]:
    """Issue a notice through the API; `overdue=True` issues it ten days ago, due yesterday (the
    facts of a notice are immutable, so it cannot be back-dated afterwards)."""
    def make(*, overdue: bool = False, **fields: Any) -> str:
        if overdue:
            import notices.service

            due = today(TZ) - timedelta(days=1)
            issued_at = utcnow() - timedelta(days=10)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(notices.service, "utcnow", lambda: issued_at)
                response = issue(client, staff, due_date=due.isoformat(), **fields)
        else:
            response = issue(client, staff, **fields)
        assert response.status_code == 201, response.json
        return str(response.json["number"])

    return make
