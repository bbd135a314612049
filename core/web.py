"""Small request-side helpers shared by the entry points."""

from __future__ import annotations

from flask import current_app, request


def public_base_url() -> str:
    """FEESVC_PUBLIC_URL, else the host the request came to (API.md)."""
    configured = str(current_app.config.get("FEESVC_PUBLIC_URL") or "")
    return (configured or request.host_url).rstrip("/")
