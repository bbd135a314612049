"""Declarative base with named constraints, and the staff models every package needs."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    TypeDecorator,
    event,
    inspect,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.clock import utcnow

# Alembic docs (naming.rst): every constraint gets a stable name, on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which keeps no zone) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Money = BigInteger  # integer fen, never float


class Role(enum.StrEnum):
    WINDOW = "window"  #: an accepting window: issues notices and certificates for its department
    CASHIER = "cashier"  #: the cashier window: records payments
    FINANCE = "finance"  #: reads everything, imports statements, reconciles, voids receipts
    ADMIN = "admin"  #: users, tokens, banks, departments, the fee schedule


class Department(Base):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('window','cashier','finance','admin')", name="role_known"),
        CheckConstraint("role <> 'window' OR department_id IS NOT NULL", name="window_has_department"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Bumped whenever the user is disabled or the password changes (core.signin listens for it):
    #: a signed-in session records the generation it began in and is refused once they differ, so
    #: old cookies die whichever code path disabled the user or set the password.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    department: Mapped[Department | None] = relationship(lazy="joined")

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)


def _end_sessions(target: User, *_args: Any) -> None:
    # Only for a user already stored: constructing a User sets these attributes too. The new value
    # is a SQL expression, so that two concurrent changes both count and nothing has to be loaded.
    if inspect(target).has_identity:
        target.session_generation = User.session_generation + 1


def _on_active_set(target: User, value: Any, *_args: Any) -> None:
    if value is False:
        _end_sessions(target)


event.listen(User.active, "set", _on_active_set)
event.listen(User.password_hash, "set", _end_sessions)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored (tokens are 256-bit random, so no salt needed)."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_token_hash", "token_hash", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class UserSession(Base):
    """One signed-in page session. The cookie carries a random id; only its SHA-256 is stored, so
    reading this table does not let anyone take a session over."""

    __tablename__ = "user_sessions"
    __table_args__ = (
        Index("ix_user_sessions_token_hash", "token_hash", unique=True),
        Index("ix_user_sessions_user_id", "user_id", "ended_at"),
        CheckConstraint("end_reason IS NULL OR end_reason IN ('logout','idle','revoked')", name="end_reason_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    generation: Mapped[int] = mapped_column()
    address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(16))


class LoginAttempt(Base):
    """A sign-in attempt, for throttling across workers and nodes (API.md, Sign-in protection).

    `outcome` is 'failed' from the moment the attempt is counted until the password proved right
    ('succeeded'); an attempt refused by the throttle is 'refused' and counts for nothing. A success
    sets `cleared` on that username's failures: they stop counting for the username, not for the
    address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
        Index("ix_login_attempts_at", "at"),
        CheckConstraint("outcome IN ('failed','succeeded','refused')", name="outcome_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    cleared: Mapped[bool] = mapped_column(default=False)
