"""The finance desk (对账工作台) through the Flask test client: runs, exceptions, actions, uploads."""

from __future__ import annotations

import io
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.audit import Actor
from core.clock import today, utcnow
from core.db import Database
from notices.numbers import compose_notice_number, group_digits
from payments.models import Payment
from reconciliation.models import ReconciliationException, ReconciliationRun, RunStatus
from tests.conftest import AUDIT_KEY, PASSWORD, Staff, issue, table_counts
from tests.views.conftest import signed_in
from tests.webhooks.conftest import Bank
from webhooks.service import create_bank

TZ = "Asia/Shanghai"
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "demo" / "statement-example.csv"
CSV_HEADER = "bank_reference,notice_number,amount,currency,booked_at,payer_name,payer_account\n"


@pytest.fixture
def finance(html_app: Flask, staff: Staff) -> FlaskClient:
    return signed_in(html_app, staff.usernames["finance"])


@pytest.fixture
def icbc(db: Database, client: FlaskClient, staff: Staff) -> Bank:
    """A registered bank (as tests/webhooks registers one): statements are uploaded for it."""
    with db.unit_of_work() as session:
        secret = create_bank(session, AUDIT_KEY, Actor.system("tests"), "ICBC-T", "测试银行")
    return Bank("ICBC-T", secret, client)


def csv_statement(*lines: tuple[str, str, int], day: date | None = None) -> bytes:
    """(bank reference, notice number, amount in fen) → a CSV statement booked on `day` (today)."""
    booked = (day or today(TZ)).isoformat()
    rows = [f"{ref},{number},{amount},CNY,{booked}T10:15:02+08:00,张三,6222020200001234567\n"
            for ref, number, amount in lines]
    return (CSV_HEADER + "".join(rows)).encode()


def upload(client: FlaskClient, content: bytes, bank_code: str, name: str = "statement.csv") -> Any:
    return client.post("/finance/statements", data={"bank_code": bank_code, "file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data")


def reconcile(client: FlaskClient, day: date | None = None) -> int:
    response = client.post("/finance/runs", data={"business_date": (day or today(TZ)).isoformat()})
    assert response.status_code == 303, response.get_data(as_text=True)
    match = re.search(r"/finance/runs/(\d+)$", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def exceptions_of(db: Database, kind: str) -> list[ReconciliationException]:
    with db.reading() as session:
        return list(session.scalars(select(ReconciliationException).where(ReconciliationException.type == kind)))


def overridden_notice(client: FlaskClient, staff: Staff) -> str:
    """A notice priced below the schedule by the window: one fee_amount_mismatch."""
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1, "override_amount": 4000,
                                            "override_reason": "困难群众减半"}])
    assert response.status_code == 201, response.json
    return str(response.json["number"])


# ---------------------------------------------------------------------------------------- pages


def test_the_desk_run_and_exception_pages_render_in_chinese(client: FlaskClient, staff: Staff, finance: FlaskClient,
                                                            icbc: Bank, db: Database) -> None:
    desk = finance.get("/finance")
    text = desk.get_data(as_text=True)
    assert desk.status_code == 200
    assert "<h1>对账工作台</h1>" in text and "导入银行对账单" in text and "还没有对账记录" in text
    assert (today(TZ) - timedelta(days=1)).isoformat() in text  # the date defaults to yesterday
    assert 'data-busy="正在对账…"' in text and 'data-busy="正在导入…"' in text
    overridden_notice(client, staff)
    run_id = reconcile(finance)
    page = finance.get(f"/finance/runs/{run_id}").get_data(as_text=True)
    assert "对账结果" in page and "当日合计" in page and "收费金额与公示标准不符" in page
    assert "临时" in page  # today's run is provisional
    assert f"/finance/runs/{run_id}/report.pdf" in page and f"/finance/runs/{run_id}/report.csv" in page
    found = exceptions_of(db, "fee_amount_mismatch")[0]
    detail = finance.get(f"/finance/exceptions/{found.id}").get_data(as_text=True)
    assert "收费金额与公示标准不符" in detail and "窗口改价" in detail and "困难群众减半" in detail
    assert "通知书计价所用版本" in detail and "开具当日有效的版本" in detail and "80.00" in detail and "40.00" in detail
    listing = finance.get("/finance").get_data(as_text=True)
    assert f'data-run-id="{run_id}"' in listing and "已完成" in listing


