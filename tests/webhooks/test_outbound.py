"""Outbound notifications to department systems: the outbox fanned out to subscribers, signed per
Standard Webhooks with each subscriber's secret, retried on the schedule (immediately, 5 s, 5 min,
30 min, 2 h, 5 h, 10 h, 10 h, then failed), every attempt logged, 410 Gone disabling the
subscriber. Real HTTP to a receiver on 127.0.0.1; the clock is injected."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from core.audit import Actor
from core.clock import utcnow, zone
from core.db import Database
from core.outbox import OutboxEvent
from tests.conftest import AUDIT_KEY, Staff
from tests.webhooks.conftest import Bank
from webhooks.delivery import RETRY_DELAYS, SubscriptionDisabled, deliver_due, redeliver, subscribe
from webhooks.models import WebhookDelivery, WebhookSubscription


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A department system: answers each request with the next status of `script` (the last one
    repeating) and remembers what it got."""

    url: str
    script: list[int]
    requests: list[Received] = field(default_factory=list)

    def next_status(self) -> int:
        index = min(len(self.requests) - 1, len(self.script) - 1)
        return self.script[index]


@pytest.fixture
def receiver_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[list[int]], Receiver]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # requests honours *_PROXY from the environment
    servers: list[ThreadingHTTPServer] = []

    def start(script: list[int]) -> Receiver:
        receiver = Receiver("", script)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body))
                    status = receiver.next_status()
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fees"
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def add_subscription(db: Database, name: str, url: str, *events: str) -> str:
    with db.unit_of_work() as session:
        _sub, secret = subscribe(session, AUDIT_KEY, Actor.system("tests"), name=name, url=url,
                                 event_types=list(events))
    return secret


def deliveries(db: Database) -> list[WebhookDelivery]:
    with db.reading() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


@pytest.fixture
def paid(bank: Bank, notice_factory: Callable[..., str]) -> Callable[[], str]:
    """Pay a fresh notice by bank callback: one `notice.paid` in the outbox."""
    counter = iter(range(1000))

    def pay() -> str:
        number = notice_factory()
        response = bank.pay(number, 8000, webhook_id=f"pay-{next(counter)}")
        assert response.json["result"] == "confirmed"
        return number

    return pay


