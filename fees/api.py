from __future__ import annotations

from typing import Any

from flask import current_app
from flask_smorest import Blueprint

from core.auth import public
from core.clock import today
from core.db import reading
from fees.schemas import FeeScheduleArgs, FeeScheduleOut
from fees.service import items_in_force

blp = Blueprint("fees_api", __name__, url_prefix="/api/v1", description="收费标准（公开）")


@blp.route("/fee-schedule")
@public
@blp.arguments(FeeScheduleArgs, location="query")
@blp.response(200, FeeScheduleOut)
def fee_schedule(args: dict[str, Any]) -> dict[str, Any]:
    """The published fee items in force on a date (default today)."""
    on = args.get("on") or today(current_app.config["FEESVC_TIMEZONE"])
    with reading() as session:
        return {"on": on, "items": items_in_force(session, on)}

