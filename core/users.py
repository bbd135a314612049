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
# Password rule (issue 10): long enough to resist guessing within the sign-in throttle, not the
# username, not one character repeated. No composition rules: they push people to "Passw0rd!".
PASSWORD_MIN = 10
PASSWORD_MAX = 200  # the sign-in form accepts no longer
# Below this a username is too short to be looked for inside a password ("li" is in "delicious").
USERNAME_IN_PASSWORD_MIN = 4
# scrypt (werkzeug default parameters); tests swap in a cheap method to stay fast.
PASSWORD_HASH_METHOD = "scrypt"


class UserExists(DomainError):
    status = 409
    code = "user-exists"


def password_problems(password: str, username: str) -> list[str]:
    """What is wrong with a password for this user (empty: it is acceptable)."""
    problems: list[str] = []
    if len(password) < PASSWORD_MIN:
        problems.append(_("密码至少 %(n)d 个字符。", n=PASSWORD_MIN))
    if len(password) > PASSWORD_MAX:
        problems.append(_("密码最多 %(n)d 个字符。", n=PASSWORD_MAX))
    name = username.strip().casefold()
    folded = password.casefold()
    if name and (folded == name or (len(name) >= USERNAME_IN_PASSWORD_MIN and name in folded)):
        problems.append(_("密码不能与用户名相同，也不能包含用户名。"))
    if password and len(set(password)) == 1:
        problems.append(_("密码不能由同一个字符重复组成。"))
    return problems


def _generated_password(username: str) -> str:
    while True:  # a random 16 characters almost never contain the username; never print one that does
        candidate = secrets.token_urlsafe(12)
        if not password_problems(candidate, username):
            return candidate


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
    if password is not None and (problems := password_problems(password, username)):
        errors["password"] = problems
    if errors:
        raise ValidationFailed(errors)
    department = None
    if department_code:
        department = session.scalar(select(Department).where(Department.code == department_code))
        if department is None:
            raise NotFound(_("部门 %(code)s 不存在。", code=department_code))
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExists(_("用户 %(name)s 已存在。", name=username))
    password = password or _generated_password(username)
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


def set_password(session: Session, audit_key: str, actor: Actor, *, username: str,
                 password: str | None = None) -> str:
    """A new password (generated when none is given), returned once. Every page session of the
    user ends (core.models bumps the session generation when the hash changes)."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise NotFound(_("用户 %(name)s 不存在。", name=username))
    if password is not None and (problems := password_problems(password, user.username)):
        raise ValidationFailed({"password": problems})
    password = password or _generated_password(user.username)
    user.password_hash = generate_password_hash(password, method=PASSWORD_HASH_METHOD)
    append_audit(session, audit_key, actor, "user.password-set", "user", user.id, after={"username": user.username})
    return password


def set_user_active(session: Session, audit_key: str, actor: Actor, *, username: str, active: bool) -> User:
    """Disable or enable a user. Disabling ends every page session (the session generation moves
    on) and makes every token answer 401 (user_for_token checks `active`)."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        raise NotFound(_("用户 %(name)s 不存在。", name=username))
    if user.active != active:
        user.active = active
        append_audit(session, audit_key, actor, "user.enabled" if active else "user.disabled", "user", user.id,
                     after={"username": user.username})
    session.flush()
    return user


_DUMMY_HASH = generate_password_hash("not-a-real-password")