def test_admin_reads_the_desk_without_forms(html_app: Flask, staff: Staff) -> None:
    admin = signed_in(html_app, staff.usernames["admin"])
    page = admin.get("/finance").get_data(as_text=True)
    assert "对账工作台" in page and 'id="run-form"' not in page and 'id="upload-form"' not in page
    assert admin.post("/finance/runs", data={"business_date": today(TZ).isoformat()}).status_code == 403


@pytest.mark.parametrize("who", ["window", "cashier"])
@pytest.mark.parametrize("path", ["/finance", "/finance/runs/1", "/finance/exceptions/1", "/finance/runs/1/report.pdf"])
def test_window_and_cashier_are_refused(html_app: Flask, staff: Staff, who: str, path: str) -> None:
    response = signed_in(html_app, staff.usernames[who]).get(path)
    assert response.status_code == 403
    assert "无权访问" in response.get_data(as_text=True)


def test_forms_need_their_csrf_token(client: FlaskClient, staff: Staff, db: Database) -> None:
    signed_in_with_csrf = signed_in_csrf(client, staff.usernames["finance"])
    response = signed_in_with_csrf.post("/finance/runs", data={"business_date": today(TZ).isoformat()})
    assert response.status_code == 400
    assert table_counts(db)["reconciliation_runs"] == 0


def signed_in_csrf(client: FlaskClient, username: str) -> FlaskClient:
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login)
    assert token
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status_code == 302
    return client


def test_unknown_run_and_exception_are_a_page_not_a_crash(finance: FlaskClient) -> None:
    for path in ("/finance/runs/999", "/finance/exceptions/999"):
        response = finance.get(path)
        assert response.status_code == 404 and "没有编号为 999" in response.get_data(as_text=True)


# --------------------------------------------------------------------------------------- upload


def test_uploading_the_example_csv_shows_the_import_result(finance: FlaskClient, icbc: Bank, db: Database) -> None:
    first = upload(finance, EXAMPLE_CSV.read_bytes(), icbc.code, "statement-example.csv")
    assert first.status_code == 303 and first.headers["Location"].endswith("#import-result")
    page = finance.get(first.headers["Location"]).get_data(as_text=True)
    assert "对账单已导入" in page and "statement-example.csv" in page
    assert re.search(r'id="import-format">csv<', page)
    assert re.search(r'id="import-lines">3<', page) and re.search(r'id="import-new">3<', page)
    assert re.search(r'id="import-duplicates">0<', page)
    again = finance.get(upload(finance, EXAMPLE_CSV.read_bytes(), icbc.code).headers["Location"]).get_data(as_text=True)
    assert re.search(r'id="import-new">0<', again) and re.search(r'id="import-duplicates">3<', again)
    assert table_counts(db)["statement_lines"] == 3


@pytest.mark.parametrize("name", ["statement-example.camt053.001.08.xml", "statement-example.camt053.001.02.xml"])
def test_a_camt053_statement_is_recognised_by_its_content(finance: FlaskClient, icbc: Bank, name: str) -> None:
    response = upload(finance, (EXAMPLE_CSV.parent / name).read_bytes(), icbc.code, "upload.bin")
    assert response.status_code == 303, response.get_data(as_text=True)
    page = finance.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(r'id="import-format">camt\.053<', page)
    assert not re.search(r'id="import-new">0<', page)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (CSV_HEADER.encode() + "R-1,,12x,CNY,2026-11-24T10:15:02+08:00,张三,\n".encode(), "第 2 行"),
        (b"<?xml version='1.0'?><Document><BkToCstmrStmt><Stmt>", "XML"),
        (b"", "文件是空的"),
    ],
    ids=["bad-amount", "truncated-xml", "empty"],
)
def test_a_malformed_statement_is_explained_and_nothing_is_stored(finance: FlaskClient, icbc: Bank, db: Database,
                                                                  content: bytes, message: str) -> None:
    before = table_counts(db)
    response = upload(finance, content, icbc.code, "bad.csv")
    text = response.get_data(as_text=True)
    assert response.status_code == 422, text
    assert 'id="upload-error"' in text and message in text and "对账工作台" in text
    after = table_counts(db)
    assert after["bank_statements"] == before["bank_statements"] == 0
    assert after["statement_lines"] == before["statement_lines"] == 0


