"""The published audit anchors (阳光操作, no sign-in): `GET /api/v1/public/audit-anchors`."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from core.audit_anchors import LATEST, anchor_view, find_anchor, latest_anchors
from core.auth import public
from core.db import reading
from core.schemas import IsoDate

blp = Blueprint("audit_anchors_api", __name__, url_prefix="/api/v1", description="审计锚点（公开）")


class AnchorArgs(Schema):
    date = IsoDate(metadata={"description": "营业日 YYYY-MM-DD；不给则列出最近 30 个"})


class AnchorOut(Schema):
    date = fields.String(required=True, metadata={"format": "date", "description": "营业日（FEESVC_TIMEZONE）"})
    last_seq = fields.Integer(required=True,
                              metadata={"description": "该日结束时最后一条审计记录的序号（0：尚无记录）"})
    last_hash = fields.String(required=True, metadata={"description": "该条记录的 HMAC-SHA256（十六进制）"})
    entries = fields.Integer(required=True, metadata={"description": "截至该条的审计记录条数"})
    created_at = fields.String(required=True, metadata={"format": "date-time", "description": "记录锚点的时间"})


class AnchorsOut(Schema):
    items = fields.List(fields.Nested(AnchorOut), required=True)


@blp.route("/public/audit-anchors", methods=["GET"])
@public
@blp.arguments(AnchorArgs, location="query")
@blp.response(200, AnchorsOut)
def audit_anchors(args: dict[str, Any]) -> dict[str, Any]:
    """The audit chain head at the end of a business date (or of the latest 30), newest first:
    save them, and `audit verify --anchors FILE` proves later that history was not rewritten."""
    timezone = current_app.config["FEESVC_TIMEZONE"]
    with reading() as session:
        anchors = [find_anchor(session, args["date"])] if args.get("date") else latest_anchors(session, LATEST)
        return {"items": [anchor_view(anchor, timezone) for anchor in anchors]}
