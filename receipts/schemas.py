from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marshmallow import Schema, fields, validate

from core.schemas import Moment, text
from receipts.models import Certificate, Receipt, ReceiptStatus

if TYPE_CHECKING:
    from receipts.service import IssuedReceipt


class ReceiptOut(Schema):
    number = fields.String(required=True)
    verification_code = fields.String(required=True)
    verification_url = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in ReceiptStatus]))
    notice_number = fields.String(required=True)
    amount = fields.Integer(required=True)
    currency = fields.Constant("CNY")
    issued_at = Moment(required=True)
    issued_by = fields.String(required=True)
    voided_at = Moment(allow_none=True)
    void_reason = fields.String(allow_none=True)


def receipt_view(receipt: Receipt | IssuedReceipt, verification_url: str) -> dict[str, Any]:
    return {
        "number": receipt.number, "verification_code": receipt.verification_code,
        "verification_url": verification_url, "status": receipt.status,
        "notice_number": receipt.notice_number, "amount": receipt.amount, "issued_at": receipt.issued_at,
        "issued_by": receipt.issued_by, "voided_at": receipt.voided_at, "void_reason": receipt.void_reason,
    }


class VoidIn(Schema):
    reason = text(500, required=True)


class VerifyArgs(Schema):
    code = text(32, load_default="")


class PublicReceiptOut(Schema):
    valid = fields.Boolean(required=True)
    status = fields.String(validate=validate.OneOf([s.value for s in ReceiptStatus]))
    number = fields.String()
    amount = fields.Integer()
    currency = fields.String()
    paid_at = Moment()
    department = fields.String()
    payer_name = fields.String()


class CertificateIn(Schema):
    certificate_number = text(64, allow_none=True)


class CertificateOut(Schema):
    number = fields.String(required=True)
    issued_at = Moment(required=True)
    issued_by = fields.String(required=True)
    receipt_number = fields.String(required=True)


class CertificateEnvelope(Schema):
    certificate = fields.Nested(CertificateOut, required=True)


def certificate_view(certificate: Certificate) -> dict[str, Any]:
    return {"number": certificate.number, "issued_at": certificate.issued_at,
            "issued_by": certificate.issued_by.username, "receipt_number": certificate.receipt.number}
