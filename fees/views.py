"""The public fee schedule page (收费标准公示), grouped by department."""

from __future__ import annotations

from datetime import date
from itertools import groupby
from typing import Any

from flask import Blueprint, current_app, render_template, request
from flask_babel import gettext as _

from core.auth import public
from core.clock import today
from core.db import reading
from fees.service import items_in_force

bp = Blueprint("fees", __name__, template_folder="templates")


@bp.route("/fees")
@public
def schedule() -> Any:
    error = None
    on = today(current_app.config["FEESVC_TIMEZONE"])
    if request.args.get("on"):
        try:
            on = date.fromisoformat(request.args["on"])
        except ValueError:
            error = _("日期格式应为 YYYY-MM-DD，已显示今天的收费标准。")
    with reading() as session:
        items = items_in_force(session, on)
        groups = [(department, list(rows)) for department, rows in groupby(items, key=lambda i: i.department)]
        return render_template("fees/schedule.html", groups=groups, on=on, error=error,
                               count=len(items))

