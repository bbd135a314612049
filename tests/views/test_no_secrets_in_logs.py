"""No secret is ever written to a log (issue 10, section 3).

A whole working day over real HTTP — operator commands that create users, a token and a bank,
sign-ins (one with a mistyped password), a notice, a cashier payment, a bank callback, a sign-out —
served by werkzeug (whose request log is the access log a gunicorn would write) with every logger
at DEBUG; then none of the passwords, tokens, bank secrets or session cookies used may appear in
anything logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import DEMO_FEES, make_test_app
from webhooks.simulator import callback_body, signed_headers

CASHIER_PASSWORD = "Cashier-Pass-4711"
WINDOW_PASSWORD = "Window-Pass-0815"
MISTYPED = "Window-Pass-0816"


@pytest.fixture
def live(app: Flask) -> Iterator[tuple[Flask, str]]:
    served = make_test_app(app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False)
    server = make_server("127.0.0.1", 0, served, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        served.extensions["db"].engine.dispose()


def cli(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """The formatted text and the raw message and arguments of every record (a formatter that
    printed the arguments differently must not hide a secret)."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(str(record.msg))
        parts.append(repr(record.args))
        parts.append(record.getMessage())
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


def test_a_full_day_writes_no_secret_to_any_log(live: tuple[Flask, str], caplog: pytest.LogCaptureFixture) -> None:
    served, base = live
    caplog.set_level(logging.DEBUG)  # the root logger: every library's DEBUG lines too
    for name in ("werkzeug", "sqlalchemy.engine", "feeservice", "feeservice.security", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        secrets_used = _run_the_day(served, base)
    finally:
        for name in ("werkzeug", "sqlalchemy.engine", "feeservice", "feeservice.security", "urllib3"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    logged = everything_logged(caplog)

    # The logs were really written: the access log of the requests and the engine's statements.
    assert "POST /login" in logged and "POST /webhooks/bank/LOG-BANK" in logged
    assert "INSERT INTO login_attempts" in logged
    leaked = {label for label, secret in secrets_used.items() if secret and secret in logged}
    assert not leaked, f"secrets in the logs: {sorted(leaked)}"


def _run_the_day(served: Flask, base: str) -> dict[str, str]:
    with served.app_context():
        cli(served, "fees", "import", str(DEMO_FEES))
        cashier_password = cli(served, "users", "create", "log-cashier", "--role", "cashier",
                               "--password", CASHIER_PASSWORD)
        generated = cli(served, "users", "create", "log-finance", "--role", "finance")
        cli(served, "users", "create", "log-window", "--role", "window", "--department", "BDC",
            "--password", WINDOW_PASSWORD)
        window_token = cli(served, "tokens", "create", "log-window")
        cashier_token = cli(served, "tokens", "create", "log-cashier")
        bank_secret = cli(served, "banks", "create", "LOG-BANK", "--name", "日志银行")
    assert cashier_password == CASHIER_PASSWORD and bank_secret.startswith("whsec_")

    http = requests.Session()
    mistyped = http.post(f"{base}/login", data={"username": "log-window", "password": MISTYPED},
                         allow_redirects=False)
    assert mistyped.status_code == 401
    signed_in = http.post(f"{base}/login", data={"username": "log-window", "password": WINDOW_PASSWORD},
                          allow_redirects=False)
    assert signed_in.status_code == 302
    session_cookie = http.cookies.get("session") or ""
    assert http.get(f"{base}/notices").status_code == 200

    def issue(name: str) -> Any:
        response = requests.post(f"{base}/api/v1/notices", headers={"Authorization": f"Bearer {window_token}"},
                                 json={"department": "BDC", "payer": {"name": name},
                                       "items": [{"fee_code": "BDC-ZZ", "quantity": 1}]})
        assert response.status_code == 201, response.text
        return response.json()

    at_window, at_bank = issue("张三"), issue("李四")
    paid = requests.post(f"{base}/api/v1/notices/{at_window['number']}/payments",
                         headers={"Authorization": f"Bearer {cashier_token}", "Idempotency-Key": "log-key-1"},
                         json={"amount": at_window["total"], "method": "cash"})
    assert paid.status_code == 201, paid.text
    body = callback_body(at_bank["number"], at_bank["total"])
    callback = requests.post(f"{base}/webhooks/bank/LOG-BANK", data=body.encode(),
                             headers=signed_headers(bank_secret, "log-evt-1", body))
    assert callback.status_code == 200 and callback.json()["result"] == "confirmed", callback.text
    forged = requests.post(f"{base}/webhooks/bank/LOG-BANK", data=body.encode(),
                           headers=signed_headers("whsec_" + "QUFB" * 11, "log-evt-2", body))
    assert forged.status_code == 401
    assert http.post(f"{base}/logout", allow_redirects=False).status_code == 302
    http.close()
    return {"cashier password": CASHIER_PASSWORD, "window password": WINDOW_PASSWORD,
            "mistyped password": MISTYPED, "generated password": generated, "window token": window_token,
            "cashier token": cashier_token, "bank secret": bank_secret,
            "bank secret key": bank_secret.removeprefix("whsec_"), "session cookie": session_cookie}
