"""A bank simulator for demos, tests and load: signs and posts callbacks like a real bank,
retrying on 5xx and network errors with the Standard Webhooks schedule (shortened)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from standardwebhooks import Webhook

RETRY_DELAYS = [0.5, 2.0, 5.0]


@dataclass(frozen=True)
class SimResult:
    notice_number: str
    status: int | None
    body: str
    attempts: int
    seconds: float


def signed_headers(secret: str, webhook_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    moment = at or datetime.now(UTC)
    return {"content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, moment, body)}


def callback_body(notice_number: str, amount: int, *, bank_reference: str | None = None,
                  payer_name: str | None = None, paid_at: datetime | None = None) -> str:
    now = datetime.now(UTC)
    return json.dumps({
        "type": "payment.succeeded", "timestamp": now.isoformat(timespec="seconds"),
        "data": {"notice_number": notice_number, "amount": amount, "currency": "CNY",
                 "paid_at": (paid_at or now).isoformat(timespec="seconds"),
                 "bank_reference": bank_reference or "SIM" + uuid.uuid4().hex[:20].upper(),
                 "payer_name": payer_name, "payer_account": "6222********0000"},
    }, ensure_ascii=False)


def query(session: requests.Session, base_url: str, bank_code: str, secret: str, number: str) -> dict[str, object]:
    body = json.dumps({"notice_number": number})
    response = session.post(f"{base_url}/webhooks/bank/{bank_code}/query", data=body.encode(),
                            headers=signed_headers(secret, "q_" + uuid.uuid4().hex, body), timeout=10)
    return {"http_status": response.status_code, **response.json()}


def pay(session: requests.Session, base_url: str, bank_code: str, secret: str, number: str,
        amount: int | None = None, *, retries: bool = True) -> SimResult:
    """Ask what is due (unless an amount is given), then post the callback until it is taken."""
    started = time.monotonic()
    if amount is None:
        due = query(session, base_url, bank_code, secret, number)
        if due["http_status"] != 200 or due.get("status") != "issued":
            # A real bank does not collect on a notice that is not payable.
            return SimResult(number, int(str(due["http_status"])), json.dumps(due, ensure_ascii=False), 0,
                             time.monotonic() - started)
        amount = int(str(due["total"]))
    webhook_id = "msg_" + uuid.uuid4().hex
    body = callback_body(number, amount)
    attempts = 0
    for delay in [0.0, *(RETRY_DELAYS if retries else [])]:
        time.sleep(delay)
        attempts += 1
        try:
            # Each attempt is signed anew (a fresh timestamp); the webhook-id and body stay.
            response = session.post(f"{base_url}/webhooks/bank/{bank_code}", data=body.encode(),
                                    headers=signed_headers(secret, webhook_id, body), timeout=10)
        except requests.RequestException as error:
            last = SimResult(number, None, str(error), attempts, time.monotonic() - started)
            continue
        last = SimResult(number, response.status_code, response.text, attempts, time.monotonic() - started)
        if response.status_code < 500:
            break
    return last


def load(base_url: str, bank_code: str, secret: str, numbers: Iterable[tuple[str, int]],
         concurrency: int) -> list[SimResult]:
    """Pay many notices at once (each with its known total), `concurrency` clients in parallel."""
    def one(item: tuple[str, int]) -> SimResult:
        with requests.Session() as session:
            return pay(session, base_url, bank_code, secret, item[0], item[1], retries=False)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, list(numbers)))
