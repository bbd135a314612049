from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask_smorest import Blueprint

from core.auth import api_roles, api_user
from core.clock import today
from core.db import reading, unit_of_work
from core.models import Role
from core.web import public_base_url
from notices import service
from notices.pdf import PAPER_SIZES, render_notice_pdf
from notices.schemas import CancelIn, NoticeIn, NoticeListArgs, NoticeOut, NoticePageOut, notice_view
from payments.schemas import NoticeWithPaymentOut, notice_with_payment_view

blp = Blueprint("notices_api", __name__, url_prefix="/api/v1", description="缴款通知书")

ANY_STAFF = (Role.WINDOW, Role.CASHIER, Role.FINANCE, Role.ADMIN)


def _settings() -> service.NoticeSettings:
    return service.settings_from_config(current_app.config)


def _today() -> Any:
    return today(current_app.config["FEESVC_TIMEZONE"])


@blp.route("/notices", methods=["POST"])
@api_roles(Role.WINDOW)
@blp.arguments(NoticeIn())  # one instance: webargs would build the schema again per request
@blp.response(201, NoticeOut)
@blp.doc(security=[{"bearer": []}])
def issue_notice(data: dict[str, Any]) -> dict[str, Any]:
    """Issue a payment notice priced from the schedule in force today (window)."""
    clerk = api_user(Role.WINDOW)
    lines = [service.LineRequest(**line) for line in data["items"]]
    with unit_of_work() as session:
        notice = service.issue_notice(
            session, _settings(), clerk, department_code=data["department"],
            payer_name=data["payer"]["name"], payer_id_number=data["payer"].get("id_number"),
            case_reference=data.get("case_reference"), due_date=data.get("due_date"), items=lines,
        )
        return notice_view(notice, _today())


@blp.route("/notices", methods=["GET"])
@api_roles(*ANY_STAFF)
@blp.arguments(NoticeListArgs, location="query")
@blp.response(200, NoticePageOut)
@blp.doc(security=[{"bearer": []}])
def list_notices(args: dict[str, Any]) -> dict[str, Any]:
    """List notices (a window sees its own department's only)."""
    user = api_user(*ANY_STAFF)
    flt = service.NoticeFilter(
        department_id=user.department_id if user.role == Role.WINDOW else None,
        status=args.get("status"), issued_from=args.get("from_"), issued_to=args.get("to"),
        q=args.get("q") or None,
    )
    day = _today()
    with reading() as session:
        items, total = service.list_notices(session, current_app.config["FEESVC_TIMEZONE"], day, flt,
                                            page=args["page"], per_page=args["per_page"])
        return {"items": [notice_view(n, day) for n in items], "total": total,
                "page": args["page"], "per_page": args["per_page"]}


@blp.route("/notices/<number>", methods=["GET"])
@api_roles(*ANY_STAFF)
@blp.response(200, NoticeWithPaymentOut)
@blp.doc(security=[{"bearer": []}])
def get_notice(number: str) -> dict[str, Any]:
    """One notice (a window: its own department's only)."""
    user = api_user(*ANY_STAFF)
    with reading() as session:
        notice = service.find_notice(session, number)
        service.check_can_view(user, notice)
        return notice_with_payment_view(session, notice, _today(), public_base_url())


@blp.route("/notices/<number>/pdf", methods=["GET"])
@api_roles(*ANY_STAFF)
@blp.response(200, content_type="application/pdf")
@blp.doc(security=[{"bearer": []}], parameters=[{"in": "query", "name": "size",
         "schema": {"type": "string", "enum": list(PAPER_SIZES)}}],
         responses={"200": {"description": "PDF",
                            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}})
def notice_pdf(number: str) -> Response:
    """The printable payment notice (A4 default, ?size=A5)."""
    user = api_user(*ANY_STAFF)
    size = request.args.get("size", "A4").upper()
    if size not in PAPER_SIZES:
        size = "A4"
    with reading() as session:
        notice = service.find_notice(session, number)
        service.check_can_view(user, notice)
        pdf = render_notice_pdf(notice, current_app.config, paper=size)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="notice-{notice.number}.pdf"'})


@blp.route("/notices/<number>/cancel", methods=["POST"])
@api_roles(Role.WINDOW)
@blp.arguments(CancelIn)
@blp.response(200, NoticeOut)
@blp.doc(security=[{"bearer": []}])
def cancel_notice(data: dict[str, Any], number: str) -> dict[str, Any]:
    """Cancel an unpaid notice with a reason (the issuing department's window)."""
    clerk = api_user(Role.WINDOW)
    with unit_of_work() as session:
        notice = service.cancel_notice(session, _settings(), clerk, number, data["reason"])
        return notice_view(notice, _today())
