"""Staff users and API tokens: the use cases behind `users create` and `tokens create`."""

from __future__ import annotations

import hashlib
import secrets

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from core.audit import Actor, append_audit
from core.clock import utcnow
from core.errors import DomainError, NotFound, ValidationFailed
from core.models import ApiToken, Department, Role, User

TOKEN_PREFIX = "fs_"
USERNAME_MAX = 64
PASSWORD_MIN = 8
# scrypt (werkzeug default parameters); tests swap in a cheap method to stay fast.
PASSWORD_HASH_METHOD = "scrypt"


class UserExists(DomainError):
    status = 409
    code = "user-exists"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    session: Session,
    audit_key: str,
    actor: Actor,
    *,
    username: str,
    role: str,
    department_code: str | None = None,
    password: str | None = None,
    display_name: str | None = None,
) -> tuple[User, str]:
    """Returns the user and its password (generated when none is given)."""
    username = username.strip()
    errors: dict[str, list[str]] = {}
    if not username or len(username) > USERNAME_MAX or not username.isprintable() or " " in username:
        errors["username"] = [_("用户名须为 1–64 个字符，且不含空格。")]
    if role not in {r.value for r in Role}:
        errors["role"] = [_("角色须为 window、cashier、finance 或 admin。")]
    if role == Role.WINDOW and not department_code:
        errors["department"] = [_("窗口用户必须指定所属部门。")]
    if password is not None and len(password) < PASSWORD_MIN:
        errors["password"] = [_("密码至少 %(n)d 个字符。", n=PASSWORD_MIN)]
    if errors:
        raise ValidationFailed(errors)
    department = None
    if department_code:
        department = session.scalar(select(Department).where(Department.code == department_code))
        if department is None:
            raise NotFound(_("部门 %(code)s 不存在。", code=department_code))
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExists(_("用户 %(name)s 已存在。", name=username))
    password = password or secrets.token_urlsafe(12)
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=generate_password_hash(password, method=PASSWORD_HASH_METHOD),
        role=role,
        department=department,
    )
    session.add(user)
    session.flush()
    append_audit(
        session,
        audit_key,
        actor,
        "user.created",
        "user",
        user.id,
        after={"username": username, "role": role, "department": department_code},
    )
    return user, password


def create_token(session: Session, audit_key: str, actor: Actor, *, username: str) -> str:
    """A new bearer token for the user; the token itself is returned once and never stored."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(_("用户 %(name)s 不存在。", name=username))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10])
    session.add(record)
    session.flush()
    append_audit(
        session, audit_key, actor, "token.created", "api_token", record.id,
        after={"user": username, "prefix": record.prefix},
    )
    return token


def user_for_token(session: Session, token: str) -> User | None:
    record = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    if record is None or not record.user.active:
        return None
    return record.user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None or not user.active:
        # Spend the same time as a real check so that usernames cannot be probed by timing.
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def revoke_token(session: Session, audit_key: str, actor: Actor, token_id: int) -> None:
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound(_("令牌不存在。"))
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        append_audit(session, audit_key, actor, "token.revoked", "api_token", record.id)


_DUMMY_HASH = generate_password_hash("not-a-real-password")
