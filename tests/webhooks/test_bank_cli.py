"""`flask --app wsgi banks create|rotate|disable` (API.md "Operations"): non-interactive, the secret
on the last line of stdout and shown nowhere else, exit ≠ 0 with a Chinese message on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.audit import AuditEntry, verify_audit_chain
from core.db import Database
from tests.conftest import AUDIT_KEY, Staff, table_counts
from tests.webhooks.conftest import Bank
from webhooks.models import BankClient


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def secret_of(result: Result) -> str:
    assert result.exit_code == 0, result.output
    secret = result.stdout.splitlines()[-1]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert result.output.count(secret) == 1, "the secret is printed once"
    return secret


def assert_refused(result: Result) -> None:
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in result.stderr), result.stderr
    assert "whsec_" not in result.output and "Traceback" not in result.output


@pytest.fixture
def pay(client: FlaskClient, notice_factory: Callable[..., str]) -> Callable[..., int]:
    """Post a fresh notice's callback signed with `secret` to `code`'s endpoint; the status code."""
    counter = iter(range(1000))

    def send(code: str, secret: str) -> int:
        bank = Bank(code, secret, client)
        response = bank.pay(notice_factory(), 8000, webhook_id=f"cli-{next(counter)}")
        if response.status_code == 200:
            assert response.json["result"] == "confirmed"
        return int(response.status_code)

    return send


def test_create_prints_a_secret_that_works(app: Flask, db: Database, staff: Staff, pay: Callable[..., int],
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        secret = secret_of(run(app, "banks", "create", "CCB-01", "--name", "建设银行某支行"))
    assert pay("CCB-01", secret) == 200
    with db.reading() as session:
        bank = session.scalar(select(BankClient).where(BankClient.code == "CCB-01"))
        assert bank is not None and bank.name == "建设银行某支行" and bank.active
        audit = session.scalar(select(AuditEntry).where(AuditEntry.action == "bank.created"))
        assert audit is not None and secret.removeprefix("whsec_") not in (audit.after or "")
        assert verify_audit_chain(session, AUDIT_KEY).ok
    assert secret.removeprefix("whsec_") not in caplog.text, "a secret is never logged"


def test_each_bank_gets_its_own_secret(app: Flask, staff: Staff, pay: Callable[..., int]) -> None:
    first = secret_of(run(app, "banks", "create", "B1", "--name", "一"))
    second = secret_of(run(app, "banks", "create", "B2", "--name", "二"))
    assert first != second
    assert pay("B1", second) == 401 and pay("B2", first) == 401
    assert pay("B1", first) == 200 and pay("B2", second) == 200


def test_rotate_keeps_the_old_secret_for_the_grace_period(app: Flask, staff: Staff, pay: Callable[..., int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    old = secret_of(run(app, "banks", "create", "B1", "--name", "一"))
    new = secret_of(run(app, "banks", "rotate", "B1"))
    assert new != old
    assert pay("B1", old) == 200 and pay("B1", new) == 200
    from datetime import timedelta

    from core.clock import utcnow

    later = utcnow() + timedelta(hours=24, minutes=1)
    monkeypatch.setattr("webhooks.service.utcnow", lambda: later)
    assert pay("B1", old) == 401 and pay("B1", new) == 200


def test_rotate_with_no_grace_retires_the_old_secret_at_once(app: Flask, staff: Staff,
                                                             pay: Callable[..., int]) -> None:
    old = secret_of(run(app, "banks", "create", "B1", "--name", "一"))
    new = secret_of(run(app, "banks", "rotate", "B1", "--grace-hours", "0"))
    assert pay("B1", old) == 401 and pay("B1", new) == 200


def test_disable_refuses_every_callback(app: Flask, staff: Staff, pay: Callable[..., int]) -> None:
    secret = secret_of(run(app, "banks", "create", "B1", "--name", "一"))
    result = run(app, "banks", "disable", "B1")
    assert result.exit_code == 0, result.output
    assert pay("B1", secret) == 401
    again = run(app, "banks", "disable", "B1")
    assert again.exit_code == 0, "disabling twice is harmless"


@pytest.mark.parametrize("args", [
    ["banks", "create", "", "--name", "空代码"],
    ["banks", "create", "has space", "--name", "x"],
    ["banks", "create", "中文代码", "--name", "x"],
    ["banks", "create", "X" * 33, "--name", "x"],
    ["banks", "create", "OK-1", "--name", "  "],
    ["banks", "rotate", "NO-SUCH"],
    ["banks", "disable", "NO-SUCH"],
])
def test_bad_commands_exit_non_zero_and_write_nothing(app: Flask, db: Database, args: list[str]) -> None:
    before = table_counts(db)
    assert_refused(run(app, *args))
    assert table_counts(db) == before


def test_create_refuses_a_code_in_use_and_keeps_the_first_secret(app: Flask, db: Database, staff: Staff,
                                                                 pay: Callable[..., int]) -> None:
    secret = secret_of(run(app, "banks", "create", "B1", "--name", "一"))
    before = table_counts(db)
    result = run(app, "banks", "create", "B1", "--name", "冒名")
    assert_refused(result)
    assert "B1" in result.stderr
    assert table_counts(db) == before
    assert pay("B1", secret) == 200
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(BankClient)) == 1


def test_missing_name_is_a_usage_error(app: Flask) -> None:
    result = run(app, "banks", "create", "B1")
    assert result.exit_code == 2 and "--name" in result.output
