"""Sign-in protection (API.md, "Sign-in protection"): throttling by username and address, and
server-side page sessions that logout, idle time, disabling and a new password end.

Both live in the database, so they hold across gunicorn workers and nodes. Service functions take
a Session and plain values and never commit; core.views and core.auth run them.

Throttling. An attempt is counted *before* its password is checked: it is written as 'failed'
under a lock on its username and its address (PostgreSQL advisory locks; on SQLite every write
transaction is BEGIN IMMEDIATE, which serialises them anyway), committed, and only turned into
'succeeded' once the password proved right. So concurrent guesses in several workers are all
counted, no lock is held while the password hash is computed (~70 ms of scrypt), and a worker that
dies mid-check leaves a failure, never a free guess.

A username is locked when its 5 latest counting failures lie within 15 minutes: from the 5th
failure on, every attempt is refused for 15 minutes, with the right password too. Refused attempts
count for nothing (otherwise an attacker could keep a clerk locked out forever by guessing once a
minute). An address is throttled the same way after 30 failures. A success clears that username's
failures (they keep counting for the address).

Sessions. A row per sign-in; the cookie holds a random id, the table its SHA-256. A session is
refused once it has ended (logout, idle), once the user is inactive, or once the user's
`session_generation` moved on (core.models bumps it on every disable and password change, from
whatever code does it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.orm import Session

from core.audit import Actor, append_audit
from core.db import is_sqlite
from core.models import LoginAttempt, User, UserSession

USERNAME_FAILURES = 5
ADDRESS_FAILURES = 30
WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
# last_seen_at is written at most this often: a page view is a read, and one UPDATE a minute per
# signed-in clerk is the price of an idle timeout the server enforces itself.
TOUCH_EVERY = timedelta(seconds=60)
# Attempts older than this are of no use to the throttle (the audit log keeps the history).
ATTEMPTS_KEPT = timedelta(days=1)
SESSIONS_KEPT = timedelta(days=30)
FIELD_MAX = 64  # the columns' width: a longer username cannot exist anyway


@dataclass(frozen=True)
class Refusal:
    """Why an attempt is refused, and until when."""

    by: str  # 'username' | 'address'
    until: datetime


def _field(value: str) -> str:
    return value.strip()[:FIELD_MAX]


def _advisory_key(kind: str, value: str) -> int:
    digest = hashlib.sha256(f"feeservice-signin:{kind}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _serialise(session: Session, username: str, address: str) -> None:
    """Attempts for one username, or from one address, take turns. Always username first, then
    address: a transaction holding an address lock never waits for a username lock, so there is
    no deadlock."""
    if is_sqlite(session):
        return  # BEGIN IMMEDIATE already made this transaction the only writer
    for key in (_advisory_key("user", username), _advisory_key("addr", address)):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _locked_until(session: Session, *criteria: object, limit: int, now: datetime) -> datetime | None:
    recent = list(session.scalars(
        select(LoginAttempt.at)
        .where(*criteria, LoginAttempt.outcome == "failed", LoginAttempt.at > now - WINDOW - LOCKOUT)  # type: ignore[arg-type]
        .order_by(LoginAttempt.at.desc())
        .limit(limit)
    ))
    if len(recent) < limit or recent[0] - recent[-1] > WINDOW:
        return None
    until = recent[0] + LOCKOUT
    return until if now < until else None


def refusal_for(session: Session, username: str, address: str, now: datetime) -> Refusal | None:
    until = _locked_until(session, LoginAttempt.username == username, LoginAttempt.cleared.is_(False),
                          limit=USERNAME_FAILURES, now=now)
    if until is not None:
        return Refusal("username", until)
    until = _locked_until(session, LoginAttempt.address == address, limit=ADDRESS_FAILURES, now=now)
    if until is not None:
        return Refusal("address", until)
    return None


def begin_attempt(session: Session, audit_key: str, *, username: str, address: str,
                  now: datetime) -> tuple[int | None, Refusal | None]:
    """Count an attempt before its password is checked. Returns the attempt's id, or (None, the
    refusal) when the throttle refuses it (audited here; the password is never looked at)."""
    username, address = _field(username), _field(address)
    _serialise(session, username, address)
    refusal = refusal_for(session, username, address, now)
    attempt = LoginAttempt(username=username, address=address, at=now,
                           outcome="refused" if refusal else "failed", cleared=False)
    session.add(attempt)
    session.flush()
    if refusal is not None:
        append_audit(session, audit_key, Actor(kind="anonymous", name=address), "signin.refused", "user", username,
                     after={"username": username, "address": address, "by": refusal.by,
                            "until": refusal.until.isoformat()})
        return None, refusal
    return attempt.id, None


def fail_attempt(session: Session, audit_key: str, attempt_id: int, *, username: str, address: str) -> None:
    """The password (or the username) was wrong: the attempt stays counted; audited without the
    password typed."""
    append_audit(session, audit_key, Actor(kind="anonymous", name=_field(address)), "signin.failed", "user",
                 _field(username), after={"username": _field(username), "address": _field(address),
                                          "attempt": attempt_id})


def succeed_attempt(session: Session, audit_key: str, attempt_id: int, user: User, *, address: str,
                    now: datetime) -> str:
    """The password was right: clear the username's failures, open a session and return the id
    for the cookie (shown once; only its hash is stored)."""
    session.execute(update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(outcome="succeeded"))
    session.execute(update(LoginAttempt)
                    .where(LoginAttempt.username == user.username, LoginAttempt.cleared.is_(False))
                    .values(cleared=True))
    # The user row is re-read in this transaction: the generation must be the one now in force.
    current = session.get(User, user.id)
    if current is None:
        raise LookupError(user.id)
    current.last_login_at = now
    token = secrets.token_urlsafe(32)
    row = UserSession(token_hash=_hash(token), user_id=current.id, generation=current.session_generation,
                      address=_field(address), created_at=now, last_seen_at=now)
    session.add(row)
    session.flush()
    append_audit(session, audit_key, Actor(kind="user", name=current.username, id=current.id), "signin.succeeded",
                 "user", current.id, after={"address": _field(address), "session": row.id})
    # Sign-ins are few (a few per clerk a day): purging here keeps both tables small without a job.
    purge(session, now)
    return token


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionCheck:
    """What a request's session cookie is worth: the user, or why not."""

    user: User | None
    session_id: int | None
    verdict: str  # 'ok' | 'touch' (ok, last_seen_at is due) | 'idle' | 'revoked' | 'ended' | 'unknown'