def test_a_receiver_failing_twice_gets_the_event_once_on_the_third_attempt(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    receiver = receiver_factory([500, 500, 200])
    secret = add_subscription(db, "不动产登记系统", receiver.url, "notice.paid")
    number = paid()
    # Start in the past so that the third attempt, 5 s + 5 min after the first, is "now" for the
    # receiver's own verification (which allows ±5 min).
    clock = Clock(utcnow() - RETRY_DELAYS[0] - RETRY_DELAYS[1])
    first_attempt = clock.now

    run = deliver_due(db.write_sessions, now=clock)
    assert (run.dispatched, run.attempted, run.delivered) == (1, 1, 0)
    assert deliver_due(db.write_sessions, now=clock).attempted == 0, "not due again before 5 s"
    clock.advance(RETRY_DELAYS[0] - timedelta(seconds=1))
    assert deliver_due(db.write_sessions, now=clock).attempted == 0
    clock.advance(timedelta(seconds=1))
    assert deliver_due(db.write_sessions, now=clock).attempted == 1
    clock.advance(RETRY_DELAYS[1] - timedelta(seconds=1))
    assert deliver_due(db.write_sessions, now=clock).attempted == 0
    clock.advance(timedelta(seconds=1))
    run = deliver_due(db.write_sessions, now=clock)
    assert (run.attempted, run.delivered) == (1, 1)
    clock.advance(timedelta(days=2))
    assert deliver_due(db.write_sessions, now=clock).attempted == 0, "delivered: never sent again"

    assert len(receiver.requests) == 3
    [delivery] = deliveries(db)
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == ("delivered", 3, first_attempt +
                                                                           RETRY_DELAYS[0] + RETRY_DELAYS[1])
    assert [a.status_code for a in delivery.attempt_log] == [500, 500, 200]
    assert [a.attempted_at for a in delivery.attempt_log] == [
        first_attempt, first_attempt + RETRY_DELAYS[0], first_attempt + RETRY_DELAYS[0] + RETRY_DELAYS[1]]
    assert all(a.error is None and a.duration_ms >= 0 for a in delivery.attempt_log)

    # Every attempt carries the same event (webhook-id and body); each is signed at its own time.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    for request, attempt in zip(receiver.requests, delivery.attempt_log, strict=True):
        assert request.path == "/hooks/fees" and request.headers["content-type"] == "application/json"
        assert int(request.headers["webhook-timestamp"]) == int(attempt.attempted_at.timestamp())
    delivered = receiver.requests[-1]
    payload = Webhook(secret).verify(delivered.body, delivered.headers)
    assert payload["type"] == "notice.paid"
    assert payload["data"]["notice_number"] == number and payload["data"]["amount"] == 8000
    with db.reading() as session:
        outbox = session.scalar(select(OutboxEvent))
        assert outbox is not None and delivered.headers["webhook-id"] == outbox.event_id
        assert delivered.body == outbox.payload.encode()
    with pytest.raises(WebhookVerificationError):
        Webhook(add_subscription(db, "其他系统", receiver.url, "notice.paid")).verify(delivered.body,
                                                                                   delivered.headers)


def test_a_receiver_always_failing_is_tried_on_the_whole_schedule_then_failed(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    receiver = receiver_factory([503])
    add_subscription(db, "公安系统", receiver.url, "notice.paid")
    paid()
    clock = Clock(datetime(2026, 11, 1, 8, 0, tzinfo=UTC))
    start = clock.now
    assert deliver_due(db.write_sessions, now=clock).attempted == 1
    for delay in RETRY_DELAYS:
        clock.advance(delay - timedelta(seconds=1))
        assert deliver_due(db.write_sessions, now=clock).attempted == 0
        clock.advance(timedelta(seconds=1))
        assert deliver_due(db.write_sessions, now=clock).attempted == 1
    clock.advance(timedelta(days=30))
    assert deliver_due(db.write_sessions, now=clock).attempted == 0

    assert len(receiver.requests) == 1 + len(RETRY_DELAYS) == 8
    [delivery] = deliveries(db)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 8, None)
    times = [a.attempted_at for a in delivery.attempt_log]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [
        timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5),
        timedelta(hours=10), timedelta(hours=10)]
    assert times[0] == start
    assert {a.status_code for a in delivery.attempt_log} == {503}


def test_a_receiver_that_cannot_be_reached_is_logged_with_the_error(
        db: Database, paid: Callable[[], str], receiver_factory: Callable[[list[int]], Receiver]) -> None:
    closed = receiver_factory([200])
    url = closed.url
    add_subscription(db, "停机系统", url.replace(url.split(":")[2].split("/")[0], "1"), "notice.paid")
    paid()
    run = deliver_due(db.write_sessions, now=Clock(utcnow()))
    assert (run.attempted, run.delivered) == (1, 0)
    [delivery] = deliveries(db)
    [attempt] = delivery.attempt_log
    assert attempt.status_code is None and attempt.error and "Connection" in attempt.error
    assert delivery.status == "pending" and delivery.next_attempt_at is not None


