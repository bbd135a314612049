"""A registered bank and a signer, for the callback tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from core.audit import Actor
from core.db import Database
from tests.conftest import AUDIT_KEY, Staff, issue
from webhooks.service import create_bank
from webhooks.simulator import callback_body, signed_headers


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

    def pay(self, number: str, amount: int, *, webhook_id: str, reference: str | None = None, **kw: Any) -> Any:
        return self.post(callback_body(number, amount, bank_reference=reference or f"REF-{webhook_id}"),
                         webhook_id=webhook_id, **kw)


@pytest.fixture
def bank(db: Database, client: FlaskClient, staff: Staff) -> Bank:
    with db.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), "ICBC-T", "测试银行")
    return Bank("ICBC-T", secret, client)


@pytest.fixture
def notice_factory(client: FlaskClient, staff: Staff) -> Callable[..., str]:
    def make(**fields: Any) -> str:
        response = issue(client, staff, **fields)
        assert response.status_code == 201, response.json
        return str(response.json["number"])

    return make
