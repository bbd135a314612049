"""Authorisation as a table: role × endpoint → expected status (issue 2, "Tests that must exist").

The table is keyed by (endpoint name, HTTP method) and checked against `app.url_map`: an endpoint
added to the app without a row here fails `test_every_endpoint_has_a_row` and every per-role test
— add its row (and mark the view with `api_roles`/`page_roles`/`public`).

Roles: `anonymous` (no credentials), `bad_token` (a made-up bearer token / a forged session
cookie), `window` (BDC department), `window_other` (GA department: another department's notice is
403), `cashier`, `finance`, `admin`. API rows are sent with a bearer token and no cookies; page rows
with a signed-in session (real login with its CSRF token). A row's `needs` makes fresh data just
before each request (see `prepare`): `{number}` a notice of BDC, the `window` user's department
(issued, or paid at the cashier), `{receipt}`, `{payment_id}` and `{shift_id}` its receipt, payment
and the cashier's shift.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.audit import Actor
from core.clock import today
from core.db import Database
from tests.conftest import AUDIT_KEY, DEMO_FEES, PASSWORD, STAFF_USERS, Staff, make_test_app, table_counts

ROLES = ("anonymous", "bad_token", "window", "window_other", "cashier", "finance", "admin")
STAFF_ROLES = ("window", "window_other", "cashier", "finance", "admin")
LOGIN = "→/login"  # a 302 redirect to the sign-in page
DENIED = {401, 403, LOGIN}
BAD_TOKEN = "fs_this-token-was-never-issued"
# Each window's own department and one of its fees (the page form posts the clerk's department).
OWN = {"window": ("BDC", "BDC-ZZ"), "window_other": ("GA", "GA-SFZ")}


@dataclass(frozen=True)
class Row:
    kind: str  # "api": bearer token, no cookies; "page": signed-in session; "public": both
    path: str
    expect: Mapping[str, int | str]
    json: Any = None
    form: Mapping[str, str] | None = None
    cancels: frozenset[str] = field(default_factory=frozenset)  # roles whose call cancels the notice
    needs: str = ""  # "notice", "paid", "refund_due" or "run": what is made fresh for each call (see prepare)


def api(path: str, ok: Mapping[str, int], **kwargs: Any) -> Row:
    """An API endpoint: no/invalid token → 401, a staff role not in `ok` → 403."""
    expect: dict[str, int | str] = {"anonymous": 401, "bad_token": 401}
    expect.update({role: 403 for role in STAFF_ROLES})
    expect.update(ok)
    return Row("api", path, expect, **kwargs)


def page(path: str, ok: Mapping[str, int], **kwargs: Any) -> Row:
    """An HTML page: not signed in → redirect to /login, a staff role not in `ok` → 403 page."""
    expect: dict[str, int | str] = {"anonymous": LOGIN, "bad_token": LOGIN}
    expect.update({role: 403 for role in STAFF_ROLES})
    expect.update(ok)
    return Row("page", path, expect, **kwargs)


def public(path: str, status: int | str = 200, **kwargs: Any) -> Row:
    return Row("public", path, {role: status for role in ROLES}, **kwargs)


ALL_STAFF = {role: 200 for role in STAFF_ROLES}
FINANCE_READERS = {"finance": 200, "admin": 200}
ANY_DEPARTMENT_READER = {"window": 200, "cashier": 200, "finance": 200, "admin": 200}  # not window_other
NOTICE_BODY = {"department": "BDC", "payer": {"name": "张三"}, "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]}
NOTICE_FORM = {"department": "{department}", "payer_name": "李四", "line_count": "1",
               "items-0-fee_code": "{fee}", "items-0-quantity": "1"}

TABLE: dict[tuple[str, str], Row] = {
    # framework and public pages
    ("static", "GET"): public("/static/app.css"),
    ("api-docs.openapi_json", "GET"): public("/api/v1/openapi.json"),
    ("core.home", "GET"): public("/"),
    ("core.login", "GET"): public("/login"),
    # A name of its own each time: five failures for one name lock it (429, core.signin).
    ("core.login", "POST"): public("/login", 401, form={"username": "nobody-{key}", "password": "not-the-password"}),
    ("core.logout", "POST"): public("/logout", LOGIN, form={}),  # signed in or not, you land on /login
    ("core.problem", "GET"): public("/problems/notice-already-paid"),
    ("fees.schedule", "GET"): public("/fees"),
    ("fees_api.fee_schedule", "GET"): public("/api/v1/fee-schedule"),
    ("audit_anchors.index", "GET"): public("/audit-anchors"),
    ("audit_anchors_api.audit_anchors", "GET"): public("/api/v1/public/audit-anchors"),
    ("webhooks_admin.index", "GET"): page("/admin/webhooks", {"admin": 200}),
    ("webhooks_admin.index", "POST"): page("/admin/webhooks", {"admin": 200},
                                          form={"name": "dept-{key}", "url": "https://dept.example/hook",
                                                "event_types": "notice.paid"}),
    ("webhooks_admin.redeliver", "POST"): page("/admin/webhooks/deliveries/2147483000/redeliver", {"admin": 302},
                                               form={}),
    # bank endpoints: only a bank's signature opens them, never a staff token or session
    ("webhooks.bank_callback", "POST"): public("/webhooks/bank/ANY-BANK", 401, json={"type": "payment.succeeded"}),
    ("webhooks.bank_query", "POST"): public("/webhooks/bank/ANY-BANK/query", 401, json={"notice_number": "1"}),
    # HTML pages of the accepting window
    ("notices.index", "GET"): page("/notices", ALL_STAFF),
    ("notices.new", "GET"): page("/notices/new", {"window": 200, "window_other": 200}),
    ("notices.new", "POST"): page("/notices/new", {"window": 302, "window_other": 302}, form=NOTICE_FORM),
    ("notices.show", "GET"): page("/notices/{number}", ANY_DEPARTMENT_READER, needs="notice"),
    ("notices.print_pdf", "GET"): page("/notices/{number}/print", ANY_DEPARTMENT_READER, needs="notice"),
    # window_other is refused by the service and sent back to the notice with a flash message
    # (302); that the notice stays uncancelled is checked below.
    ("notices.cancel", "POST"): page("/notices/{number}/cancel", {"window": 302, "window_other": 302},
                                     form={"reason": "受理撤回"}, cancels=frozenset({"window"}), needs="notice"),
    # the API
    ("notices_api.issue_notice", "POST"): api("/api/v1/notices", {"window": 201}, json=NOTICE_BODY),
    ("notices_api.list_notices", "GET"): api("/api/v1/notices", ALL_STAFF),
    ("notices_api.get_notice", "GET"): api("/api/v1/notices/{number}", ANY_DEPARTMENT_READER, needs="notice"),
    ("notices_api.notice_pdf", "GET"): api("/api/v1/notices/{number}/pdf", ANY_DEPARTMENT_READER, needs="notice"),
    ("notices_api.cancel_notice", "POST"): api("/api/v1/notices/{number}/cancel", {"window": 200},
                                               json={"reason": "受理撤回"}, cancels=frozenset({"window"}),
                                               needs="notice"),
    # cashier window, receipts, refunds, certificates: pages
    ("payments.cashier", "GET"): page("/cashier", {"cashier": 200}),
    ("payments.pay", "POST"): page("/cashier/pay", {"cashier": 303}, needs="notice", form={
        "number": "{number}", "amount": "8000", "method": "cash", "idempotency_key": "{key}"}),
    ("payments.receipt", "GET"): page("/cashier/receipts/{receipt}", {"cashier": 200}, needs="paid"),
    ("payments.shift", "GET"): page("/cashier/shift", {"cashier": 200}),
    ("payments.shift", "POST"): page("/cashier/shift", {"cashier": 200}, needs="paid", form={"declared_cash": "80"}),
    ("payments.shift_report", "GET"): page("/cashier/shifts/{shift_id}/print", {"cashier": 200, "finance": 200},
                                           needs="paid"),
    ("receipts.show", "GET"): page("/receipts/{receipt}", ANY_DEPARTMENT_READER, needs="paid"),
    ("receipts.print_pdf", "GET"): page("/receipts/{receipt}/print", {"cashier": 200, "finance": 200, "admin": 200},
                                        needs="paid"),
    ("receipts.void", "POST"): page("/receipts/{receipt}/void", {"finance": 302}, needs="paid",
                                    form={"reason": "收错了"}),
    ("receipts.refund", "POST"): page("/payments/{payment_id}/refund", {"finance": 302}, needs="refund_due",
                                      form={"method": "cash"}),
    ("receipts.verify", "GET"): public("/verify/{receipt}?code=WRONGCODE", needs="paid"),
    # window_other is refused by the service and sent back with a flash message, as for cancel
    ("receipts.certificate", "POST"): page("/notices/{number}/certificate", {"window": 302, "window_other": 302},
                                           needs="paid", form={}),
    # cashier window, receipts, refunds, certificates: API
    ("payments_api.record_payment", "POST"): api("/api/v1/notices/{number}/payments", {"cashier": 201},
                                                 needs="notice", json={"amount": 8000, "method": "cash"}),
    ("payments_api.get_payment", "GET"): api("/api/v1/payments/{payment_id}",
                                             {"cashier": 200, "finance": 200, "admin": 200}, needs="paid"),
    ("payments_api.mark_refund_due", "POST"): api("/api/v1/payments/{payment_id}/refund-due", {"finance": 409},
                                                  needs="paid", json={"reason": "退回缴款人"}),
    ("payments_api.record_refund", "POST"): api("/api/v1/payments/{payment_id}/refund", {"finance": 200},
                                                needs="refund_due", json={"method": "cash"}),
    ("payments_api.current_shift", "GET"): api("/api/v1/shifts/current", {"cashier": 200}),
    ("payments_api.close_shift", "POST"): api("/api/v1/shifts/current/close", {"cashier": 200}, needs="paid",
                                              json={"declared_cash": 8000}),
    ("payments_api.shift_pdf", "GET"): api("/api/v1/shifts/{shift_id}/pdf", {"cashier": 200, "finance": 200},
                                           needs="paid"),
    ("receipts_api.get_receipt", "GET"): api("/api/v1/receipts/{receipt}", ANY_DEPARTMENT_READER, needs="paid"),
    ("receipts_api.receipt_pdf", "GET"): api("/api/v1/receipts/{receipt}/pdf",
                                             {"cashier": 200, "finance": 200, "admin": 200}, needs="paid"),
    ("receipts_api.void", "POST"): api("/api/v1/receipts/{receipt}/void", {"finance": 200}, needs="paid",
                                       json={"reason": "收错了"}),
    ("receipts_api.verify_receipt", "GET"): public("/api/v1/public/receipts/{receipt}?code=WRONGCODE", needs="paid"),
    ("receipts_api.issue_certificate", "POST"): api("/api/v1/notices/{number}/certificate", {"window": 201},
                                                    needs="paid", json={}),
    # bank statements and reconciliation: finance writes, admin reads
    # (no file in the form: an authorised caller gets 422, nobody else gets that far)
    ("reconciliation_api.upload_statement", "POST"): api("/api/v1/bank-statements", {"finance": 422},
                                                         form={"bank_code": "ANY-BANK"}),
    ("reconciliation_api.start_run", "POST"): api("/api/v1/reconciliation/runs", {"finance": 201},
                                                  json={"business_date": "2026-01-02"}),
    ("reconciliation_api.list_runs", "GET"): api("/api/v1/reconciliation/runs", FINANCE_READERS),
    ("reconciliation_api.get_run", "GET"): api("/api/v1/reconciliation/runs/{run_id}", FINANCE_READERS, needs="run"),
    ("reconciliation_api.list_exceptions", "GET"): api("/api/v1/reconciliation/runs/{run_id}/exceptions",
                                                       FINANCE_READERS, needs="run"),
    ("reconciliation_api.report_pdf", "GET"): api("/api/v1/reconciliation/runs/{run_id}/report.pdf", FINANCE_READERS,
                                                  needs="run"),
    ("reconciliation_api.report_csv", "GET"): api("/api/v1/reconciliation/runs/{run_id}/report.csv", FINANCE_READERS,
                                                  needs="run"),
    ("reconciliation_api.resolve", "POST"): api("/api/v1/reconciliation/exceptions/{exception_id}/resolve",
                                                {"finance": 200}, needs="run", json={"note": "已核实"}),
    # the finance desk: admin reads, finance acts (a confirm or refund that does not apply → 409 page)
    ("finance.index", "GET"): page("/finance", FINANCE_READERS),
    ("finance.start_run", "POST"): page("/finance/runs", {"finance": 303}, form={"business_date": "2026-01-02"}),
    ("finance.upload_statement", "POST"): page("/finance/statements", {"finance": 422},
                                               form={"bank_code": "ANY-BANK"}),
    ("finance.run", "GET"): page("/finance/runs/{run_id}", FINANCE_READERS, needs="run"),
    ("finance.report_pdf", "GET"): page("/finance/runs/{run_id}/report.pdf", FINANCE_READERS, needs="run"),
    ("finance.report_csv", "GET"): page("/finance/runs/{run_id}/report.csv", FINANCE_READERS, needs="run"),
    ("finance.exception", "GET"): page("/finance/exceptions/{exception_id}", FINANCE_READERS, needs="run"),
    ("finance.resolve", "POST"): page("/finance/exceptions/{exception_id}/resolve", {"finance": 303}, needs="run",
                                      form={"note": "已核实"}),
    ("finance.confirm", "POST"): page("/finance/exceptions/{exception_id}/confirm", {"finance": 409}, needs="run",
                                      form={}),
    ("finance.refund", "POST"): page("/finance/exceptions/{exception_id}/refund", {"finance": 409}, needs="run",
                                     form={"reason": "退回"}),
}

# Views that carry no api_roles/page_roles/public mark, and why.
UNMARKED_VIEWS = {
    "static": "Flask's static files",
    "api-docs.openapi_json": "flask-smorest's OpenAPI document (public)",
    "core.logout": "flask_login.login_required",
}


def endpoint_methods(app: Flask) -> Iterator[tuple[str, str, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, rule.rule


# --- environment: one database for the module (these tests only add fresh notices) ---------------


@dataclass
class Env:
    app: Flask
    db: Database
    staff: Staff


def seed_staff(db: Database) -> Staff:
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule

    actor = Actor.system("tests")
    tokens, usernames = {}, {}
    with db.unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        for key, (username, role, department) in STAFF_USERS.items():
            create_user(session, AUDIT_KEY, actor, username=username, role=role,
                        department_code=department, password=PASSWORD)
            tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
            usernames[key] = username
    return Staff(tokens=tokens, usernames=usernames)


@pytest.fixture(scope="module")
def env(database_url_factory: Any) -> Iterator[Env]:
    app = make_test_app(database_url_factory("authorization"))
    db: Database = app.extensions["db"]
    with app.app_context():
        staff = seed_staff(db)
    yield Env(app, db, staff)
    db.engine.dispose()


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


def csrf_token(client: FlaskClient) -> str:
    html = client.get("/login").get_data(as_text=True)
    match = CSRF_RE.search(html)
    assert match, "no csrf_token field on /login"
    return match.group(1) or match.group(2)


def page_client(env: Env, role: str) -> FlaskClient:
    """A browser-like client: signed in for staff roles, a forged session for bad_token."""
    client = env.app.test_client()
    if role == "bad_token":
        client.set_cookie("session", "eyJfdXNlcl9pZCI6IjEifQ.forged.signature")
    if role in STAFF_ROLES:
        response = client.post("/login", data={"username": env.staff.usernames[role], "password": PASSWORD,
                                               "csrf_token": csrf_token(client)})
        assert response.status_code == 302, f"{role} could not sign in: {response.status_code}"
    return client


def api_headers(env: Env, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role == "bad_token":
        return {"Authorization": f"Bearer {BAD_TOKEN}"}
    return env.staff.headers(role)


def fresh_notice(env: Env) -> str:
    response = env.app.test_client().post("/api/v1/notices", json=NOTICE_BODY, headers=env.staff.headers("window"))
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["number"])


def prepare(env: Env, needs: str) -> dict[str, str]:
    """Fresh data for one request: an issued notice, or one paid at the cashier (whose payment is
    refund_due after finance voided its receipt, for `refund_due`)."""
    if not needs:
        return {}
    client = env.app.test_client()
    if needs == "run":
        return reconciled(env)
    made = {"number": fresh_notice(env)}
    if needs == "notice":
        return made
    paid = client.post(f"/api/v1/notices/{made['number']}/payments", json={"amount": 8000, "method": "cash"},
                       headers=env.staff.headers("cashier"))
    assert paid.status_code == 201, paid.get_json()
    shift = client.get("/api/v1/shifts/current", headers=env.staff.headers("cashier"))
    assert shift.status_code == 200, shift.get_json()
    made.update(receipt=paid.get_json()["receipt"]["number"], payment_id=str(paid.get_json()["payment"]["id"]),
                shift_id=str(shift.get_json()["id"]))
    if needs == "refund_due":
        voided = client.post(f"/api/v1/receipts/{made['receipt']}/void", json={"reason": "收错了"},
                             headers=env.staff.headers("finance"))
        assert voided.status_code == 200, voided.get_json()
    return made


def reconciled(env: Env) -> dict[str, str]:
    """A run of today with one open exception: a notice priced below the schedule (an override)."""
    client = env.app.test_client()
    body = {**NOTICE_BODY, "items": [{"fee_code": "BDC-ZZ", "quantity": 1, "override_amount": 4000,
                                      "override_reason": "减半"}]}
    assert client.post("/api/v1/notices", json=body, headers=env.staff.headers("window")).status_code == 201
    with env.app.app_context():
        today_ = today(env.app.config["FEESVC_TIMEZONE"])
    run = client.post("/api/v1/reconciliation/runs", json={"business_date": today_.isoformat()},
                      headers=env.staff.headers("finance"))
    assert run.status_code == 201, run.get_json()
    run_id = run.get_json()["id"]
    found = client.get(f"/api/v1/reconciliation/runs/{run_id}/exceptions?status=open",
                       headers=env.staff.headers("finance")).get_json()["items"]
    return {"run_id": str(run_id), "exception_id": str(found[0]["id"])}


def notice_status(env: Env, number: str) -> str:
    response = env.app.test_client().get(f"/api/v1/notices/{number}", headers=env.staff.headers("admin"))
    return str(response.get_json()["status"])


def outcome(response: Any) -> int | str:
    if response.status_code == 302 and urlsplit(response.headers.get("Location", "")).path == "/login":
        return LOGIN
    return int(response.status_code)


def check_row(env: Env, role: str, method: str, row: Row, client: FlaskClient) -> list[str]:
    """Send the row's request as `role`; return what was wrong (nothing when all is as expected)."""
    made = prepare(env, row.needs)
    path = row.path.format(**made)
    department, fee = OWN.get(role, OWN["window"])
    headers: dict[str, str] = {}
    if row.kind in ("api", "public"):
        headers = api_headers(env, role)
    if row.kind == "api":
        client = env.app.test_client()  # the API is not reachable through a session cookie
    kwargs: dict[str, Any] = {"headers": headers}
    if row.json is not None:
        kwargs["json"] = row.json
    if row.form is not None:
        values = {**made, "department": department, "fee": fee, "key": uuid.uuid4().hex}
        form = {k: v.format(**values) for k, v in row.form.items()}
        kwargs["data"] = {**form, "csrf_token": csrf_token(client)}
        if row.kind == "api":
            kwargs["content_type"] = "multipart/form-data"  # API forms are uploads
    before = table_counts(env.db)

    response = client.open(path, method=method, **kwargs)
    response.close()  # static files are streamed from an open file

    wrong: list[str] = []
    expected = row.expect[role]
    got = outcome(response)
    if got != expected:
        body = response.get_data(as_text=True)[:200]
        wrong.append(f"{method} {path}: expected {expected}, got {got} ({response.content_type}) {body!r}")
        return wrong
    # A refused sign-in is counted and audited on purpose (API.md, Sign-in protection), and a
    # sign-out audits the session it ends; nothing else may change.
    allowed = {"/login": {"login_attempts", "audit_entries"}, "/logout": {"audit_entries"}}.get(path, set())
    after = table_counts(env.db)
    if expected in DENIED and any(after[t] != before[t] for t in after if t not in allowed):
        wrong.append(f"{method} {path}: refused ({got}) but the database changed")
    if row.kind == "api" and expected in (401, 403):
        code = {401: "unauthorized", 403: "forbidden"}[int(expected)]
        problem = response.get_json(silent=True) or {}
        if response.mimetype != "application/problem+json" or not str(problem.get("type", "")).endswith(code):
            wrong.append(f"{method} {path}: {got} is not a problem+json `{code}`: {response.mimetype} {problem}")
        if expected == 401 and "Bearer" not in response.headers.get("WWW-Authenticate", ""):
            wrong.append(f"{method} {path}: 401 without WWW-Authenticate: Bearer")
    if row.kind == "page" and expected == 403 and response.mimetype != "text/html":
        wrong.append(f"{method} {path}: 403 should be an HTML page, got {response.mimetype}")
    if row.cancels:
        want = "cancelled" if role in row.cancels else "issued"
        if notice_status(env, made["number"]) != want:
            wrong.append(f"{method} {path}: as {role} the notice should be {want}")
    return wrong


