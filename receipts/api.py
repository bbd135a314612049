from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_smorest import Blueprint

from core.api_idempotency import idempotent
from core.auth import BEARER, api_roles, api_user, public
from core.db import reading, unit_of_work
from core.models import Role
from core.web import public_base_url
from payments.service import void_receipt
from receipts import service
from receipts.pdf import render_receipt_pdf
from receipts.schemas import (
    CertificateEnvelope,
    CertificateIn,
    PublicReceiptOut,
    ReceiptOut,
    VerifyArgs,
    VoidIn,
    certificate_view,
    receipt_view,
)

blp = Blueprint("receipts_api", __name__, url_prefix="/api/v1", description="收据、核验与发证")
STAFF = (Role.CASHIER, Role.FINANCE, Role.ADMIN, Role.WINDOW)


@blp.route("/receipts/<number>", methods=["GET"])
@api_roles(*STAFF)
@blp.response(200, ReceiptOut)
@blp.doc(security=BEARER)
def get_receipt(number: str) -> dict[str, Any]:
    """One receipt (a window: its own department's only)."""
    user = api_user(*STAFF)
    with reading() as session:
        receipt = service.find_receipt(session, number)
        service.check_can_view(user, receipt.notice)
        return receipt_view(receipt, service.verification_url(public_base_url(), receipt))


@blp.route("/receipts/<number>/pdf", methods=["GET"])
@api_roles(Role.CASHIER, Role.FINANCE, Role.ADMIN)
@blp.response(200, content_type="application/pdf")
@blp.doc(security=BEARER)
def receipt_pdf(number: str) -> Response:
    """The printable receipt with its QR code; every print after the first is marked 补打."""
    user = api_user(Role.CASHIER, Role.FINANCE, Role.ADMIN)
    with unit_of_work() as session:
        receipt = service.find_receipt(session, number)
        is_copy = service.record_print(session, receipt, user)
        pdf = render_receipt_pdf(session, receipt, current_app.config, public_base_url(), is_copy=is_copy)
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="receipt-{receipt.number}.pdf"'})


@blp.route("/receipts/<number>/void", methods=["POST"])
@api_roles(Role.FINANCE)
@idempotent
@blp.arguments(VoidIn)
@blp.response(200, ReceiptOut)
@blp.doc(security=BEARER)
def void(data: dict[str, Any], number: str) -> dict[str, Any]:
    """冲红 (finance): the payment becomes refund_due and the notice payable again."""
    clerk = api_user(Role.FINANCE)
    with unit_of_work() as session:
        receipt = void_receipt(session, service.receipt_settings(current_app.config), clerk, number,
                               data["reason"])
        return receipt_view(receipt, service.verification_url(public_base_url(), receipt))


@blp.route("/public/receipts/<number>", methods=["GET"])
@public
@blp.arguments(VerifyArgs, location="query")
@blp.response(200, PublicReceiptOut)
def verify_receipt(args: dict[str, Any], number: str) -> dict[str, Any]:
    """Anyone may verify a receipt with its code; the payer's name is masked."""
    with reading() as session:
        return service.verify_public(session, number, args["code"])


@blp.route("/notices/<number>/certificate", methods=["POST"])
@api_roles(Role.WINDOW)
@idempotent
@blp.arguments(CertificateIn)
@blp.response(201, CertificateEnvelope)
@blp.doc(security=BEARER)
def issue_certificate(data: dict[str, Any], number: str) -> dict[str, Any]:
    """Issue the certificate: only with a valid receipt for the full total, once."""
    clerk = api_user(Role.WINDOW)
    with unit_of_work() as session:
        certificate = service.issue_certificate(session, service.receipt_settings(current_app.config), clerk,
                                                number, data.get("certificate_number"))
        return {"certificate": certificate_view(certificate)}