def test_410_gone_disables_the_subscriber_and_nothing_more_is_sent_to_it(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    gone = receiver_factory([410])
    healthy = receiver_factory([200])
    add_subscription(db, "已下线系统", gone.url, "notice.paid")
    add_subscription(db, "在用系统", healthy.url, "notice.paid")
    paid(), paid()
    clock = Clock(utcnow())
    deliver_due(db.write_sessions, now=clock)
    assert len(gone.requests) == 1, "after a 410 the subscriber gets nothing more"
    assert len(healthy.requests) == 2
    with db.reading() as session:
        subscription = session.scalar(select(WebhookSubscription).where(WebhookSubscription.name == "已下线系统"))
        assert subscription is not None and not subscription.active and "410" in (subscription.disabled_reason or "")
    paid()
    clock.advance(timedelta(days=1))
    deliver_due(db.write_sessions, now=clock)
    assert len(gone.requests) == 1 and len(healthy.requests) == 3
    statuses = {(d.subscription.name, d.status) for d in deliveries(db)}
    assert ("已下线系统", "pending") not in statuses, "nothing is left pending for a disabled subscriber"


def test_only_subscribed_event_types_are_delivered(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str],
        client: FlaskClient, staff: Staff, bank: Bank) -> None:
    receivers = {kind: receiver_factory([200]) for kind in ("paid", "voided", "certificates", "all")}
    add_subscription(db, "paid", receivers["paid"].url, "notice.paid")
    add_subscription(db, "voided", receivers["voided"].url, "receipt.voided")
    add_subscription(db, "certificates", receivers["certificates"].url, "certificate.issued")
    add_subscription(db, "all", receivers["all"].url, "notice.paid", "receipt.voided", "certificate.issued")
    voided, certified = paid(), paid()
    shown: Any = client.get(f"/api/v1/notices/{voided}", headers=staff.headers("finance")).json
    receipt = shown["receipt"]["number"]
    response = client.post(f"/api/v1/receipts/{receipt}/void", json={"reason": "重复缴费"},
                           headers=staff.headers("finance"))
    assert response.status_code == 200, response.json
    response = client.post(f"/api/v1/notices/{certified}/certificate", json={}, headers=staff.headers("window"))
    assert response.status_code == 201, response.json
    # A flagged payment is no department's business: no event.
    assert bank.pay("NOT-A-NOTICE", 8000, webhook_id="flagged").json["result"] == "flagged"

    run = deliver_due(db.write_sessions, now=Clock(utcnow()))
    assert run.delivered == run.attempted == 2 + 1 + 1 + 4

    def types(kind: str) -> list[str]:
        return [json.loads(r.body)["type"] for r in receivers[kind].requests]

    assert types("paid") == ["notice.paid", "notice.paid"]
    assert types("voided") == ["receipt.voided"]
    assert types("certificates") == ["certificate.issued"]
    assert sorted(types("all")) == ["certificate.issued", "notice.paid", "notice.paid", "receipt.voided"]
    voided_event = json.loads(receivers["voided"].requests[0].body)["data"]
    assert voided_event["receipt_number"] == receipt and voided_event["notice_number"] == voided