def test_an_upload_without_a_file_or_with_an_unknown_bank_is_refused(finance: FlaskClient, icbc: Bank) -> None:
    no_file = finance.post("/finance/statements", data={"bank_code": icbc.code}, content_type="multipart/form-data")
    assert no_file.status_code == 422 and "请选择要导入的对账单文件" in no_file.get_data(as_text=True)
    unknown = upload(finance, EXAMPLE_CSV.read_bytes(), "NO-SUCH-BANK")
    assert unknown.status_code == 422 and "没有登记代码为 NO-SUCH-BANK 的银行" in unknown.get_data(as_text=True)


# ------------------------------------------------------------------------------- reconciliation


def test_reconciling_through_the_form(finance: FlaskClient, client: FlaskClient, staff: Staff, db: Database) -> None:
    overridden_notice(client, staff)
    run_id = reconcile(finance)
    page = finance.get(f"/finance/runs/{run_id}").get_data(as_text=True)
    assert f"{today(TZ).isoformat()} 对账完成" in page
    assert re.search(r'id="run-totals".*开具通知书</th>\s*<td class="num">1</td>', page, re.S)
    future = finance.post("/finance/runs", data={"business_date": (today(TZ) + timedelta(days=1)).isoformat()})
    assert future.status_code == 422 and "不能对尚未到来的日期" in future.get_data(as_text=True)
    no_date = finance.post("/finance/runs", data={"business_date": "yesterday"})
    assert no_date.status_code == 422 and "请选择要对账的业务日期" in no_date.get_data(as_text=True)
    assert table_counts(db)["reconciliation_runs"] == 1


def test_a_run_at_work_is_shown_as_running(finance: FlaskClient, db: Database) -> None:
    with db.unit_of_work() as session:
        working = ReconciliationRun(business_date=today(TZ), status=RunStatus.RUNNING, started_at=utcnow(),
                                    provisional=True, started_by="finance-1")
        session.add(working)
        session.flush()
        run_id = working.id
    desk = finance.get("/finance").get_data(as_text=True)
    assert re.search(rf'data-run-id="{run_id}".*?进行中.*?对账进行中，完成后显示合计', desk, re.S)
    assert 'data-reload-after="5000"' in desk  # it looks again until the run is done (core/static/app.js)
    page = finance.get(f"/finance/runs/{run_id}").get_data(as_text=True)
    assert "进行中" in page and "页面会自动刷新" in page


def test_exceptions_are_filtered_by_type_status_and_department(finance: FlaskClient, client: FlaskClient,
                                                               staff: Staff, db: Database) -> None:
    overridden_notice(client, staff)
    unknown = compose_notice_number("990001", today(TZ).year % 100, 9_999_999)
    run_id = reconcile(finance)
    fee = exceptions_of(db, "fee_amount_mismatch")[0]
    everything = finance.get(f"/finance/runs/{run_id}").get_data(as_text=True)
    assert f'data-exception-id="{fee.id}"' in everything
    assert fee.notice_number and group_digits(fee.notice_number) in everything
    other_type = finance.get(f"/finance/runs/{run_id}?type=duplicate_payment").get_data(as_text=True)
    assert f'data-exception-id="{fee.id}"' not in other_type and "没有符合条件的差异" in other_type
    resolved = finance.get(f"/finance/runs/{run_id}?status=resolved").get_data(as_text=True)
    assert f'data-exception-id="{fee.id}"' not in resolved
    assert fee.department_id is not None
    own = finance.get(f"/finance/runs/{run_id}?department={fee.department_id}&status=open").get_data(as_text=True)
    assert f'data-exception-id="{fee.id}"' in own
    bad = finance.get(f"/finance/runs/{run_id}?type={unknown}&status=maybe&department=x")
    text = bad.get_data(as_text=True)
    assert bad.status_code == 200 and "已显示全部类型" in text and f'data-exception-id="{fee.id}"' in text


def test_resolving_an_exception_through_the_form(finance: FlaskClient, client: FlaskClient, staff: Staff,
                                                 db: Database) -> None:
    overridden_notice(client, staff)
    reconcile(finance)
    fee = exceptions_of(db, "fee_amount_mismatch")[0]
    page = finance.get(f"/finance/exceptions/{fee.id}").get_data(as_text=True)
    assert 'id="resolve-form"' in page and 'id="confirm-form"' not in page and 'id="refund-form"' not in page
    empty = finance.post(f"/finance/exceptions/{fee.id}/resolve", data={"note": "  "})
    assert empty.status_code == 422 and "请填写处理说明" in empty.get_data(as_text=True)
    done = finance.post(f"/finance/exceptions/{fee.id}/resolve", data={"note": "经核实为困难群众减免，有审批单"})
    assert done.status_code == 303
    shown = finance.get(done.headers["Location"]).get_data(as_text=True)
    assert "差异已处理" in shown and "经核实为困难群众减免，有审批单" in shown and 'id="resolve-form"' not in shown
    assert exceptions_of(db, "fee_amount_mismatch")[0].status == "resolved"
    twice = finance.post(f"/finance/exceptions/{fee.id}/resolve", data={"note": "再次"})
    assert twice.status_code == 409 and "已于之前处理" in twice.get_data(as_text=True)


