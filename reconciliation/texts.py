"""What finance reads about an exception: its name, its severity, and a sentence explaining it."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from core.money import format_yuan
from reconciliation.models import ExceptionType, ReconciliationException

T = ExceptionType

TYPE_LABELS: dict[str, Any] = {
    T.FEE_NOT_IN_SCHEDULE: _l("收费项目不在公示标准内"),
    T.FEE_AMOUNT_MISMATCH: _l("收费金额与公示标准不符"),
    T.PAYMENT_AMOUNT_MISMATCH: _l("缴费金额与通知书不符"),
    T.PAYMENT_WITHOUT_NOTICE: _l("缴费无对应通知书"),
    T.DUPLICATE_PAYMENT: _l("重复缴费"),
    T.PAYMENT_ON_CLOSED_NOTICE: _l("对已作废或过期的通知书缴费"),
    T.PAYMENT_WITHOUT_RECEIPT: _l("缴费无有效收据"),
    T.CERTIFICATE_WITHOUT_RECEIPT: _l("发证无有效收据"),
    T.STATEMENT_LINE_UNMATCHED: _l("银行到账无对应缴费"),
    T.PAYMENT_NOT_IN_STATEMENT: _l("银行缴费未见于对账单"),
    T.STATEMENT_AMOUNT_MISMATCH: _l("对账单金额与缴费不符"),
    T.STATEMENT_REVERSAL: _l("银行冲正"),
    T.RECEIPT_NUMBER_GAP: _l("收据号不连续"),
    T.CASH_DRAWER_MISMATCH: _l("日结现金不符"),
}

# Where money may be missing or taken without right: high; timing and priced-by-override: medium.
MEDIUM = {T.PAYMENT_NOT_IN_STATEMENT, T.FEE_AMOUNT_MISMATCH}


def type_label(kind: str) -> str:
    return str(TYPE_LABELS.get(kind, kind))


def severity(kind: str) -> str:
    return "medium" if kind in MEDIUM else "high"


def _yuan(fen: int | None) -> str:
    return "—" if fen is None else format_yuan(fen)


def describe(found: ReconciliationException) -> str:
    """One sentence, in the reader's language, saying what was found and what it means."""
    expected, actual = _yuan(found.expected_amount), _yuan(found.actual_amount)
    code, kind = found.detail_code, found.type
    if kind == T.FEE_NOT_IN_SCHEDULE:
        if code == "not_in_force":
            return _("该收费项目在开具当日不在有效期内（已废止或尚未生效）。")
        return _("该收费代码不在公示的收费标准中。")
    if kind == T.FEE_AMOUNT_MISMATCH:
        if code == "override":
            return _("窗口改价：标准应收 %(e)s 元，实收 %(a)s 元。", e=expected, a=actual)
        if code == "other_version":
            return _("按已更正的旧版本标准计价：当日标准应收 %(e)s 元，通知书 %(a)s 元。", e=expected, a=actual)
        return _("收费标准应收 %(e)s 元，通知书 %(a)s 元。", e=expected, a=actual)
    flag_texts = {
        "unknown-notice": _("银行收款时所填通知书编号不存在，款项已挂账。"),
        "amount-mismatch": _("银行收款金额 %(a)s 元与通知书应缴 %(e)s 元不符，款项已挂账。", a=actual, e=expected),
        "notice-already-paid": _("通知书已缴费，银行又收款 %(a)s 元，款项已挂账待退。", a=actual),
        "notice-cancelled": _("通知书已作废，银行仍收款 %(a)s 元，款项已挂账待退。", a=actual),
        "notice-expired": _("通知书已过期，银行仍收款 %(a)s 元，款项已挂账待退。", a=actual),
        "bank-reference-conflict": _("银行以已用过的交易流水号再次报告收款 %(a)s 元（另一张通知书或另一金额），"
                                     "款项已挂账：请与银行核实是否重复入账。", a=actual),
    }
    if code in flag_texts:
        return flag_texts[code]
    if kind == T.PAYMENT_ON_CLOSED_NOTICE:
        return _("已确认的缴费对应的通知书已作废或过期。")
    if kind == T.PAYMENT_AMOUNT_MISMATCH:
        return _("已确认缴费 %(a)s 元，通知书应缴 %(e)s 元。", a=actual, e=expected)
    if kind == T.PAYMENT_WITHOUT_RECEIPT:
        return _("缴费已确认，但没有有效收据。")
    if kind == T.CERTIFICATE_WITHOUT_RECEIPT:
        if code == "receipt_voided":
            return _("已发证，但其收据已冲红。")
        return _("已发证，但收据金额 %(a)s 元不足应缴 %(e)s 元。", a=actual, e=expected)
    if kind == T.STATEMENT_LINE_UNMATCHED:
        line_texts = {
            "names_unpaid_notice": _("银行到账 %(a)s 元，指向一张未缴费的通知书（应缴 %(e)s 元）：可能是银行回调丢失，"
                                     "可据对账单确认缴费。", a=actual, e=expected),
            "names_paid_notice": _("银行到账 %(a)s 元，指向的通知书已由其他方式缴费：疑似重复缴费，需退款。", a=actual),
            "names_closed_notice": _("银行到账 %(a)s 元，指向的通知书已作废或过期，需退款。", a=actual),
            "unknown_notice": _("银行到账 %(a)s 元，所附通知书编号不存在。", a=actual),
            "invalid_notice_number": _("银行到账 %(a)s 元，附言中的通知书编号校验位错误。", a=actual),
        }
        return line_texts.get(code or "", _("银行到账 %(a)s 元，附言中没有通知书编号。", a=actual))
    if kind == T.PAYMENT_NOT_IN_STATEMENT:
        return _("银行回调确认的缴费 %(a)s 元，不在该行当日已导入的对账单中。", a=actual)
    if kind == T.STATEMENT_AMOUNT_MISMATCH:
        return _("对账单到账 %(a)s 元，而银行回调记录为 %(e)s 元。", a=actual, e=expected)
    if kind == T.STATEMENT_REVERSAL:
        return _("银行冲正 %(a)s 元：此前到账的款项被退回。", a=actual)
    if kind == T.RECEIPT_NUMBER_GAP:
        return _("收据 %(r)s 之前的号码缺失。", r=found.receipt_number or "")
    if kind == T.CASH_DRAWER_MISMATCH:
        return _("日结申报现金 %(a)s 元，系统记录现金 %(e)s 元。", a=actual, e=expected)
    return type_label(kind)
