"""The operator commands of API.md ("Operations"), run as `flask --app wsgi …` would run them.

Non-interactive; exit ≠ 0 on failure with a Chinese message on stderr and nothing written; the
printed secret on the last line of stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from core.audit import AuditEntry, verify_audit_chain
from core.db import Database
from core.models import ApiToken, Department, User
from fees.models import FeeItem
from tests.conftest import AUDIT_KEY, DEMO_FEES, Staff, issue, make_test_app

WRITTEN_TABLES = ("departments", "fee_items", "users", "api_tokens", "audit_entries", "notices")


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t: conn.scalar(text(f"SELECT count(*) FROM {t}")) or 0 for t in WRITTEN_TABLES}


def last_line(result: Result) -> str:
    lines = result.stdout.splitlines()
    assert lines, result.output
    return lines[-1]


def assert_refused(result: Result, *fragments: str) -> None:
    """Exit ≠ 0, a clear Chinese message on stderr, and no traceback."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.strip(), "the refusal must be explained on stderr"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in result.stderr), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture
def login_client(db: Database) -> Iterator[FlaskClient]:
    """A client of an app on the same database, with CSRF off so that the form can be posted."""
    other = make_test_app(db.url, WTF_CSRF_ENABLED=False)
    yield other.test_client()
    other.extensions["db"].engine.dispose()


# --- init-db -----------------------------------------------------------------------------------


def test_init_db_creates_a_fresh_database_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    fresh = make_test_app(url)
    try:
        first = run(fresh, "init-db")
        assert first.exit_code == 0, first.output
        database: Database = fresh.extensions["db"]
        with database.reading() as session:
            assert verify_audit_chain(session, AUDIT_KEY).ok  # the head row is in place
        assert counts(database) == dict.fromkeys(WRITTEN_TABLES, 0)
        assert run(fresh, "fees", "import", str(DEMO_FEES)).exit_code == 0
        before = counts(database)
        second = run(fresh, "init-db")
        assert second.exit_code == 0, second.output
        assert counts(database) == before
        with database.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        fresh.extensions["db"].engine.dispose()


def test_init_db_on_the_configured_test_database_changes_nothing(app: Flask, staff: Staff, db: Database) -> None:
    before = counts(db)
    for _ in range(2):
        result = run(app, "init-db")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip()
    assert counts(db) == before


# --- users create ------------------------------------------------------------------------------


def test_users_create_with_a_password(app: Flask, staff: Staff, db: Database,
                                      login_client: FlaskClient) -> None:
    result = run(app, "users", "create", "wang-fang", "--role", "window", "--department", "BDC",
                 "--password", "s3cret-pass-1")
    assert result.exit_code == 0, result.output
    assert last_line(result) == "s3cret-pass-1"
    with db.reading() as session:
        user = session.scalar(select(User).where(User.username == "wang-fang"))
        assert user is not None
        assert (user.role, user.department.code if user.department else None) == ("window", "BDC")
        assert "s3cret-pass-1" not in user.password_hash
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
    assert entry is not None and entry.action == "user.created"
    assert (entry.actor_type, entry.actor_name) == ("system", "users create")
    assert json.loads(entry.after or "") == {"username": "wang-fang", "role": "window", "department": "BDC"}
    client = login_client
    response = client.post("/login", data={"username": "wang-fang", "password": "s3cret-pass-1"})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("role,department", [("window", "GA"), ("cashier", None), ("finance", None),
                                             ("admin", None)])
def test_users_create_without_a_password_prints_a_generated_one_that_signs_in(
        app: Flask, staff: Staff, db: Database, login_client: FlaskClient, role: str,
        department: str | None) -> None:
    args = ["users", "create", "new-user", "--role", role] + (["--department", department] if department else [])
    result = run(app, *args)
    assert result.exit_code == 0, result.output
    password = last_line(result)
    assert len(password) >= 12 and " " not in password
    assert password not in result.stdout.splitlines()[:-1]  # the secret is on the last line only
    client = login_client
    wrong = client.post("/login", data={"username": "new-user", "password": password + "x"})
    assert wrong.status_code == 401
    right = client.post("/login", data={"username": "new-user", "password": password})
    assert right.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert "new-user" in home.get_data(as_text=True)


def test_two_generated_passwords_differ(app: Flask, staff: Staff) -> None:
    first = run(app, "users", "create", "a-user", "--role", "cashier")
    second = run(app, "users", "create", "b-user", "--role", "cashier")
    assert first.exit_code == second.exit_code == 0
    assert last_line(first) != last_line(second)


