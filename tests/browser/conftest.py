"""A live server and headless Chromium for the browser tests.

The app is served by werkzeug in a background thread on a free port of 127.0.0.1, against a
fresh database with the demo fee schedule, one user of each role, and one notice of each of two
departments. Chromium is Debian's /usr/bin/chromium driven by Playwright for Python; nothing is
downloaded (`playwright install` is never needed). Without the browser or Playwright the tests
skip locally and fail under CI=true.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from core.audit import Actor
from tests.conftest import (
    AUDIT_KEY,
    DEMO_FEES,
    PASSWORD,
    PROJECT_ROOT,
    STAFF_USERS,
    Staff,
    issue,
    make_test_app,
    skip_or_fail,
)

CHROMIUM = Path(os.environ.get("FEESVC_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class LiveServer:
    url: str
    app: Flask
    staff: Staff
    notices: dict[str, str]  # department code → number of a notice issued at start-up

    def api(self) -> Any:
        return self.app.test_client()

    def issue(self, department: str = "BDC", **fields: Any) -> str:
        """Issue a notice through the API (not the page under test) and return its number."""
        who = "window" if department == "BDC" else "window_other"
        response = issue(self.api(), self.staff, department=department, who=who, **fields)
        assert response.status_code == 201, response.json
        return str(response.json["number"])


def _seed(app: Flask) -> Staff:
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule

    actor = Actor.system("browser-tests")
    tokens, usernames = {}, {}
    with app.app_context(), app.extensions["db"].unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        for key, (username, role, department) in STAFF_USERS.items():
            create_user(session, AUDIT_KEY, actor, username=username, role=role,
                        department_code=department, password=PASSWORD)
            tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
            usernames[key] = username
    return Staff(tokens=tokens, usernames=usernames)


@pytest.fixture(scope="module")
def live_server(database_url_factory: Any) -> Iterator[LiveServer]:
    app = make_test_app(database_url_factory("browser"))
    staff = _seed(app)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="browser-live-server", daemon=True)
    thread.start()
    try:
        live = LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app, staff=staff, notices={})
        live.notices["BDC"] = live.issue("BDC", payer={"name": "王五"})
        live.notices["GA"] = live.issue("GA", payer={"name": "赵六"},
                                        items=[{"fee_code": "GA-SFZ", "quantity": 1}])
        yield live
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["db"].engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM} (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (requirements-dev.txt)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test; JavaScript errors fail the test."""
    context = browser.new_context(base_url=live_server.url, locale="zh-CN", viewport=VIEWPORT,
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
           if msg.type == "error" and not _expected_console_error(msg.text) else None)
    try:
        yield tab
    finally:
        context.close()
    assert not problems, problems


def _expected_console_error(text: str) -> bool:
    # Chromium logs every 4xx page load ("Failed to load resource: … 403"); the tests check those.
    return bool(re.search(r"Failed to load resource: the server responded with a status of 4\d\d", text))


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG in artifacts/screenshots/ (gitignored), to be looked at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("用户名", exact=True).fill(username)
    page.get_by_label("密码", exact=True).fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/$"))