def test_a_lost_callback_is_confirmed_from_the_statement_line(finance: FlaskClient, client: FlaskClient,
                                                              staff: Staff, icbc: Bank, db: Database) -> None:
    notice = issue(client, staff).json
    assert notice["status"] == "issued"
    statement = csv_statement(("LOST-CALLBACK-1", group_digits(notice["number"]), notice["total"]))
    assert upload(finance, statement, icbc.code).status_code == 303
    run_id = reconcile(finance)
    lost = exceptions_of(db, "statement_line_unmatched")
    assert [(e.detail_code, e.bank_reference) for e in lost] == [("names_unpaid_notice", "LOST-CALLBACK-1")]
    run_page = finance.get(f"/finance/runs/{run_id}?type=statement_line_unmatched").get_data(as_text=True)
    assert "银行到账无对应缴费" in run_page and "LOST-CALLBACK-1" in run_page
    page = finance.get(f"/finance/exceptions/{lost[0].id}").get_data(as_text=True)
    assert 'id="confirm-form"' in page and "据对账单确认缴费" in page and "可能是银行回调丢失" in page
    assert "银行对账单记录" in page and "LOST-CALLBACK-1" in page
    confirmed = finance.post(f"/finance/exceptions/{lost[0].id}/confirm")
    assert confirmed.status_code == 303, confirmed.get_data(as_text=True)
    shown = finance.get(confirmed.headers["Location"]).get_data(as_text=True)
    receipt = re.search(r'id="confirmed-receipt">([^<]+)<', shown)
    assert receipt, shown
    assert f'href="/receipts/{receipt.group(1)}"' in shown and "已处理" in shown
    assert finance.get(f"/receipts/{receipt.group(1)}").status_code == 200
    now = client.get(f"/api/v1/notices/{notice['number']}", headers=staff.headers("finance"))
    assert now.status_code == 200 and now.json is not None and now.json["status"] == "paid"
    assert exceptions_of(db, "statement_line_unmatched")[0].status == "resolved"
    again = finance.post(f"/finance/exceptions/{lost[0].id}/confirm")
    assert again.status_code == 409 and "只有" in again.get_data(as_text=True)


def test_a_flagged_bank_payment_is_marked_refund_due(finance: FlaskClient, icbc: Bank, db: Database) -> None:
    unknown = compose_notice_number("990001", today(TZ).year % 100, 9_999_999)
    assert icbc.pay(unknown, 5000, webhook_id="wh-unknown", reference="FLAG-UNKNOWN").status_code == 200
    reconcile(finance)
    flagged = exceptions_of(db, "payment_without_notice")[0]
    page = finance.get(f"/finance/exceptions/{flagged.id}").get_data(as_text=True)
    assert 'id="refund-form"' in page and "系统中没有这张通知书" in page and "FLAG-UNKNOWN" in page
    no_reason = finance.post(f"/finance/exceptions/{flagged.id}/refund", data={"reason": ""})
    assert no_reason.status_code == 422 and "请填写退款原因" in no_reason.get_data(as_text=True)
    done = finance.post(f"/finance/exceptions/{flagged.id}/refund", data={"reason": "编号不存在，退回付款人"})
    assert done.status_code == 303
    shown = finance.get(done.headers["Location"]).get_data(as_text=True)
    assert "已标记为待退款" in shown and 'id="record-refund-form"' in shown
    with db.reading() as session:
        payment = session.get(Payment, flagged.payment_id)
        assert payment is not None and payment.status == "refund_due"
    assert exceptions_of(db, "payment_without_notice")[0].status == "resolved"


def test_the_report_downloads(finance: FlaskClient, client: FlaskClient, staff: Staff) -> None:
    pytest.importorskip("reconciliation.reports", reason="the reports module is written separately")
    overridden_notice(client, staff)
    run_id = reconcile(finance)
    pdf = finance.get(f"/finance/runs/{run_id}/report.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    csv = finance.get(f"/finance/runs/{run_id}/report.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv" and csv.data.startswith(b"\xef\xbb\xbf")