def check_session(session: Session, token: str, now: datetime, idle: timedelta) -> SessionCheck:
    """Read-only: judge a session cookie. The caller writes what the verdict asks for
    (touch_session / end_session) in a write transaction, so that page views stay reads."""
    found = session.execute(
        select(UserSession, User).join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == _hash(token))
    ).first()
    if found is None:
        return SessionCheck(None, None, "unknown")
    row, user = found
    if row.ended_at is not None:
        return SessionCheck(None, row.id, "ended")
    if not user.active or row.generation != user.session_generation:
        return SessionCheck(None, row.id, "revoked")
    if now - row.last_seen_at > idle:
        return SessionCheck(None, row.id, "idle")
    return SessionCheck(user, row.id, "touch" if now - row.last_seen_at >= TOUCH_EVERY else "ok")


def touch_session(session: Session, session_id: int, now: datetime) -> None:
    session.execute(update(UserSession).where(UserSession.id == session_id, UserSession.ended_at.is_(None))
                    .values(last_seen_at=now))


def end_session(session: Session, audit_key: str, session_id: int, reason: str, now: datetime) -> None:
    """End one session (logout, idle, revoked); audited once, when it actually ends."""
    row = session.get(UserSession, session_id)
    if row is None or row.ended_at is not None:
        return
    row.ended_at, row.end_reason = now, reason
    user = session.get(User, row.user_id)
    actor = Actor(kind="user", name=user.username, id=user.id) if user is not None else Actor.system()
    append_audit(session, audit_key, actor, f"signin.session-{reason}", "user", row.user_id,
                 after={"session": row.id})


def purge(session: Session, now: datetime) -> tuple[int, int]:
    """Delete attempts the throttle no longer looks at and long-ended sessions; returns the counts."""
    attempts = session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - ATTEMPTS_KEPT))
    cutoff = now - SESSIONS_KEPT
    sessions = session.execute(delete(UserSession).where(
        or_(UserSession.ended_at < cutoff, UserSession.last_seen_at < cutoff)))
    return int(attempts.rowcount or 0), int(sessions.rowcount or 0)  # type: ignore[attr-defined]
