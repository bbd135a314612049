"""Reading the schedule in force, and importing it from CSV (all-or-nothing)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.audit import Actor, append_audit
from core.errors import DomainError
from core.models import Department
from core.money import MAX_AMOUNT
from fees.models import FeeItem

CSV_COLUMNS = [
    "code", "name", "department_code", "department_name", "unit", "amount",
    "legal_basis", "effective_from", "effective_to",
]
LIMITS = {"code": 32, "name": 200, "department_code": 32, "department_name": 200, "unit": 32,
          "legal_basis": 500}


class FeeScheduleRefused(DomainError):
    status = 422
    code = "fee-schedule-refused"
    title = _l("收费标准文件被拒绝")

    def __init__(self, problems: list[str]) -> None:
        super().__init__("；".join(problems[:20]), problems=problems)
        self.problems = problems


@dataclass
class ImportSummary:
    rows: int = 0
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    departments_created: list[str] = field(default_factory=list)
    departments_renamed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.departments_created or self.departments_renamed)


@dataclass
class _Row:
    line: int
    values: dict[str, Any]


def items_in_force(session: Session, on: date) -> list[FeeItem]:
    return list(
        session.scalars(
            select(FeeItem)
            .join(FeeItem.department)
            .where(
                FeeItem.effective_from <= on,
                or_(FeeItem.effective_to.is_(None), FeeItem.effective_to >= on),
            )
            .order_by(Department.code, FeeItem.code)
        )
    )


def fee_in_force(session: Session, code: str, on: date) -> FeeItem | None:
    return session.scalar(
        select(FeeItem).where(
            FeeItem.code == code,
            FeeItem.effective_from <= on,
            or_(FeeItem.effective_to.is_(None), FeeItem.effective_to >= on),
        )
    )


class FeeScheduleChanged(DomainError):
    status = 409
    code = "fee-schedule-changed"
    title = _l("收费标准刚刚更新")


def claim_in_use(session: Session, items: Iterable[FeeItem], on: date) -> None:
    """Mark the versions a notice was priced from as used, and hold them until commit.

    One conditional UPDATE per version, in id order, so that concurrent notices and imports (which
    lock the versions they touch in id order too) take row locks in one order and cannot
    deadlock. Each succeeds only if the version still has the amount and department the notice
    was priced with and is still in force on `on`: an import that changed it in between makes the
    notice fail with FeeScheduleChanged (the clerk resubmits); an import that comes later waits
    for the row, then sees `in_use` and refuses to change the amount.
    """
    for item in sorted({item.id: item for item in items}.values(), key=lambda item: item.id):
        claimed = session.execute(
            update(FeeItem)
            .where(
                FeeItem.id == item.id,
                FeeItem.amount == item.amount,
                FeeItem.department_id == item.department_id,
                FeeItem.effective_from <= on,
                or_(FeeItem.effective_to.is_(None), FeeItem.effective_to >= on),
            )
            .values(in_use=True)
            .returning(FeeItem.id)
        ).first()
        if claimed is None:
            raise FeeScheduleChanged(_("收费项目 %(code)s 的收费标准刚刚更新，请重新开具。", code=item.code))


def _parse_date(text: str) -> date:
    return date.fromisoformat(text)


def parse_fee_csv(content: bytes) -> list[_Row]:
    """Every problem of the file at once, each with its line number; raises if there is any."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise FeeScheduleRefused([_("第 %(line)d 行：文件不是 UTF-8 编码（可能是 GBK），请另存为 UTF-8 后重试。",
                                    line=line)]) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise FeeScheduleRefused([_("文件为空。")]) from None
    except csv.Error as exc:
        raise FeeScheduleRefused([_("第 1 行：%(err)s", err=str(exc))]) from exc
    if header != CSV_COLUMNS:
        raise FeeScheduleRefused(
            [_("第 1 行：表头应为 %(cols)s。", cols=",".join(CSV_COLUMNS))]
        )
    rows: list[_Row] = []
    problems: list[str] = []
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(CSV_COLUMNS):
                problems.append(_("第 %(line)d 行：应有 %(n)d 列，实有 %(m)d 列。",
                                  line=line, n=len(CSV_COLUMNS), m=len(record)))
                continue
            values, row_problems = _parse_row(dict(zip(CSV_COLUMNS, (c.strip() for c in record), strict=True)))
            problems.extend(_("第 %(line)d 行：%(msg)s", line=line, msg=p) for p in row_problems)
            if not row_problems:
                rows.append(_Row(line, values))
    except csv.Error as exc:
        problems.append(_("第 %(line)d 行：%(err)s", line=reader.line_num, err=str(exc)))
    seen: dict[tuple[str, date], int] = {}
    for row in rows:
        key = (row.values["code"], row.values["effective_from"])
        if key in seen:
            problems.append(_("第 %(line)d 行：与第 %(other)d 行的收费代码和生效日期重复。",
                              line=row.line, other=seen[key]))
        seen[key] = row.line
    if problems:
        raise FeeScheduleRefused(problems)
    if not rows:
        raise FeeScheduleRefused([_("文件中没有收费项目。")])
    return rows