@pytest.mark.parametrize("args,fragment", [
    (["users", "create", "x-user", "--role", "superuser"], "角色"),
    (["users", "create", "x-user", "--role", "window", "--department", "NOPE"], "NOPE"),
    (["users", "create", "x-user", "--role", "window"], "部门"),
    (["users", "create", "clerk-bdc", "--role", "window", "--department", "BDC"], "clerk-bdc"),
    (["users", "create", "x-user", "--role", "cashier", "--password", "short"], "密码"),
    (["users", "create", "bad name", "--role", "cashier"], "用户名"),
    (["tokens", "create", "nobody"], "nobody"),
])
def test_refused_commands_explain_in_chinese_and_write_nothing(
        app: Flask, staff: Staff, db: Database, args: list[str], fragment: str) -> None:
    before = counts(db)
    result = run(app, *args)
    assert_refused(result, fragment)
    assert result.stdout == ""
    assert counts(db) == before


def test_a_duplicate_user_keeps_the_original(app: Flask, staff: Staff, db: Database) -> None:
    result = run(app, "users", "create", "clerk-bdc", "--role", "admin", "--password", "another-pass-2")
    assert_refused(result, "已存在")
    with db.reading() as session:
        user = session.scalar(select(User).where(User.username == "clerk-bdc"))
        assert user is not None and user.role == "window"


# --- tokens create ------------------------------------------------------------------------------


