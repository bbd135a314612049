"""Refusals made by the HTTP layer keep the problem+json contract (issue 10, section 0): a 405
says which methods the address takes (Allow), and an over-long URL or header is refused by the
app as problem+json, also through gunicorn, which would otherwise answer with its own HTML."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parents[2]


def test_405_says_which_methods_are_allowed(app: Flask) -> None:
    response = app.test_client().delete("/api/v1/fee-schedule")
    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert {"GET", "HEAD"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_an_over_long_url_is_refused_as_problem_json(app: Flask) -> None:
    response = app.test_client().get("/api/v1/fee-schedule?q=" + "a" * 5000)
    assert response.status_code == 414
    assert response.content_type == "application/problem+json"
    assert response.get_json()["title"] == "请求地址过长"
    assert app.test_client().get("/api/v1/fee-schedule?q=" + "a" * 3000).status_code != 414


def test_too_many_headers_are_refused_as_problem_json(app: Flask) -> None:
    headers = {f"X-Extra-{i}": "1" for i in range(150)}
    response = app.test_client().get("/api/v1/fee-schedule", headers=headers)
    assert response.status_code == 431
    assert response.content_type == "application/problem+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw_get(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_gunicorn_lets_the_app_answer_an_over_long_url(tmp_path: Path) -> None:
    """gunicorn's default (4094-byte request line) would answer this 5 KB URL itself, in HTML."""
    port = _free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/g.sqlite3", "SECRET_KEY": "t", "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                               "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        answer = _raw_get(port, "/api/v1/fee-schedule?q=" + "a" * 5000)
    finally:
        server.terminate()
        server.wait(10)
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 414"), head
    assert "application/problem+json" in head
