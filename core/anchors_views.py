"""The public page of audit anchors (审计锚点公示): the twin of GET /api/v1/public/audit-anchors."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template

from core.audit_anchors import LATEST, anchor_view, latest_anchors
from core.auth import public
from core.db import reading

bp = Blueprint("audit_anchors", __name__)


@bp.route("/audit-anchors")
@public
def index() -> Any:
    timezone = current_app.config["FEESVC_TIMEZONE"]
    with reading() as session:
        # One more than shown: the oldest row's day count needs the anchor before it (none before
        # the first anchor ever: the log was empty).
        anchors = [anchor_view(a, timezone) for a in latest_anchors(session, LATEST + 1)]
    for index, anchor in enumerate(anchors):
        older = anchors[index + 1]["entries"] if index + 1 < len(anchors) else 0
        anchor["day_entries"] = anchor["entries"] - older
    return render_template("core/audit_anchors.html", anchors=anchors[:LATEST])
