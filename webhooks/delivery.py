"""Delivering the outbox to department systems: Standard Webhooks signatures, a retry schedule,
every attempt logged, a subscriber that answers 410 Gone disabled."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from core.audit import Actor, append_audit
from core.clock import utcnow
from core.errors import DomainError, NotFound, ValidationFailed
from core.outbox import EVENT_TYPES, OutboxEvent
from webhooks.models import DeliveryAttempt, WebhookDelivery, WebhookSubscription
from webhooks.service import new_secret

# Standard Webhooks' recommended schedule: immediately, then after each failure these delays.
RETRY_DELAYS = [timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
                timedelta(hours=5), timedelta(hours=10), timedelta(hours=10)]
TIMEOUT_SECONDS = 10
# How long a claimed delivery is left alone by other schedulers while it is being posted (longer
# than any post can take); a scheduler that dies mid-post leaves it to be retried after that.
CLAIM_LEASE = timedelta(seconds=5 * TIMEOUT_SECONDS)


class SubscriptionDisabled(DomainError):
    status = 409
    code = "subscription-disabled"
    title = _l("该订阅已停用")


@dataclass(frozen=True)
class HttpResult:
    status_code: int | None
    error: str | None


Poster = Callable[[str, bytes, dict[str, str]], HttpResult]


def post_with_requests(url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
    try:
        response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False)
        response.close()
        return HttpResult(response.status_code, None)
    except requests.RequestException as error:
        return HttpResult(None, f"{error.__class__.__name__}: {error}"[:500])


def subscribe(session: Session, audit_key: str, actor: Actor, *, name: str, url: str,
              event_types: list[str]) -> tuple[WebhookSubscription, str]:
    errors: dict[str, list[str]] = {}
    if not name.strip() or len(name) > 100:
        errors["name"] = [_("请填写名称（不超过 100 字）。")]
    if not url.startswith(("https://", "http://")) or len(url) > 500:
        errors["url"] = [_("须为 http:// 或 https:// 开头的地址。")]
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if not event_types or unknown:
        errors["event_types"] = [_("事件类型须为 %(t)s 中的一个或多个。", t=", ".join(EVENT_TYPES))]
    if session.scalar(select(WebhookSubscription.id).where(WebhookSubscription.name == name.strip())):
        errors["name"] = [_("名称 %(n)s 已被使用。", n=name)]
    if errors:
        raise ValidationFailed(errors)
    secret = new_secret()
    subscription = WebhookSubscription(name=name.strip(), url=url, secret=secret, event_types=" ".join(event_types))
    session.add(subscription)
    session.flush()
    append_audit(session, audit_key, actor, "subscription.created", "webhook_subscription", subscription.id,
                 after={"name": name, "url": url, "event_types": event_types})
    return subscription, secret


def dispatch_new_events(session: Session, now: datetime) -> int:
    """Create a pending delivery for each new outbox event and each active subscriber that wants it."""
    events = list(session.scalars(select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None))
                                  .order_by(OutboxEvent.id).limit(1000)
                                  .with_for_update(of=OutboxEvent, skip_locked=True)))
    subscriptions = list(session.scalars(select(WebhookSubscription).where(WebhookSubscription.active.is_(True))))
    created = 0
    for event in events:
        for subscription in subscriptions:
            if subscription.wants(event.event_type):
                session.add(WebhookDelivery(event_id=event.id, subscription_id=subscription.id, status="pending",
                                            next_attempt_at=now, created_at=now))
                created += 1
        event.dispatched_at = now
    return created


@dataclass
class DeliveryRun:
    dispatched: int = 0
    attempted: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True)
class _Claim:
    delivery_id: int
    url: str
    secret: str
    event_id: str
    payload: str


def deliver_due(sessions: sessionmaker[Session], *, now: Callable[[], datetime] = utcnow,
                post: Poster = post_with_requests, limit: int = 200) -> DeliveryRun:
    """One pass: fan out new events, then try every delivery that is due.

    Each attempt is three steps, and no transaction stays open across the HTTP call (on SQLite
    that transaction would hold the one write lock, and every cashier and bank would wait for
    the subscriber): claim the delivery (FOR UPDATE SKIP LOCKED, then a lease on
    `next_attempt_at` so that another scheduler leaves it alone), post, record the outcome."""
    run = DeliveryRun()
    with sessions.begin() as session:
        run.dispatched = dispatch_new_events(session, now())
    for _round in range(limit):
        with sessions.begin() as session:
            claim = _claim_next(session, now())
        if claim is None:
            break
        # In UTC: the library signs `timestamp.replace(tzinfo=utc)`, wrong for any other zone.
        sent_at = now().astimezone(UTC)
        signature = Webhook(claim.secret).sign(claim.event_id, sent_at, claim.payload)
        headers = {"content-type": "application/json", "webhook-id": claim.event_id,
                   "webhook-timestamp": str(int(sent_at.timestamp())), "webhook-signature": signature,
                   "user-agent": "feeservice-webhooks/1"}
        started = time.monotonic()
        result = post(claim.url, claim.payload.encode(), headers)
        duration = int((time.monotonic() - started) * 1000)
        with sessions.begin() as session:
            _record(session, claim, sent_at, result, duration, run)
    return run


def _claim_next(session: Session, moment: datetime) -> _Claim | None:
    delivery = session.scalar(
        select(WebhookDelivery).join(WebhookSubscription)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= moment,
               WebhookSubscription.active.is_(True))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(1)
        .with_for_update(of=WebhookDelivery, skip_locked=True))
    if delivery is None:
        return None
    event = session.get(OutboxEvent, delivery.event_id)
    assert event is not None
    delivery.next_attempt_at = moment + CLAIM_LEASE
    subscription = delivery.subscription
    return _Claim(delivery.id, subscription.url, subscription.secret, event.event_id, event.payload)


def _record(session: Session, claim: _Claim, sent_at: datetime, result: HttpResult, duration: int,
            run: DeliveryRun) -> None:
    delivery = session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id)
                              .with_for_update(of=WebhookDelivery))
    assert delivery is not None
    session.add(DeliveryAttempt(delivery_id=delivery.id, attempted_at=sent_at, status_code=result.status_code,
                                error=result.error, duration_ms=duration))
    delivery.attempts += 1
    run.attempted += 1
    if result.status_code is not None and 200 <= result.status_code < 300:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", sent_at, None
        run.delivered += 1
        return
    if result.status_code == 410:  # Gone: the subscriber asked us to stop
        subscription = delivery.subscription
        subscription.active = False
        subscription.disabled_reason = f"410 Gone at {sent_at.isoformat()}"
        # Nothing more goes to it: what was still waiting fails with it (an admin may redeliver
        # once the subscriber is registered again).
        for waiting in session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.subscription_id == subscription.id, WebhookDelivery.status == "pending")):
            waiting.status, waiting.next_attempt_at = "failed", None
        delivery.status, delivery.next_attempt_at = "failed", None
        run.failed += 1
        return
    if delivery.attempts > len(RETRY_DELAYS):
        delivery.status, delivery.next_attempt_at = "failed", None
        run.failed += 1
        return
    delivery.next_attempt_at = sent_at + RETRY_DELAYS[delivery.attempts - 1]


def redeliver(session: Session, audit_key: str, actor: Actor, delivery_id: int) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(_("没有该投递记录。"))
    if not delivery.subscription.active:
        raise SubscriptionDisabled(_("订阅 %(n)s 已停用（%(r)s），不能重新投递。", n=delivery.subscription.name,
                                     r=delivery.subscription.disabled_reason or "-"))
    delivery.status, delivery.next_attempt_at = "pending", utcnow()
    append_audit(session, audit_key, actor, "delivery.redeliver", "webhook_delivery", delivery_id)
    return delivery
