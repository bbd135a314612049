"""The bank simulator (`flask --app wsgi bank-sim pay|load`) against the app served over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.serving import make_server

from core.db import Database
from payments.models import Payment
from tests.webhooks.conftest import Bank


@pytest.fixture
def served(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # requests honours *_PROXY from the environment
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def test_bank_sim_pay_queries_then_pays(app: Flask, served: str, bank: Bank, notice_factory: Callable[..., str],
                                        db: Database) -> None:
    number = notice_factory()
    result = app.test_cli_runner().invoke(args=["bank-sim", "pay", number, "--bank", bank.code, "--url", served])
    assert result.exit_code == 0, result.output
    assert "confirmed" in result.stdout
    # Asked first, the bank does not collect on a paid notice; told to collect anyway, it is flagged.
    asked = app.test_cli_runner().invoke(args=["bank-sim", "pay", number, "--bank", bank.code, "--url", served])
    assert asked.exit_code != 0 and '"paid"' in asked.stdout, asked.output
    forced = app.test_cli_runner().invoke(args=["bank-sim", "pay", number, "--bank", bank.code, "--url", served,
                                                "--amount", "8000"])
    assert forced.exit_code != 0 and "notice-already-paid" in forced.stdout, forced.output
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment).where(Payment.status == "confirmed")) == 1
        assert session.scalar(select(func.count()).select_from(Payment)) == 2


def test_bank_sim_refused_exits_non_zero(app: Flask, served: str, bank: Bank,
                                         notice_factory: Callable[..., str]) -> None:
    number = notice_factory()
    result = app.test_cli_runner().invoke(args=["bank-sim", "pay", number, "--bank", bank.code, "--url", served,
                                                "--secret", "whsec_" + "A" * 44])
    assert result.exit_code != 0 and "401" in result.stdout
    unknown = app.test_cli_runner().invoke(args=["bank-sim", "pay", number, "--bank", "NOPE", "--url", served])
    assert unknown.exit_code != 0


def test_bank_sim_load_pays_the_unpaid_notices(app: Flask, served: str, bank: Bank,
                                               notice_factory: Callable[..., str], db: Database) -> None:
    for _ in range(6):
        notice_factory()
    result = app.test_cli_runner().invoke(args=["bank-sim", "load", "--bank", bank.code, "--url", served,
                                                "--count", "5", "--concurrency", "3"])
    assert result.exit_code == 0, result.output
    assert "'200': 5" in result.stdout
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Payment).where(Payment.status == "confirmed")) == 5
