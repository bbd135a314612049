"""Issuing, reading, listing and cancelling payment notices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit import Actor, append_audit
from core.clock import utcnow, zone
from core.db import table_of
from core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from core.models import Role, User
from core.money import format_yuan
from fees.models import FeeItem
from fees.service import claim_in_use, fee_in_force
from notices.models import Notice, NoticeLine, NoticeSerial, NoticeStatus
from notices.numbers import compose_notice_number, group_digits, normalise_notice_number

MAX_LINES = 50
MAX_DUE_DAYS = 366


class UnknownFee(DomainError):
    status = 422
    code = "unknown-fee"
    title = _l("收费项目不存在或不在有效期内")


class FeeNotOfDepartment(DomainError):
    status = 422
    code = "fee-not-of-department"
    title = _l("收费项目不属于本部门")


class NoticeNotFound(NotFound):
    title = _l("缴款通知书不存在")


class NoticeAlreadyPaid(DomainError):
    status = 409
    code = "notice-already-paid"
    title = _l("该缴款通知书已缴费")


class NoticeCancelled(DomainError):
    status = 409
    code = "notice-cancelled"
    title = _l("该缴款通知书已作废")


class NoticeExpired(DomainError):
    status = 409
    code = "notice-expired"
    title = _l("该缴款通知书已过缴费期限")


@dataclass(frozen=True)
class NoticeSettings:
    region_code: str
    timezone: str
    due_days: int
    audit_key: str


@dataclass(frozen=True)
class LineRequest:
    fee_code: str
    quantity: int
    override_amount: int | None = None
    override_reason: str | None = None


_SERIALS = table_of(NoticeSerial).c
_BUMP_SERIAL = (update(table_of(NoticeSerial))
                .where(_SERIALS.region_code == bindparam("serial_region"), _SERIALS.year == bindparam("serial_year"))
                .values(last_serial=_SERIALS.last_serial + 1).returning(_SERIALS.last_serial))


def allocate_serial(session: Session, region_code: str, year: int) -> int:
    """Next serial for the region and year; the counter row stays locked until commit.

    Core statements on the session's connection; the year's row is inserted only when the UPDATE
    found none (once a year per region)."""
    connection = session.connection()
    key = {"serial_region": region_code, "serial_year": year}
    serial = connection.execute(_BUMP_SERIAL, key).scalar_one_or_none()
    if serial is None:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        connection.execute(insert(NoticeSerial).values(region_code=region_code, year=year, last_serial=0)
                           .on_conflict_do_nothing())
        serial = connection.execute(_BUMP_SERIAL, key).scalar_one()
    return int(serial)


def issue_notice(
    session: Session,
    settings: NoticeSettings,
    clerk: User,
    *,
    department_code: str,
    payer_name: str,
    items: list[LineRequest],
    payer_id_number: str | None = None,
    case_reference: str | None = None,
    due_date: date | None = None,
) -> Notice:
    """Price every line from the schedule in force today; never from a price the client sends."""
    issuer = _issuing_clerk(session, clerk, department_code)
    department = issuer.department
    assert department is not None
    now = utcnow()
    today = now.astimezone(zone(settings.timezone)).date()
    errors: dict[str, list[str]] = {}
    if not items:
        errors["items"] = [_("至少需要一个收费项目。")]
    elif len(items) > MAX_LINES:
        errors["items"] = [_("一张通知书最多 %(n)d 个收费项目。", n=MAX_LINES)]
    if not payer_name:
        errors["payer.name"] = [_("请填写缴款人姓名。")]
    if due_date is None:
        due_date = today + timedelta(days=settings.due_days)
    elif due_date < today:
        errors["due_date"] = [_("缴费期限不能早于今天。")]
    elif due_date > today + timedelta(days=MAX_DUE_DAYS):
        errors["due_date"] = [_("缴费期限不能超过一年。")]
    if errors:
        raise ValidationFailed(errors)

    lines: list[NoticeLine] = []
    fees: list[FeeItem] = []
    for position, request in enumerate(items):
        fee = fee_in_force(session, request.fee_code, today)
        if fee is None:
            raise UnknownFee(_("收费代码 %(code)s 不存在或今天不在有效期内（第 %(n)d 项）。",
                               code=request.fee_code, n=position + 1),
                             errors={f"items.{position}.fee_code": [_("未知或已失效的收费代码。")]})
        if fee.department_id != department.id:
            raise FeeNotOfDepartment(_("收费代码 %(code)s 属于 %(dept)s，不能由本部门开具。",
                                       code=fee.code, dept=fee.department.name),
                                     errors={f"items.{position}.fee_code": [_("不属于本部门。")]})
        full_amount = fee.amount * request.quantity
        amount = full_amount
        if request.override_amount is not None:
            if request.override_amount > full_amount:
                raise ValidationFailed({f"items.{position}.override_amount": [
                    _("减免后的金额不能超过按标准计算的 %(amount)s 元（%(fen)d 分）。",
                      amount=format_yuan(full_amount), fen=full_amount)]})
            amount = request.override_amount
        fees.append(fee)
        lines.append(NoticeLine(
            position=position, fee_item_id=fee.id, fee_code=fee.code, name=fee.name, unit=fee.unit,
            quantity=request.quantity, unit_amount=fee.amount, amount=amount,
            override_reason=request.override_reason if request.override_amount is not None else None,
        ))
    total = sum(line.amount for line in lines)
    if total <= 0:
        raise ValidationFailed({"items": [_("合计金额为零：全额减免的事项无需开具缴款通知书。")]})
    # Lock the versions priced from (and check that a concurrent import did not just change them).
    claim_in_use(session, fees, today)

    year = today.year
    serial = allocate_serial(session, settings.region_code, year)
    notice = Notice(
        number=compose_notice_number(settings.region_code, year, serial),
        region_code=settings.region_code, year=year, serial=serial,
        department=department, case_reference=case_reference or None, issued_by=issuer,
        payer_name=payer_name, payer_id_number=payer_id_number or None,
        total=total, currency="CNY", status=NoticeStatus.ISSUED,
        issued_at=now, issued_by_id=issuer.id, due_date=due_date, lines=lines,
    )
    session.add(notice)
    session.flush()
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id),
                 "notice.issued", "notice", notice.number,
                 after={"department": department.code, "payer_name": payer_name, "total": total,
                        "due_date": due_date,
                        "lines": [[ln.fee_code, ln.fee_item_id, ln.quantity, ln.unit_amount,
                                   ln.amount, ln.override_reason] for ln in lines]})
    return notice


def _issuing_clerk(session: Session, clerk: User, department_code: str) -> User:
    """The clerk as a row of this session, with the department (one SELECT, joined): the notice
    refers to both, so nothing is loaded later, while the serial and audit rows are locked."""
    if clerk.role != Role.WINDOW or clerk.department is None:
        raise Forbidden(_("只有受理窗口可以开具缴款通知书。"))
    if clerk.department.code != department_code:
        raise Forbidden(_("只能为本部门（%(dept)s）开具缴款通知书。", dept=clerk.department.name))
    issuer = session.get(User, clerk.id)
    if (issuer is None or not issuer.active or issuer.role != Role.WINDOW or issuer.department is None
            or issuer.department.code != department_code):  # changed since the token was looked up
        raise Forbidden(_("只有受理窗口可以开具缴款通知书。"))
    return issuer


def check_can_view(user: User, notice: Notice) -> None:
    if user.role == Role.WINDOW and notice.department_id != user.department_id:
        raise Forbidden(_("该缴款通知书属于其他部门。"))


def _notice_by_number(for_update: bool) -> Select[Notice]:
    query = select(Notice).where(Notice.number == bindparam("notice_number"))
    if for_update:
        # FOR UPDATE on PostgreSQL; on SQLite the transaction already began IMMEDIATE.
        query = query.with_for_update(of=Notice)
    return query


# Built once: the statement's cache key is then computed once, not on every request.
_NOTICE_BY_NUMBER = {for_update: _notice_by_number(for_update) for for_update in (False, True)}


def find_notice(session: Session, number_text: str, *, for_update: bool = False) -> Notice:
    """Raises InvalidNoticeNumber for a mistyped number and NoticeNotFound for an unknown one."""
    number = normalise_notice_number(number_text)
    notice = session.scalar(_NOTICE_BY_NUMBER[for_update], {"notice_number": number})
    if notice is None:
        raise notice_not_found(number)
    return notice


def notice_not_found(number: str) -> NoticeNotFound:
    return NoticeNotFound(_("没有编号为 %(n)s 的缴款通知书。", n=group_digits(number)))


def cancel_notice(session: Session, settings: NoticeSettings, clerk: User, number: str,
                  reason: str) -> Notice:
    notice = find_notice(session, number, for_update=True)
    check_can_view(clerk, notice)
    if clerk.role != Role.WINDOW:
        raise Forbidden(_("只有开具部门的受理窗口可以作废缴款通知书。"))
    if not reason:
        raise ValidationFailed({"reason": [_("请填写作废原因。")]})
    if notice.status == NoticeStatus.PAID:
        raise NoticeAlreadyPaid(_("已缴费的通知书不能作废；如需退费，请由财务冲红收据。"))
    if notice.status == NoticeStatus.CANCELLED:
        raise NoticeCancelled(_("该缴款通知书已于此前作废。"))
    before = notice.status
    notice.status = NoticeStatus.CANCELLED
    notice.cancelled_at = utcnow()
    notice.cancelled_by_id = clerk.id
    notice.cancel_reason = reason
    append_audit(session, settings.audit_key, Actor("user", clerk.username, clerk.id),
                 "notice.cancelled", "notice", notice.number,
                 before={"status": before}, after={"status": notice.status, "reason": reason})
    return notice


@dataclass(frozen=True)
class NoticeFilter:
    department_id: int | None = None
    status: str | None = None
    issued_from: date | None = None
    issued_to: date | None = None
    q: str | None = None


def list_notices(session: Session, timezone: str, today: date, flt: NoticeFilter, *,
                 page: int, per_page: int) -> tuple[list[Notice], int]:
    query: Select[Any] = select(Notice)
    if flt.department_id is not None:
        query = query.where(Notice.department_id == flt.department_id)
    if flt.status == NoticeStatus.EXPIRED:
        query = query.where(or_(Notice.status == NoticeStatus.EXPIRED,
                                and_(Notice.status == NoticeStatus.ISSUED, Notice.due_date < today)))
    elif flt.status == NoticeStatus.ISSUED:
        query = query.where(Notice.status == NoticeStatus.ISSUED, Notice.due_date >= today)
    elif flt.status:
        query = query.where(Notice.status == flt.status)
    tz = zone(timezone)
    if flt.issued_from:
        query = query.where(Notice.issued_at >= datetime.combine(flt.issued_from, time(), tz))
    if flt.issued_to:
        query = query.where(
            Notice.issued_at < datetime.combine(flt.issued_to + timedelta(days=1), time(), tz))
    if flt.q:
        compact = "".join(flt.q.split())
        pattern = "%" + flt.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Notice.number == compact,
                                Notice.payer_name.like(pattern, escape="\\"),
                                Notice.case_reference.like(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    notices: list[Notice] = list(session.scalars(
        query.order_by(Notice.issued_at.desc(), Notice.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
    ))
    return notices, int(total)


def settings_from_config(config: Mapping[str, Any]) -> NoticeSettings:
    """Build the plain settings from the app config mapping (entry points pass app.config)."""
    return NoticeSettings(region_code=str(config["FEESVC_REGION_CODE"]), timezone=str(config["FEESVC_TIMEZONE"]),
                          due_days=int(config["FEESVC_DUE_DAYS"]), audit_key=str(config["FEESVC_AUDIT_KEY"]))


def expire_overdue(session: Session, settings: NoticeSettings, today: date) -> list[str]:
    """Mark unpaid notices past their due date as expired (the nightly job); returns their numbers."""
    overdue = list(session.scalars(
        select(Notice).where(Notice.status == NoticeStatus.ISSUED, Notice.due_date < today)
        .with_for_update(of=Notice, skip_locked=True)
    ))
    for notice in overdue:
        notice.status = NoticeStatus.EXPIRED
        append_audit(session, settings.audit_key, Actor.system("notice expiry"), "notice.expired", "notice",
                     notice.number, before={"status": NoticeStatus.ISSUED},
                     after={"status": NoticeStatus.EXPIRED, "due_date": notice.due_date})
    return [n.number for n in overdue]