def test_tokens_create_prints_a_token_that_authenticates(app: Flask, client: FlaskClient, staff: Staff,
                                                        db: Database) -> None:
    number = issue(client, staff).json["number"]
    result = run(app, "tokens", "create", "clerk-bdc")
    assert result.exit_code == 0, result.output
    token = last_line(result)
    assert token.startswith("fs_") and len(token) > 40
    response = client.get("/api/v1/notices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    assert [n["number"] for n in response.json["items"]] == [number]
    assert client.get("/api/v1/notices", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    with db.reading() as session:
        stored = list(session.scalars(select(ApiToken.token_hash)))
        entry = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
    assert token not in stored  # stored hashed
    assert entry is not None and entry.action == "token.created"
    assert token not in (entry.after or "")
    second = last_line(run(app, "tokens", "create", "clerk-bdc"))
    assert second != token
    assert client.get("/api/v1/notices", headers={"Authorization": f"Bearer {second}"}).status_code == 200


# --- fees import --------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


def demo_lines() -> list[str]:
    return DEMO_FEES.read_text(encoding="utf-8").rstrip("\n").split("\n")


def audit_entries(db: Database) -> list[tuple[int, str, str]]:
    with db.reading() as session:
        return [(e.seq, e.action, e.hash) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]


def fee_rows(db: Database) -> list[tuple[object, ...]]:
    with db.reading() as session:
        return [(f.id, f.code, f.name, f.department_id, f.unit, f.amount, f.legal_basis, f.effective_from,
                 f.effective_to) for f in session.scalars(select(FeeItem).order_by(FeeItem.id))]


def test_fees_import_of_the_demo_file_then_again_changes_nothing(app: Flask, db: Database) -> None:
    first = run(app, "fees", "import", str(DEMO_FEES))
    assert first.exit_code == 0, first.output
    assert "新增 11" in first.stdout
    with db.reading() as session:
        assert session.scalar(select(func.count()).select_from(FeeItem)) == 11
        assert sorted(session.scalars(select(Department.code))) == ["BDC", "CG", "GA", "RF", "ZJ"]
    rows, entries = fee_rows(db), audit_entries(db)
    assert len(entries) == 11 + 5
    second = run(app, "fees", "import", str(DEMO_FEES))
    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.stdout
    assert "未变 11" in second.stdout
    assert fee_rows(db) == rows
    assert audit_entries(db) == entries


MALFORMED = {
    # name: (how the demo file is spoiled, the line the refusal must name)
    "bad-amount-on-line-4": (lambda lines: [*lines[:3], lines[3].replace(",1000,", ",10.00,"), *lines[4:]],
                             "第 4 行"),
    "negative-amount": (lambda lines: [*lines[:3], lines[3].replace(",1000,", ",-5,"), *lines[4:]], "第 4 行"),
    "bad-date": (lambda lines: [*lines[:5], lines[5].replace("2025-01-01", "2025-13-01"), *lines[6:]], "第 6 行"),
    "overlapping-versions": (lambda lines: [*lines[:9], lines[9].replace("2026-06-30", "2026-07-15"),
                                            *lines[10:]], "第 11 行"),
    "duplicate-code-and-date": (lambda lines: [*lines, lines[1].replace(",8000,", ",9000,")], "第 13 行"),
    "wrong-header": (lambda lines: [lines[0].replace("department_code", "dept"), *lines[1:]], "第 1 行"),
    "missing-column": (lambda lines: [*lines[:6], lines[6].rsplit(",", 1)[0], *lines[7:]], "第 7 行"),
    "inconsistent-department-name": (lambda lines: [*lines[:2], lines[2].replace("县不动产登记中心", "不动产中心"),
                                                    *lines[3:]], "第 3 行"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_file_is_refused_whole_naming_the_line(app: Flask, db: Database, tmp_path: Path,
                                                          case: str) -> None:
    spoil, line = MALFORMED[case]
    path = write(tmp_path, f"{case}.csv", "\n".join(spoil(demo_lines())) + "\n")
    result = run(app, "fees", "import", path)
    assert_refused(result, line, "未做任何修改")
    assert counts(db) == dict.fromkeys(WRITTEN_TABLES, 0)


def test_a_file_not_in_utf8_is_refused_naming_the_line(app: Flask, db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, "gbk.csv", ("\n".join(demo_lines()) + "\n").encode("gbk"))
    result = run(app, "fees", "import", path)
    assert_refused(result, "第 2 行", "UTF-8")
    assert counts(db) == dict.fromkeys(WRITTEN_TABLES, 0)


def test_a_utf8_file_with_a_bom_and_crlf_is_accepted(app: Flask, db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, "excel.csv", ("\r\n".join(demo_lines()) + "\r\n").encode("utf-8-sig"))
    result = run(app, "fees", "import", path)
    assert result.exit_code == 0, result.output
    assert "新增 11" in result.stdout
    again = run(app, "fees", "import", str(DEMO_FEES))
    assert "nothing changed" in again.stdout


def test_one_bad_row_keeps_the_good_changes_of_the_same_file_out(
        app: Flask, staff: Staff, db: Database, tmp_path: Path) -> None:
    lines = demo_lines()
    spoiled = [line.replace("县不动产登记中心", "县不动产登记服务中心") for line in lines]
    spoiled.append("NEW-FEE,新收费,NEW,新部门,件,100,依据,2026-01-01,")
    spoiled[6] = spoiled[6].replace(",10000,", ",abc,")
    before_rows, before_entries = fee_rows(db), audit_entries(db)
    result = run(app, "fees", "import", write(tmp_path, "partly.csv", "\n".join(spoiled) + "\n"))
    assert_refused(result, "第 7 行")
    assert fee_rows(db) == before_rows
    assert audit_entries(db) == before_entries
    with db.reading() as session:
        assert session.scalar(select(Department.name).where(Department.code == "BDC")) == "县不动产登记中心"
        assert session.scalar(select(Department.id).where(Department.code == "NEW")) is None


def test_changing_the_amount_of_a_version_a_notice_used_is_refused(
        app: Flask, client: FlaskClient, staff: Staff, db: Database, tmp_path: Path) -> None:
    assert issue(client, staff).status_code == 201  # BDC-ZZ, 2025-01-01 version, is now in use
    lines = demo_lines()
    changed = [lines[0], lines[1].replace(",8000,", ",9000,"), *lines[2:]]
    before_rows, before_entries = fee_rows(db), audit_entries(db)
    result = run(app, "fees", "import", write(tmp_path, "raise.csv", "\n".join(changed) + "\n"))
    assert_refused(result, "第 2 行", "BDC-ZZ")
    assert fee_rows(db) == before_rows
    assert audit_entries(db) == before_entries
    # The way to change a used price: a new version from a later date.
    versioned = [lines[0], lines[1].replace("2025-01-01,", "2025-01-01,2030-12-31"),
                 *lines[2:], lines[1].replace(",8000,", ",9000,").replace("2025-01-01,", "2031-01-01,")]
    result = run(app, "fees", "import", write(tmp_path, "versioned.csv", "\n".join(versioned) + "\n"))
    assert result.exit_code == 0, result.output
    with db.reading() as session:
        amounts = list(session.execute(select(FeeItem.effective_from, FeeItem.effective_to, FeeItem.amount)
                                       .where(FeeItem.code == "BDC-ZZ").order_by(FeeItem.effective_from)))
    assert [(str(f), str(t), a) for f, t, a in amounts] == [("2025-01-01", "2030-12-31", 8000),
                                                           ("2031-01-01", "None", 9000)]


def test_an_unused_version_may_change_its_amount_and_a_used_one_its_name(
        app: Flask, client: FlaskClient, staff: Staff, db: Database, tmp_path: Path) -> None:
    assert issue(client, staff).status_code == 201  # BDC-ZZ used; GA-SFZ not
    lines = demo_lines()
    changed = [lines[0], lines[1].replace("不动产登记费（住宅类）", "不动产登记费（住宅）"), *lines[2:4],
               lines[4].replace(",2000,", ",2500,"), *lines[5:]]
    result = run(app, "fees", "import", write(tmp_path, "ok.csv", "\n".join(changed) + "\n"))
    assert result.exit_code == 0, result.output
    assert "修改 2" in result.stdout
    with db.reading() as session:
        assert session.scalar(select(FeeItem.amount).where(FeeItem.code == "GA-SFZ")) == 2500
        assert session.scalar(select(FeeItem.name).where(FeeItem.code == "BDC-ZZ")) == "不动产登记费（住宅）"
        assert verify_audit_chain(session, AUDIT_KEY).ok


def test_fees_import_of_a_missing_file_fails(app: Flask, tmp_path: Path) -> None:
    result = run(app, "fees", "import", str(tmp_path / "nope.csv"))
    assert result.exit_code != 0
