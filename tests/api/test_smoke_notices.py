from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Staff, issue


def test_window_issues_a_notice_priced_from_the_schedule(client: FlaskClient, staff: Staff) -> None:
    response = issue(client, staff, items=[{"fee_code": "BDC-ZZ", "quantity": 2}])
    assert response.status_code == 201, response.json
    notice = response.json
    assert notice["total"] == 16000
    assert notice["items"][0]["unit_amount"] == 8000
    assert notice["status"] == "issued"
    assert len(notice["number"]) == 20
