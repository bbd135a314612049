"""Bad input as a table (issue 2, "Tests that must exist").

Every row sends one bad request to the notices or fee-schedule API and asserts: the status; a
`Content-Type: application/problem+json` body with `type`, `title`, `status` and `detail`; a `type`
ending in the code of API.md; the fields named in `errors` as dotted paths (`items.0.quantity`); and
that no table of the database changed (no partial write).

The rows share one database (set up once for the module): each row compares the row counts of
every table before and after its own request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask

from core.audit import Actor
from core.db import Database
from notices.numbers import compose_notice_number
from tests.conftest import AUDIT_KEY, DEMO_FEES, PASSWORD, STAFF_USERS, Staff, make_test_app, table_counts

# --- the module's database ---------------------------------------------------------------------------

# A fee withdrawn long ago and one not yet in force, both of BDC (the `window` user's department).
EXTRA_FEES = (
    "code,name,department_code,department_name,unit,amount,legal_basis,effective_from,effective_to\n"
    "BDC-OLD,已停征的登记费,BDC,县不动产登记中心,件,5000,已废止的文件,2020-01-01,2020-12-31\n"
    "BDC-NEW,尚未施行的登记费,BDC,县不动产登记中心,件,7000,尚未施行的文件,2099-01-01,\n"
).encode()


@dataclass
class Env:
    app: Flask
    db: Database
    staff: Staff
    notice: str  # an issued notice of BDC


@pytest.fixture(scope="module")
def env(database_url_factory: Any) -> Iterator[Env]:
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule

    app = make_test_app(database_url_factory("bad_input"))
    db: Database = app.extensions["db"]
    actor = Actor.system("tests")
    tokens, usernames = {}, {}
    with app.app_context(), db.unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        import_fee_schedule(session, AUDIT_KEY, actor, EXTRA_FEES)
        for key, (username, role, department) in STAFF_USERS.items():
            create_user(session, AUDIT_KEY, actor, username=username, role=role,
                        department_code=department, password=PASSWORD)
            tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
            usernames[key] = username
    staff = Staff(tokens=tokens, usernames=usernames)
    response = app.test_client().post("/api/v1/notices", json=body(), headers=staff.headers("window"))
    assert response.status_code == 201, response.get_json()
    yield Env(app, db, staff, response.get_json()["number"])
    db.engine.dispose()


# --- building the rows -----------------------------------------------------------------------------

MISSING = object()  # a key to leave out
KEEP = object()  # body(): keep the valid default
NOTICES = "/api/v1/notices"
CANCEL = "/api/v1/notices/{number}/cancel"
MISTYPED = "99000126000000000118"  # 99000126000000000119 with its last check digit changed
UNKNOWN = compose_notice_number("990001", 26, 9_999_999_999)  # valid check digits, never issued
assert MISTYPED != UNKNOWN


def line(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"fee_code": "BDC-ZZ", "quantity": 1}
    return _apply(item, changes)


def body(*, payer: Any = KEEP, items: Any = KEEP, **changes: Any) -> dict[str, Any]:
    """A valid notice body of BDC (8000 fen), with `changes` applied (MISSING deletes a key)."""
    notice: dict[str, Any] = {"department": "BDC", "payer": {"name": "张三"}, "items": [line()]}
    if payer is not KEEP:
        changes["payer"] = payer
    if items is not KEEP:
        changes["items"] = items
    return _apply(notice, changes)


def payer(**changes: Any) -> dict[str, Any]:
    return _apply({"name": "张三"}, changes)


def _apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in changes.items():
        if value is MISSING:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def raw(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    status: int
    code: str
    fields: tuple[str, ...] = ()  # must appear in `errors`
    json: Any = MISSING  # sent as application/json
    data: str | bytes | None = None  # sent as is, with `content_type`
    content_type: str = "application/json"
    who: str = "window"


def post(id_: str, payload: Any, status: int, code: str, *fields: str, path: str = NOTICES, **kw: Any) -> Bad:
    return Bad(id_, "POST", path, status, code, fields, json=payload, **kw)


def post_raw(id_: str, data: str | bytes, status: int, code: str, *fields: str, path: str = NOTICES,
             content_type: str = "application/json") -> Bad:
    return Bad(id_, "POST", path, status, code, fields, data=data, content_type=content_type)


def invalid(id_: str, payload: Any, *fields: str, path: str = NOTICES) -> Bad:
    return post(id_, payload, 422, "validation", *fields, path=path)


def get(id_: str, path: str, status: int, code: str, *fields: str, who: str = "window") -> Bad:
    return Bad(id_, "GET", path, status, code, fields, who=who)


KB10 = "长" * 10_000
MB1 = "x" * 1_000_000

ROWS: list[Bad] = [
    # --- POST /api/v1/notices: not JSON at all → 400 malformed-json
    post_raw("not-json", "department=BDC&payer=张三", 400, "malformed-json"),
    post_raw("not-json-text-plain", "hello", 400, "malformed-json", content_type="text/plain"),
    post_raw("form-urlencoded", "department=BDC", 400, "malformed-json",
             content_type="application/x-www-form-urlencoded"),
    post_raw("truncated-json", '{"department": "BDC", "items": [', 400, "malformed-json"),
    post_raw("trailing-garbage", raw(body()) + "}", 400, "malformed-json"),
    post_raw("single-quotes", "{'department': 'BDC'}", 400, "malformed-json"),
    post_raw("not-utf8", b'{"department": "\xff\xfe"}', 400, "malformed-json"),
    post_raw("nested-too-deep", "[" * 100_000 + "]" * 100_000, 400, "malformed-json"),
    post_raw("object-nested-too-deep", '{"a":' * 100_000 + "1" + "}" * 100_000, 400, "malformed-json"),
    post_raw("lone-surrogate-in-value", raw(body(payer={"name": "张"})).replace("张", "\\ud800"),
             400, "malformed-json"),
    post_raw("lone-surrogate-in-key", '{"\\udc00": 1}', 400, "malformed-json"),
    post_raw("json-sent-as-text-plain", raw(body()), 415, "unsupported-media-type", content_type="text/plain"),
    # --- JSON, but not an object
    post_raw("empty-body", "", 422, "validation", "department", "payer", "items"),
    invalid("empty-object", {}, "department", "payer", "items"),
    invalid("root-array", [], "_body"),
    invalid("root-array-of-a-notice", [body()], "_body"),
    invalid("root-string", "BDC", "_body"),
    post_raw("root-null", "null", 422, "validation", "_body"),
    invalid("root-number", 5, "_body"),
    invalid("root-true", True, "_body"),
    # --- wrong types
    invalid("quantity-string", body(items=[line(quantity="5")]), "items.0.quantity"),
    invalid("quantity-float", body(items=[line(quantity=5.5)]), "items.0.quantity"),
    invalid("quantity-float-integral", body(items=[line(quantity=5.0)]), "items.0.quantity"),
    invalid("quantity-true", body(items=[line(quantity=True)]), "items.0.quantity"),
    invalid("quantity-null", body(items=[line(quantity=None)]), "items.0.quantity"),
    invalid("quantity-array", body(items=[line(quantity=[1])]), "items.0.quantity"),
    invalid("quantity-object", body(items=[line(quantity={"value": 1})]), "items.0.quantity"),
    post_raw("quantity-exponent", raw(body()).replace('"quantity": 1', '"quantity": 1e0'),
             422, "validation", "items.0.quantity"),
    post_raw("quantity-1e400", raw(body()).replace('"quantity": 1', '"quantity": 1e400'),
             422, "validation", "items.0.quantity"),
    post_raw("quantity-NaN", raw(body()).replace('"quantity": 1', '"quantity": NaN'),
             422, "validation", "items.0.quantity"),
    post_raw("quantity-minus-Infinity", raw(body()).replace('"quantity": 1', '"quantity": -Infinity'),
             422, "validation", "items.0.quantity"),
    invalid("override-amount-string", body(items=[line(override_amount="100", override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-amount-float", body(items=[line(override_amount=50.5, override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-amount-float-integral", body(items=[line(override_amount=4000.0, override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-amount-true", body(items=[line(override_amount=True, override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-amount-negative", body(items=[line(override_amount=-1, override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-amount-over-1e12", body(items=[line(override_amount=10**12 + 1, override_reason="减半")]),
            "items.0.override_amount"),
    invalid("override-reason-number", body(items=[line(override_amount=0, override_reason=5)]),
            "items.0.override_reason"),
    invalid("department-number", body(department=5), "department"),
    invalid("department-null", body(department=None), "department"),
    invalid("payer-string", body(payer="张三"), "payer"),
    invalid("payer-null", body(payer=None), "payer"),
    invalid("payer-array", body(payer=[{"name": "张三"}]), "payer"),
    invalid("payer-name-number", body(payer=payer(name=5)), "payer.name"),
    invalid("payer-id-number-number", body(payer=payer(id_number=110101)), "payer.id_number"),
    invalid("items-object", body(items={"0": line()}), "items"),
    invalid("items-string", body(items="BDC-ZZ"), "items"),
    invalid("items-null", body(items=None), "items"),
    invalid("item-string", body(items=["BDC-ZZ"]), "items.0"),
    invalid("second-item-null", body(items=[line(), None]), "items.1"),
    invalid("fee-code-number", body(items=[line(fee_code=5)]), "items.0.fee_code"),
    invalid("fee-code-array", body(items=[line(fee_code=["BDC-ZZ"])]), "items.0.fee_code"),
    invalid("case-reference-number", body(case_reference=12345), "case_reference"),
    invalid("due-date-number", body(due_date=20300101), "due_date"),
    invalid("due-date-not-a-date", body(due_date="2030-02-30"), "due_date"),
    invalid("due-date-datetime", body(due_date="2030-01-01T00:00:00+08:00"), "due_date"),
    invalid("due-date-words", body(due_date="next week"), "due_date"),
    invalid("due-date-compact", body(due_date="20300101"), "due_date"),
    invalid("due-date-week-date", body(due_date="2030-W01-1"), "due_date"),
    # --- over-long strings (API.md input limits)
    invalid("payer-name-101", body(payer=payer(name="张" * 101)), "payer.name"),
    invalid("payer-name-10kB", body(payer=payer(name=KB10)), "payer.name"),
    invalid("payer-name-1MB", body(payer=payer(name=MB1)), "payer.name"),
    post("body-over-16MB", body(payer=payer(name="x" * (17 * 1024 * 1024))), 413, "payload-too-large"),
    invalid("payer-id-number-65", body(payer=payer(id_number="1" * 65)), "payer.id_number"),
    invalid("case-reference-65", body(case_reference="R" * 65), "case_reference"),
    invalid("case-reference-1MB", body(case_reference=MB1), "case_reference"),
    invalid("department-10kB", body(department=KB10), "department"),
    invalid("fee-code-10kB", body(items=[line(fee_code=KB10)]), "items.0.fee_code"),
    invalid("override-reason-501", body(items=[line(override_amount=0, override_reason="因" * 501)]),
            "items.0.override_reason"),
    invalid("many-errors-at-once", body(department="", payer=payer(name="张" * 101), case_reference="R" * 65,
                                        items=[line(quantity=0), line(fee_code="")]),
            "department", "payer.name", "case_reference", "items.0.quantity", "items.1.fee_code"),
    # --- NUL characters
    invalid("payer-name-nul", body(payer=payer(name="张\x00三")), "payer.name"),
    invalid("payer-name-only-nul", body(payer=payer(name="\x00")), "payer.name"),
    invalid("department-nul", body(department="BDC\x00"), "department"),
    invalid("fee-code-nul", body(items=[line(fee_code="BDC-ZZ\x00")]), "items.0.fee_code"),
    invalid("case-reference-nul", body(case_reference="A\x00B"), "case_reference"),
    invalid("override-reason-nul", body(items=[line(override_amount=0, override_reason="\x00")]),
            "items.0.override_reason"),
    # --- missing or blank fields
    invalid("no-department", body(department=MISSING), "department"),
    invalid("no-payer", body(payer=MISSING), "payer"),
    invalid("no-items", body(items=MISSING), "items"),
    invalid("payer-without-name", body(payer={}), "payer.name"),
    invalid("payer-name-blank", body(payer=payer(name="")), "payer.name"),
    invalid("payer-name-spaces", body(payer=payer(name="  \t ")), "payer.name"),
    invalid("department-blank", body(department="   "), "department"),
    invalid("item-empty-object", body(items=[{}]), "items.0.fee_code", "items.0.quantity"),
    invalid("item-without-quantity", body(items=[line(quantity=MISSING)]), "items.0.quantity"),
    invalid("item-without-fee-code", body(items=[line(fee_code=MISSING)]), "items.0.fee_code"),
    invalid("fee-code-blank", body(items=[line(fee_code=" ")]), "items.0.fee_code"),
    # --- items and quantities
    invalid("items-empty", body(items=[]), "items"),
    invalid("items-51", body(items=[line() for _ in range(51)]), "items"),
    invalid("quantity-zero", body(items=[line(quantity=0)]), "items.0.quantity"),
    invalid("quantity-negative", body(items=[line(quantity=-1)]), "items.0.quantity"),
    invalid("quantity-100001", body(items=[line(quantity=100_001)]), "items.0.quantity"),
    invalid("quantity-2**63", body(items=[line(quantity=2**63)]), "items.0.quantity"),
    invalid("quantity-10**100", body(items=[line(quantity=10**100)]), "items.0.quantity"),
    invalid("second-line-quantity-zero", body(items=[line(), line(quantity=0)]), "items.1.quantity"),
    # --- overrides (exemption or reduction): both or neither, never above the full price
    invalid("override-without-reason", body(items=[line(override_amount=4000)]), "items.0.override_reason"),
    invalid("override-with-blank-reason", body(items=[line(override_amount=4000, override_reason="  ")]),
            "items.0.override_reason"),
    invalid("override-with-null-reason", body(items=[line(override_amount=4000, override_reason=None)]),
            "items.0.override_reason"),
    invalid("reason-without-override", body(items=[line(override_reason="困难群众")]), "items.0.override_amount"),
    invalid("reason-with-null-override", body(items=[line(override_amount=None, override_reason="困难群众")]),
            "items.0.override_amount"),
    invalid("override-above-full-price", body(items=[line(quantity=2, override_amount=16_001, override_reason="x")]),
            "items.0.override_amount"),
    invalid("override-above-price-second-line",
            body(items=[line(), line(fee_code="BDC-GBF", override_amount=1001, override_reason="x")]),
            "items.1.override_amount"),
    invalid("everything-exempted", body(items=[line(override_amount=0, override_reason="全额免收")]), "items"),
    # --- the fee schedule decides
    post("unknown-fee", body(items=[line(fee_code="NOPE")]), 422, "unknown-fee", "items.0.fee_code"),
    post("unknown-fee-second-line", body(items=[line(), line(fee_code="NOPE")]), 422, "unknown-fee",
         "items.1.fee_code"),
    post("fee-code-lowercase", body(items=[line(fee_code="bdc-zz")]), 422, "unknown-fee", "items.0.fee_code"),
    post("fee-withdrawn", body(items=[line(fee_code="BDC-OLD")]), 422, "unknown-fee", "items.0.fee_code"),
    post("fee-not-yet-in-force", body(items=[line(fee_code="BDC-NEW")]), 422, "unknown-fee", "items.0.fee_code"),
    post("fee-of-another-department", body(items=[line(fee_code="GA-SFZ")]), 422, "fee-not-of-department",
         "items.0.fee_code"),
    post("fee-of-a-third-department", body(items=[line(), line(fee_code="CG-HP")]), 422, "fee-not-of-department",
         "items.1.fee_code"),
    post("department-of-another-window", body(department="GA", items=[line(fee_code="GA-SFZ")]),
         403, "forbidden"),
    post("department-unknown", body(department="XX"), 403, "forbidden"),
    # --- due date
    invalid("due-date-in-the-past", body(due_date="2000-01-01"), "due_date"),
    invalid("due-date-years-ahead", body(due_date="2999-12-31"), "due_date"),
    # --- prices come from the schedule: a client-sent price is refused, never used
    invalid("client-unit-amount", body(items=[line(unit_amount=1)]), "items.0.unit_amount"),
    invalid("client-line-amount", body(items=[line(amount=1)]), "items.0.amount"),
    invalid("client-total", body(total=1), "total"),
    invalid("client-amount", body(amount=1, currency="CNY"), "amount", "currency"),
    invalid("client-status", body(status="paid"), "status"),
    invalid("client-number", body(number="99000126000000000119"), "number"),
    # --- POST /api/v1/notices/{number}/cancel
    post_raw("cancel-not-json", "reason=x", 400, "malformed-json", path=CANCEL),
    post_raw("cancel-truncated-json", '{"reason": "x"', 400, "malformed-json", path=CANCEL),
    post_raw("cancel-nested-too-deep", "[" * 100_000 + "]" * 100_000, 400, "malformed-json", path=CANCEL),
    post_raw("cancel-empty-body", "", 422, "validation", "reason", path=CANCEL),
    invalid("cancel-array", [{"reason": "x"}], "_body", path=CANCEL),
    invalid("cancel-string", "撤回", "_body", path=CANCEL),
    post_raw("cancel-null", "null", 422, "validation", "_body", path=CANCEL),
    invalid("cancel-no-reason", {}, "reason", path=CANCEL),
    invalid("cancel-reason-blank", {"reason": "   "}, "reason", path=CANCEL),
    invalid("cancel-reason-null", {"reason": None}, "reason", path=CANCEL),
    invalid("cancel-reason-number", {"reason": 5}, "reason", path=CANCEL),
    invalid("cancel-reason-501", {"reason": "因" * 501}, "reason", path=CANCEL),
    invalid("cancel-reason-1MB", {"reason": MB1}, "reason", path=CANCEL),
    invalid("cancel-reason-nul", {"reason": "撤\x00回"}, "reason", path=CANCEL),
    invalid("cancel-extra-field", {"reason": "撤回", "status": "paid"}, "status", path=CANCEL),
    post("cancel-mistyped-number", {"reason": "撤回"}, 422, "invalid-notice-number",
         path=f"{NOTICES}/{MISTYPED}/cancel"),
    post("cancel-short-number", {"reason": "撤回"}, 422, "invalid-notice-number", path=f"{NOTICES}/12345/cancel"),
    post("cancel-letters", {"reason": "撤回"}, 422, "invalid-notice-number",
         path=f"{NOTICES}/ABCDEFGHIJKLMNOPQRST/cancel"),
    post("cancel-fullwidth-digits", {"reason": "撤回"}, 422, "invalid-notice-number",
         path=f"{NOTICES}/{'９' * 20}/cancel"),
    post("cancel-unknown-number", {"reason": "撤回"}, 404, "not-found", path=f"{NOTICES}/{UNKNOWN}/cancel"),
    post("cancel-by-another-department", {"reason": "撤回"}, 403, "forbidden", path=CANCEL, who="window_other"),
    post("cancel-by-cashier", {"reason": "撤回"}, 403, "forbidden", path=CANCEL, who="cashier"),
    # --- GET /api/v1/notices/{number}
    get("get-mistyped-number", f"{NOTICES}/{MISTYPED}", 422, "invalid-notice-number"),
    get("get-number-19-digits", f"{NOTICES}/{MISTYPED[:19]}", 422, "invalid-notice-number"),
    get("get-unknown-number", f"{NOTICES}/{UNKNOWN}", 404, "not-found"),
    get("pdf-mistyped-number", f"{NOTICES}/{MISTYPED}/pdf", 422, "invalid-notice-number"),
    get("pdf-unknown-number", f"{NOTICES}/{UNKNOWN}/pdf", 404, "not-found"),
    # --- GET /api/v1/notices?…
    get("list-status-unknown", f"{NOTICES}?status=bogus", 422, "validation", "status"),
    get("list-from-not-a-date", f"{NOTICES}?from=2026-13-01", 422, "validation", "from"),
    get("list-to-words", f"{NOTICES}?to=yesterday", 422, "validation", "to"),
    get("list-from-week-date", f"{NOTICES}?from=2026W011", 422, "validation", "from"),
    get("list-page-zero", f"{NOTICES}?page=0", 422, "validation", "page"),
    get("list-page-negative", f"{NOTICES}?page=-1", 422, "validation", "page"),
    get("list-page-letters", f"{NOTICES}?page=abc", 422, "validation", "page"),
    get("list-page-float", f"{NOTICES}?page=1.5", 422, "validation", "page"),
    get("list-page-huge", f"{NOTICES}?page={10**30}", 422, "validation", "page"),
    get("list-per-page-zero", f"{NOTICES}?per_page=0", 422, "validation", "per_page"),
    get("list-per-page-201", f"{NOTICES}?per_page=201", 422, "validation", "per_page"),
    get("list-page-and-per-page", f"{NOTICES}?page=0&per_page=0", 422, "validation", "page", "per_page"),
    get("list-q-101", f"{NOTICES}?q={'张' * 101}", 422, "validation", "q"),
    get("list-q-nul", f"{NOTICES}?q=%00", 422, "validation", "q"),
    # --- GET /api/v1/fee-schedule?on=…
    get("fees-on-february-30", "/api/v1/fee-schedule?on=2026-02-30", 422, "validation", "on"),
    get("fees-on-words", "/api/v1/fee-schedule?on=yesterday", 422, "validation", "on"),
    get("fees-on-compact", "/api/v1/fee-schedule?on=20260101", 422, "validation", "on"),
    get("fees-on-datetime", "/api/v1/fee-schedule?on=2026-01-01T00:00:00", 422, "validation", "on"),
    get("fees-on-five-digit-year", "/api/v1/fee-schedule?on=99999-01-01", 422, "validation", "on"),
    get("fees-on-empty", "/api/v1/fee-schedule?on=", 422, "validation", "on"),
    get("fees-on-nul", "/api/v1/fee-schedule?on=%00", 422, "validation", "on"),
    # --- the API's own 404 and 405 are problems too
    get("unknown-api-path", "/api/v1/no-such-thing", 404, "not-found"),
    Bad("method-not-allowed", "DELETE", NOTICES, 405, "method-not-allowed"),
    Bad("put-on-a-notice", "PUT", f"{NOTICES}/{{number}}", 405, "method-not-allowed", json={"status": "paid"}),
]

DOTTED_PATH = re.compile(r"^(_body|[A-Za-z_][A-Za-z0-9_]*(\.(\d+|[A-Za-z_][A-Za-z0-9_]*))*)$")


def test_row_ids_are_unique() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_a_problem_and_writes_nothing(env: Env, row: Bad) -> None:
    client = env.app.test_client()
    kwargs: dict[str, Any] = {"headers": env.staff.headers(row.who)}
    if row.data is not None:
        kwargs.update(data=row.data, content_type=row.content_type)
    elif row.json is not MISSING:
        kwargs["json"] = row.json
    path = row.path.replace("{number}", env.notice)
    before = table_counts(env.db)

    response = client.open(path, method=row.method, **kwargs)

    problem = response.get_json(force=True, silent=True)
    shown = response.get_data(as_text=True)[:500]
    assert response.status_code == row.status, shown
    assert response.mimetype == "application/problem+json", shown
    assert isinstance(problem, dict), shown
    for member in ("type", "title", "status", "detail"):
        assert member in problem, f"no `{member}` in {problem}"
    assert all(isinstance(problem[m], str) and problem[m] for m in ("type", "title", "detail")), problem
    assert problem["status"] == row.status
    assert problem["type"].endswith(f"/problems/{row.code}"), problem["type"]
    if row.code == "validation" or row.fields:
        errors = problem.get("errors")
        assert isinstance(errors, dict) and errors, f"no `errors` in {problem}"
        for name, messages in errors.items():
            assert DOTTED_PATH.match(name), f"{name!r} is not a dotted field path"
            assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages)
        missing = [name for name in row.fields if name not in errors]
        assert not missing, f"{missing} not named in errors {errors}"
    assert table_counts(env.db) == before, "the database changed"
    assert env_notice_is_untouched(env)


def env_notice_is_untouched(env: Env) -> bool:
    response = env.app.test_client().get(f"{NOTICES}/{env.notice}", headers=env.staff.headers("admin"))
    return bool(response.status_code == 200 and response.get_json()["status"] == "issued")


# --- the controls: without its defect, each kind of row is accepted --------------------------------


def test_the_base_bodies_are_accepted_and_priced_from_the_schedule(env: Env) -> None:
    """The rows above differ from these valid requests only by their defect."""
    client = env.app.test_client()
    window = env.staff.headers("window")
    response = client.post(NOTICES, json=body(items=[line(quantity=3), line(fee_code="BDC-GBF", quantity=2)],
                                              case_reference="R" * 64, payer=payer(name="张" * 100,
                                                                                   id_number="1" * 64)),
                           headers=window)
    assert response.status_code == 201, response.get_json()
    notice = response.get_json()
    assert [(i["unit_amount"], i["amount"]) for i in notice["items"]] == [(8000, 24000), (1000, 2000)]
    assert notice["total"] == 26000
    reduced = client.post(NOTICES, json=body(items=[line(quantity=2, override_amount=16_000, override_reason="x"),
                                                    line(quantity=100_000)]), headers=window)
    assert reduced.status_code == 201, reduced.get_json()
    assert reduced.get_json()["total"] == 16_000 + 8000 * 100_000
    cancelled = client.post(f"{NOTICES}/{notice['number']}/cancel", json={"reason": "因" * 500}, headers=window)
    assert cancelled.status_code == 200, cancelled.get_json()
    spaced = " ".join(notice["number"][i:i + 4] for i in range(0, 20, 4))
    assert client.get(f"{NOTICES}/{spaced}", headers=window).status_code == 200
    assert client.get(f"{NOTICES}?page=1&per_page=200&q={'张' * 100}", headers=window).status_code == 200
    assert client.get("/api/v1/fee-schedule?on=2026-02-28").status_code == 200


def test_a_client_price_never_reaches_the_notice(env: Env) -> None:
    """Whatever price-like fields a client adds, nothing is issued, and the schedule's price stands."""
    client = env.app.test_client()
    window = env.staff.headers("window")
    before = table_counts(env.db)
    for extra in ({"unit_amount": 1}, {"amount": 1}, {"unit_amount": 1, "amount": 1}):
        response = client.post(NOTICES, json=body(items=[line(**extra)], total=1), headers=window)
        assert response.status_code == 422
    assert table_counts(env.db) == before
    response = client.post(NOTICES, json=body(), headers=window)
    assert response.status_code == 201
    assert response.get_json()["total"] == 8000