def _parse_row(raw: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    values: dict[str, Any] = dict(raw)
    for name, limit in LIMITS.items():
        if not raw[name] and name != "legal_basis":
            problems.append(_("%(col)s 不能为空。", col=name))
        elif len(raw[name]) > limit:
            problems.append(_("%(col)s 超过 %(n)d 个字符。", col=name, n=limit))
    if not raw["amount"].isdigit() or not raw["amount"].isascii():
        problems.append(_("amount 须为以分计的非负整数，实为 “%(v)s”。", v=raw["amount"]))
    elif int(raw["amount"]) > MAX_AMOUNT:
        problems.append(_("amount 超出上限。"))
    else:
        values["amount"] = int(raw["amount"])
    for name in ("effective_from", "effective_to"):
        if name == "effective_to" and not raw[name]:
            values[name] = None
            continue
        try:
            values[name] = _parse_date(raw[name])
        except ValueError:
            problems.append(_("%(col)s 须为 YYYY-MM-DD 日期，实为 “%(v)s”。", col=name, v=raw[name]))
    if not problems and values["effective_to"] is not None and values["effective_to"] < values["effective_from"]:
        problems.append(_("effective_to 早于 effective_from。"))
    return values, problems


def import_fee_schedule(session: Session, audit_key: str, actor: Actor, content: bytes) -> ImportSummary:
    """Apply a fee schedule file. Any refused row refuses the whole file (the caller rolls back)."""
    rows = parse_fee_csv(content)
    summary = ImportSummary(rows=len(rows))
    # Lock the versions first, in id order (as notices do, see claim_in_use), so that `in_use` is
    # read as of now and no notice can start using a version whose amount this file changes.
    existing = {
        (item.code, item.effective_from): item
        for item in session.scalars(
            select(FeeItem)
            .where(FeeItem.code.in_({r.values["code"] for r in rows}))
            .order_by(FeeItem.id)
            .with_for_update(of=FeeItem)
            .execution_options(populate_existing=True)
        )
    }
    departments = _apply_departments(session, audit_key, actor, rows, summary)
    problems: list[str] = []
    for row in rows:
        v = row.values
        item = existing.get((v["code"], v["effective_from"]))
        new_state = {
            "department": v["department_code"], "name": v["name"], "unit": v["unit"],
            "amount": v["amount"], "legal_basis": v["legal_basis"],
            "effective_to": v["effective_to"],
        }
        if item is None:
            item = FeeItem(code=v["code"], effective_from=v["effective_from"],
                           department=departments[v["department_code"]])
            _assign(item, v, departments)
            session.add(item)
            existing[(item.code, item.effective_from)] = item
            summary.created.append(f"{item.code}@{item.effective_from}")
            session.flush()
            append_audit(session, audit_key, actor, "fee.created", "fee_item", item.id,
                         after={"code": item.code, "effective_from": item.effective_from, **new_state})
            continue
        old_state = {
            "department": item.department.code, "name": item.name, "unit": item.unit,
            "amount": item.amount, "legal_basis": item.legal_basis,
            "effective_to": item.effective_to,
        }
        if old_state == new_state:
            summary.unchanged += 1
            continue
        if item.in_use and (item.amount != v["amount"] or item.department.code != v["department_code"]):
            problems.append(_("第 %(line)d 行：%(code)s（%(from)s 起）已被缴款通知书使用，金额和部门不能再改；"
                              "请以新的生效日期发布新版本。",
                              line=row.line, code=item.code, **{"from": item.effective_from}))
            continue
        _assign(item, v, departments)
        summary.updated.append(f"{item.code}@{item.effective_from}")
        append_audit(session, audit_key, actor, "fee.updated", "fee_item", item.id,
                     before=old_state, after=new_state)
    problems.extend(_overlaps(list(existing.values()), rows))
    if problems:
        raise FeeScheduleRefused(problems)
    session.flush()
    return summary


def _assign(item: FeeItem, v: dict[str, Any], departments: dict[str, Department]) -> None:
    item.department = departments[v["department_code"]]
    item.name = v["name"]
    item.unit = v["unit"]
    item.amount = v["amount"]
    item.legal_basis = v["legal_basis"]
    item.effective_to = v["effective_to"]


def _overlaps(items: list[FeeItem], rows: list[_Row]) -> list[str]:
    line_of = {(r.values["code"], r.values["effective_from"]): r.line for r in rows}
    by_code: dict[str, list[FeeItem]] = defaultdict(list)
    for item in items:
        by_code[item.code].append(item)
    problems = []
    for code, versions in by_code.items():
        versions.sort(key=lambda i: i.effective_from)
        for earlier, later in zip(versions, versions[1:], strict=False):
            if earlier.effective_to is None or earlier.effective_to >= later.effective_from:
                line = line_of.get((code, later.effective_from)) or line_of.get((code, earlier.effective_from), 0)
                problems.append(_("第 %(line)d 行：%(code)s 的版本 %(a)s 与 %(b)s 生效期重叠。",
                                  line=line, code=code, a=earlier.effective_from, b=later.effective_from))
    return problems


def _apply_departments(session: Session, audit_key: str, actor: Actor, rows: list[_Row],
                       summary: ImportSummary) -> dict[str, Department]:
    wanted: dict[str, str] = {}
    problems = []
    for row in rows:
        code, name = row.values["department_code"], row.values["department_name"]
        if wanted.setdefault(code, name) != name:
            problems.append(_("第 %(line)d 行：部门 %(code)s 的名称与前文不一致。", line=row.line, code=code))
    if problems:
        raise FeeScheduleRefused(problems)
    departments = {d.code: d for d in session.scalars(select(Department).where(Department.code.in_(wanted)))}
    for code, name in wanted.items():
        department = departments.get(code)
        if department is None:
            department = Department(code=code, name=name)
            session.add(department)
            session.flush()
            departments[code] = department
            summary.departments_created.append(code)
            append_audit(session, audit_key, actor, "department.created", "department", department.id,
                         after={"code": code, "name": name})
        elif department.name != name:
            append_audit(session, audit_key, actor, "department.renamed", "department", department.id,
                         before={"name": department.name}, after={"name": name})
            department.name = name
            summary.departments_renamed.append(code)
    return departments
