"""Configuration from environment variables (API.md, Operations)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_FONT = PROJECT_ROOT / "core" / "fonts" / "wqy-microhei.ttc"


def default_database_url(instance_path: str) -> str:
    return "sqlite:///" + os.path.join(instance_path, "feeservice.sqlite3")


def load_config(instance_path: str) -> dict[str, Any]:
    env = os.environ
    secret_key = env.get("SECRET_KEY") or _instance_secret(instance_path)
    return {
        "SECRET_KEY": secret_key,
        "DATABASE_URL": env.get("DATABASE_URL") or default_database_url(instance_path),
        "FEESVC_REGION_CODE": env.get("FEESVC_REGION_CODE", "990001"),
        "FEESVC_TIMEZONE": env.get("FEESVC_TIMEZONE", "Asia/Shanghai"),
        "FEESVC_DUE_DAYS": int(env.get("FEESVC_DUE_DAYS", "15")),
        "FEESVC_CENTRE_NAME": env.get("FEESVC_CENTRE_NAME", "示范县政务服务中心"),
        "FEESVC_PUBLIC_URL": env.get("FEESVC_PUBLIC_URL", ""),
        "FEESVC_PDF_FONT": env.get("FEESVC_PDF_FONT", str(BUNDLED_FONT)),
        # The audit chain is keyed so that someone with write access to the database alone
        # cannot recompute a consistent chain after altering history.
        "FEESVC_AUDIT_KEY": env.get("FEESVC_AUDIT_KEY")
        or hashlib.sha256(b"feeservice-audit:" + secret_key.encode()).hexdigest(),
        # Receipt verification codes are an HMAC of the receipt number under this key.
        "FEESVC_RECEIPT_KEY": env.get("FEESVC_RECEIPT_KEY")
        or hashlib.sha256(b"feeservice-receipt:" + secret_key.encode()).hexdigest(),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env.get("FEESVC_INSECURE_COOKIES", "") != "1",
        "REMEMBER_COOKIE_SECURE": env.get("FEESVC_INSECURE_COOKIES", "") != "1",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        # A signed-in page session ends after this many minutes without a request (API.md).
        "FEESVC_SESSION_IDLE_MINUTES": _positive_float(env.get("FEESVC_SESSION_IDLE_MINUTES"), 30.0,
                                                       "FEESVC_SESSION_IDLE_MINUTES"),
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": env.get("FEESVC_TIMEZONE", "Asia/Shanghai"),
        "WTF_CSRF_TIME_LIMIT": None,
        "API_TITLE": "feeservice",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        "JSON_SORT_KEYS": False,
    }


def _positive_float(raw: str | None, default: float, name: str) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        # Refuse to start rather than run with sessions that never (or always) time out.
        raise ValueError(f"{name} must be a positive number of minutes, not {raw!r}")
    return value


def _instance_secret(instance_path: str) -> str:
    """A random key kept in instance/ so that sessions and the audit key survive restarts."""
    import secrets

    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker wrote it first
            return _instance_secret(instance_path)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key)
        return key
