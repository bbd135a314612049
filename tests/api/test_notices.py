"""Issuing, reading, listing and cancelling notices through the API (window, cashier, finance)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

import notices.service
from core.clock import today
from notices.numbers import compose_notice_number
from tests.conftest import Staff, issue


def at(moment: datetime) -> Any:
    return lambda: moment


@pytest.mark.parametrize(
    ("issued_at", "unit_amount"),
    [
        (datetime(2026, 6, 30, 15, 59, tzinfo=UTC), 12000),  # 2026-06-30 23:59 in Shanghai
        (datetime(2026, 6, 30, 16, 0, tzinfo=UTC), 13500),  # 2026-07-01 00:00 in Shanghai
        (datetime(2025, 3, 1, 2, 0, tzinfo=UTC), 12000),
    ],
)
def test_price_comes_from_the_version_in_force_on_the_day_of_issue(
    client: FlaskClient, staff: Staff, monkeypatch: pytest.MonkeyPatch, issued_at: datetime, unit_amount: int
) -> None:
    monkeypatch.setattr(notices.service, "utcnow", at(issued_at))
    response = issue(client, staff, department="ZJ", who="window_zj",
                     items=[{"fee_code": "ZJ-PTF", "quantity": 120}], due_date=None)
    assert response.status_code == 201, response.json
    line = response.json["items"][0]
    assert line["unit_amount"] == unit_amount
    assert line["amount"] == unit_amount * 120
    assert response.json["total"] == unit_amount * 120


def test_the_client_cannot_set_a_price(client: FlaskClient, staff: Staff) -> None:
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1, "unit_amount": 1}])
    assert response.status_code == 422
    assert "items.0.unit_amount" in response.json["errors"]
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1}], total=1)
    assert response.status_code == 422
    assert "total" in response.json["errors"]


def test_a_reduction_replaces_the_line_amount_and_keeps_the_schedule_price(client: FlaskClient,
                                                                         staff: Staff) -> None:
    response = issue(client, staff, items=[
        {"fee_code": "BDC-ZZ", "quantity": 1},
        {"fee_code": "BDC-GBF", "quantity": 3, "override_amount": 1500, "override_reason": "低保户减半"},
    ])
    assert response.status_code == 201, response.json
    reduced = response.json["items"][1]
    assert (reduced["unit_amount"], reduced["quantity"], reduced["amount"]) == (1000, 3, 1500)
    assert reduced["override_reason"] == "低保户减半"
    assert response.json["total"] == 8000 + 1500


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"fee_code": "BDC-GBF", "quantity": 1, "override_amount": 500}, "items.0.override_reason"),
        ({"fee_code": "BDC-GBF", "quantity": 1, "override_reason": "减免"}, "items.0.override_amount"),
        ({"fee_code": "BDC-GBF", "quantity": 2, "override_amount": 2001, "override_reason": "x"},
         "items.0.override_amount"),
        ({"fee_code": "BDC-GBF", "quantity": 1, "override_amount": -1, "override_reason": "x"},
         "items.0.override_amount"),
    ],
)
def test_a_reduction_needs_amount_and_reason_and_never_raises_the_price(
    client: FlaskClient, staff: Staff, line: dict[str, Any], field: str
) -> None:
    response = issue(client, staff, items=[line])
    assert response.status_code == 422
    assert response.json["type"].endswith("/validation")
    assert field in response.json["errors"]


def test_a_fully_exempted_case_needs_no_notice(client: FlaskClient, staff: Staff) -> None:
    response = issue(client, staff, items=[
        {"fee_code": "BDC-ZZ", "quantity": 1, "override_amount": 0, "override_reason": "全额减免"}])
    assert response.status_code == 422
    assert "items" in response.json["errors"]


@pytest.mark.parametrize("quantity", [0, -1, 100_001, 1.5, "2", True, None])
def test_quantity_must_be_an_integer_from_1_to_100000(client: FlaskClient, staff: Staff, quantity: Any) -> None:
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": quantity}])
    assert response.status_code == 422
    assert "items.0.quantity" in response.json["errors"]


def test_quantity_bounds_are_inclusive(client: FlaskClient, staff: Staff) -> None:
    assert issue(client, staff, items=[{"fee_code": "BDC-GBF", "quantity": 100_000}]).json["total"] == 100_000_000


@pytest.mark.parametrize(
    ("code", "problem"),
    [("NOPE", "unknown-fee"), ("GA-SFZ", "fee-not-of-department")],
)
def test_fee_codes_must_be_in_force_and_of_the_department(client: FlaskClient, staff: Staff, code: str,
                                                          problem: str) -> None:
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 1}, {"fee_code": code, "quantity": 1}])
    assert response.status_code == 422
    assert response.json["type"].endswith("/" + problem)
    assert "items.1.fee_code" in response.json["errors"]


def test_a_window_issues_only_for_its_own_department(client: FlaskClient, staff: Staff) -> None:
    response = issue(client, staff, department="GA", items=[{"fee_code": "GA-SFZ", "quantity": 1}])
    assert response.status_code == 403


def test_due_date_defaults_to_fifteen_days_and_status_turns_expired_after_it(
    client: FlaskClient, staff: Staff, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued_at = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    monkeypatch.setattr(notices.service, "utcnow", at(issued_at))
    created = issue(client, staff).json
    assert created["due_date"] == "2026-03-17"
    assert created["issued_at"] == "2026-03-02T09:00:00+08:00"
    fetched = client.get(f"/api/v1/notices/{created['number']}", headers=staff.headers("cashier")).json
    assert fetched["status"] == "expired"  # today is long after 2026-03-17


def test_status_is_issued_through_the_end_of_the_due_date(client: FlaskClient, staff: Staff) -> None:
    day = today("Asia/Shanghai")
    created = issue(client, staff, due_date=day.isoformat()).json
    assert created["status"] == "issued"
    assert created["due_date"] == day.isoformat()


@pytest.mark.parametrize("due", [date(2020, 1, 1), date.today() + timedelta(days=800)])
def test_due_date_must_be_reasonable(client: FlaskClient, staff: Staff, due: date) -> None:
    response = issue(client, staff, due_date=due.isoformat())
    assert response.status_code == 422
    assert "due_date" in response.json["errors"]


def test_numbers_are_sequential_and_valid(client: FlaskClient, staff: Staff) -> None:
    numbers = [issue(client, staff).json["number"] for _ in range(3)]
    year = today("Asia/Shanghai").year % 100
    assert [n[:8] for n in numbers] == [f"990001{year:02d}"] * 3
    assert [int(n[8:18]) for n in numbers] == [1, 2, 3]
    assert all(int(n) % 97 == 1 for n in numbers)


def test_get_by_number_with_spaces_and_window_department_scoping(client: FlaskClient, staff: Staff) -> None:
    number = issue(client, staff).json["number"]
    spaced = " ".join(number[i:i + 4] for i in range(0, 20, 4))
    for who in ("window", "cashier", "finance", "admin"):
        response = client.get(f"/api/v1/notices/{spaced}", headers=staff.headers(who))
        assert response.status_code == 200, who
        assert response.json["number"] == number
    assert client.get(f"/api/v1/notices/{number}", headers=staff.headers("window_other")).status_code == 403


def test_mistyped_number_is_422_and_unknown_is_404(client: FlaskClient, staff: Staff) -> None:
    number = issue(client, staff).json["number"]
    mistyped = number[:-1] + str((int(number[-1]) + 1) % 10)
    response = client.get(f"/api/v1/notices/{mistyped}", headers=staff.headers("cashier"))
    assert response.status_code == 422 and response.json["type"].endswith("/invalid-notice-number")
    unknown = compose_notice_number("990001", 2026, 9_999_999_999)
    response = client.get(f"/api/v1/notices/{unknown}", headers=staff.headers("cashier"))
    assert response.status_code == 404


def test_list_filters_by_status_payer_and_date_and_scopes_windows(client: FlaskClient, staff: Staff) -> None:
    first = issue(client, staff, payer={"name": "王小明"}, case_reference="BDC-2026-001").json
    issue(client, staff, payer={"name": "李四"})
    issue(client, staff, department="GA", who="window_other", items=[{"fee_code": "GA-SFZ", "quantity": 1}])
    client.post(f"/api/v1/notices/{first['number']}/cancel", json={"reason": "申请人撤回"},
                headers=staff.headers("window"))

    def listing(who: str, query: str = "") -> dict[str, Any]:
        response = client.get(f"/api/v1/notices{query}", headers=staff.headers(who))
        assert response.status_code == 200, response.json
        return dict(response.json)

    assert listing("window")["total"] == 2
    assert listing("window_other")["total"] == 1
    assert listing("finance")["total"] == 3
    assert [n["payer"]["name"] for n in listing("cashier", "?status=cancelled")["items"]] == ["王小明"]
    assert listing("cashier", "?status=issued")["total"] == 2
    assert listing("cashier", "?q=小明")["total"] == 1
    assert listing("cashier", "?q=BDC-2026")["total"] == 1
    assert listing("cashier", f"?q={first['number']}")["total"] == 1
    day = today("Asia/Shanghai")
    assert listing("cashier", f"?from={day}&to={day}")["total"] == 3
    assert listing("cashier", f"?to={day - timedelta(days=1)}")["total"] == 0
    page = listing("cashier", "?per_page=2&page=2")
    assert (page["total"], len(page["items"]), page["page"], page["per_page"]) == (3, 1, 2, 2)


def test_cancel_needs_a_reason_and_happens_once(client: FlaskClient, staff: Staff) -> None:
    number = issue(client, staff).json["number"]
    path = f"/api/v1/notices/{number}/cancel"
    assert client.post(path, json={"reason": "  "}, headers=staff.headers("window")).status_code == 422
    assert client.post(path, json={"reason": "x"}, headers=staff.headers("window_other")).status_code == 403
    assert client.post(path, json={"reason": "x"}, headers=staff.headers("cashier")).status_code == 403
    response = client.post(path, json={"reason": "材料不全，退件"}, headers=staff.headers("window"))
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert response.json["cancel_reason"] == "材料不全，退件"
    again = client.post(path, json={"reason": "再次"}, headers=staff.headers("window"))
    assert again.status_code == 409 and again.json["type"].endswith("/notice-cancelled")


def test_the_expiry_job_marks_overdue_notices_and_is_audited(client: FlaskClient, staff: Staff,
                                                             monkeypatch: pytest.MonkeyPatch, app: Any) -> None:
    monkeypatch.setattr(notices.service, "utcnow", at(datetime(2026, 1, 5, 2, 0, tzinfo=UTC)))
    overdue = issue(client, staff).json["number"]
    monkeypatch.undo()
    current = issue(client, staff).json["number"]
    result = app.test_cli_runner().invoke(args=["notices", "expire"])
    assert result.exit_code == 0 and "1 张" in result.output
    statuses = {n: client.get(f"/api/v1/notices/{n}", headers=staff.headers("window")).json["status"]
                for n in (overdue, current)}
    assert statuses == {overdue: "expired", current: "issued"}
    assert "1 张" not in app.test_cli_runner().invoke(args=["notices", "expire"]).output