def test_a_subscriber_registered_later_gets_only_later_events(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    early, late = receiver_factory([200]), receiver_factory([200])
    add_subscription(db, "early", early.url, "notice.paid")
    paid()
    deliver_due(db.write_sessions, now=Clock(utcnow()))
    add_subscription(db, "late", late.url, "notice.paid")
    paid()
    deliver_due(db.write_sessions, now=Clock(utcnow()))
    assert len(early.requests) == 2 and len(late.requests) == 1


def test_redeliver_sends_a_failed_delivery_again(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    receiver = receiver_factory([500] * 8 + [200])
    add_subscription(db, "flaky", receiver.url, "notice.paid")
    paid()
    clock = Clock(utcnow())
    deliver_due(db.write_sessions, now=clock)
    for delay in RETRY_DELAYS:
        clock.advance(delay)
        deliver_due(db.write_sessions, now=clock)
    [delivery] = deliveries(db)
    assert delivery.status == "failed"
    with db.unit_of_work() as session:
        redeliver(session, AUDIT_KEY, Actor.system("tests"), delivery.id)
    clock.advance(timedelta(seconds=1))
    assert deliver_due(db.write_sessions, now=clock).delivered == 1
    [delivery] = deliveries(db)
    assert delivery.status == "delivered" and len(delivery.attempt_log) == 9


def test_no_event_for_a_change_that_rolled_back(db: Database, bank: Bank, notice_factory: Callable[..., str],
                                                receiver_factory: Callable[[list[int]], Receiver]) -> None:
    receiver = receiver_factory([200])
    add_subscription(db, "s", receiver.url, "notice.paid")
    number = notice_factory()
    assert bank.pay(number, 7000, webhook_id="mismatch").json["result"] == "flagged"
    run = deliver_due(db.write_sessions, now=Clock(utcnow()))
    assert run.dispatched == run.attempted == 0 and receiver.requests == []
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


# --- the commands ---------------------------------------------------------------------------------

def test_subscribe_and_deliver_commands(app: Flask, db: Database, paid: Callable[[], str],
                                        receiver_factory: Callable[[list[int]], Receiver]) -> None:
    receiver = receiver_factory([200])
    runner = app.test_cli_runner()
    result = runner.invoke(args=["webhooks", "subscribe", "不动产", "--url", receiver.url,
                                 "--event", "notice.paid", "--event", "receipt.voided"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.splitlines()[-1]
    assert secret.startswith("whsec_")
    number = paid()
    result = runner.invoke(args=["webhooks", "deliver"])
    assert result.exit_code == 0, result.output
    assert "1" in result.stdout
    [request] = receiver.requests
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["data"]["notice_number"] == number
    again = runner.invoke(args=["webhooks", "deliver"])
    assert again.exit_code == 0 and len(receiver.requests) == 1


@pytest.mark.parametrize("args", [
    ["webhooks", "subscribe", "x", "--url", "ftp://example.org/", "--event", "notice.paid"],
    ["webhooks", "subscribe", "x", "--url", "https://example.org/", "--event", "notice.deleted"],
    ["webhooks", "subscribe", "x", "--url", "https://example.org/"],
    ["webhooks", "subscribe", "", "--url", "https://example.org/", "--event", "notice.paid"],
])
def test_subscribe_refuses_bad_input(app: Flask, db: Database, args: list[str]) -> None:
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0
    assert "whsec_" not in result.stdout
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(WebhookSubscription)) == 0


def test_subscribe_refuses_a_name_in_use(app: Flask) -> None:
    runner = app.test_cli_runner()
    args = ["webhooks", "subscribe", "dup", "--url", "https://example.org/", "--event", "notice.paid"]
    assert runner.invoke(args=args).exit_code == 0
    second = runner.invoke(args=args)
    assert second.exit_code != 0 and "dup" in second.stderr


def test_a_slow_subscriber_does_not_hold_up_payments(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str],
        bank: Bank, notice_factory: Callable[..., str]) -> None:
    """No database transaction stays open across the HTTP call: on SQLite that transaction holds
    the one write lock, and every cashier and bank would wait for the subscriber's answer."""
    release = threading.Event()
    receiver = receiver_factory([200])
    original = receiver.next_status

    def slow() -> int:
        release.wait(timeout=20)
        return original()

    receiver.next_status = slow  # type: ignore[method-assign]
    add_subscription(db, "slow", receiver.url, "notice.paid")
    paid()
    number = notice_factory()
    worker = threading.Thread(target=deliver_due, args=(db.write_sessions,), kwargs={"now": Clock(utcnow())})
    worker.start()
    try:
        for _ in range(200):  # wait until the subscriber has the request
            if receiver.requests:
                break
            threading.Event().wait(0.01)
        assert receiver.requests, "the delivery never reached the receiver"
        started = time.perf_counter()
        response = bank.pay(number, 8000, webhook_id="during-delivery")
        waited = time.perf_counter() - started
        assert response.json["result"] == "confirmed"
        assert waited < 2, f"a bank callback waited {waited:.1f} s for a subscriber's answer"
    finally:
        release.set()
        worker.join(timeout=30)
    [delivery] = deliveries(db)
    assert delivery.status == "delivered" and delivery.attempts == 1


def test_a_clock_in_another_zone_still_signs_correctly(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    receiver = receiver_factory([200])
    secret = add_subscription(db, "s", receiver.url, "notice.paid")
    paid()
    deliver_due(db.write_sessions, now=Clock(utcnow().astimezone(zone("Asia/Shanghai"))))
    [request] = receiver.requests
    assert Webhook(secret).verify(request.body, request.headers)["type"] == "notice.paid"


def test_redeliver_is_refused_for_a_disabled_subscriber(
        db: Database, receiver_factory: Callable[[list[int]], Receiver], paid: Callable[[], str]) -> None:
    receiver = receiver_factory([410])
    add_subscription(db, "gone", receiver.url, "notice.paid")
    paid()
    deliver_due(db.write_sessions, now=Clock(utcnow()))
    [delivery] = deliveries(db)
    with pytest.raises(SubscriptionDisabled), db.unit_of_work() as session:
        redeliver(session, AUDIT_KEY, Actor.system("tests"), delivery.id)