# --- the tests --------------------------------------------------------------------------------------


def test_every_endpoint_has_a_row(env: Env) -> None:
    routed = {(endpoint, method): rule for endpoint, method, rule in endpoint_methods(env.app)}
    missing = sorted(f"{endpoint} {method} {routed[(endpoint, method)]}"
                     for endpoint, method in routed if (endpoint, method) not in TABLE)
    stale = sorted(f"{endpoint} {method}" for endpoint, method in TABLE if (endpoint, method) not in routed)
    assert not missing, "endpoints without a row in the authorisation table:\n  " + "\n  ".join(missing)
    assert not stale, "rows for endpoints the app no longer has:\n  " + "\n  ".join(stale)


def test_table_agrees_with_the_view_marks(env: Env) -> None:
    """A view's `required_roles`/`public` mark and its row say the same thing."""
    problems = []
    for (endpoint, method), row in TABLE.items():
        view = env.app.view_functions.get(endpoint)
        if view is None:
            continue  # reported by test_every_endpoint_has_a_row
        required = getattr(view, "required_roles", None)
        if getattr(view, "public", False):
            if row.kind != "public":
                problems.append(f"{endpoint} {method}: marked @public but its row is {row.kind!r}")
        elif required is not None:
            granted = {role for role in ("window", "cashier", "finance", "admin") if row.expect[role] not in DENIED}
            if granted != {str(r) for r in required}:
                problems.append(f"{endpoint} {method}: view allows {sorted(map(str, required))}, row {sorted(granted)}")
        elif endpoint not in UNMARKED_VIEWS:
            problems.append(f"{endpoint} {method}: view has no api_roles/page_roles/public mark")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_role_gets_the_status_of_the_table(env: Env, role: str) -> None:
    client = page_client(env, role)
    wrong: list[str] = []
    # Signing out ends the session the other page rows need: do it last.
    rows = sorted(endpoint_methods(env.app), key=lambda r: r[0] == "core.logout")
    for endpoint, method, _rule in rows:
        row = TABLE.get((endpoint, method))
        if row is None:
            continue  # fails test_every_endpoint_has_a_row, once rather than once per role
        wrong.extend(check_row(env, role, method, row, client))
    assert not wrong, f"as {role}:\n  " + "\n  ".join(wrong)


def test_a_signed_in_session_does_not_open_the_api(env: Env) -> None:
    """Bearer tokens only: a browser session (which CSRF would not guard here) is not an API credential."""
    wrong = []
    for role in STAFF_ROLES:
        client = page_client(env, role)
        for (_endpoint, method), row in TABLE.items():
            if row.kind != "api":
                continue
            path = row.path.format(**prepare(env, row.needs))
            before = table_counts(env.db)
            response = client.open(path, method=method, json=row.json)
            if response.status_code != 401 or table_counts(env.db) != before:
                wrong.append(f"{role}: {method} {path}: {response.status_code}")
    assert not wrong, "reachable with a session cookie alone:\n  " + "\n  ".join(wrong)
