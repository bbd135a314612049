"""Operator commands of API.md: init-db, users create, tokens create, audit verify, demo setup."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import Flask, current_app

from core.audit import Actor, verify_audit_chain
from core.config import PROJECT_ROOT
from core.db import get_db, reading, unit_of_work
from core.errors import DomainError
from core.models import Role
from core.users import create_token, create_user


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = url
    return config


def upgrade_database(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def _fail(error: DomainError) -> None:
    """Report a refused command on stderr, in Chinese, and exit 1 (nothing was written)."""
    field_errors = error.extra.get("errors") or {}
    # A validation error's detail speaks of "the request"; on the command line the title fits.
    click.echo(f"错误：{error.title if field_errors else (error.detail or error.title)}", err=True)
    for field, messages in field_errors.items():
        click.echo(f"  {field}: {'; '.join(messages)}", err=True)
    sys.exit(1)


def register(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db_command() -> None:
        """Create or upgrade the schema to the newest migration."""
        upgrade_database(get_db().url)
        click.echo("数据库已升级到最新版本。")

    @app.cli.group("users", help="工作人员账号 / staff users")
    def users() -> None:
        pass

    @users.command("create")
    @click.argument("name")
    # Not a click.Choice: a wrong role gets the same Chinese message as any other refused field.
    @click.option("--role", required=True, metavar="ROLE", help=" / ".join(r.value for r in Role))
    @click.option("--department", "department_code", default=None, help="部门代码（window 必填）")
    @click.option("--password", default=None, help="不给则随机生成并打印")
    @click.option("--display-name", default=None)
    def create_user_command(name: str, role: str, department_code: str | None, password: str | None,
                            display_name: str | None) -> None:
        """Create a staff user; the password is printed on the last line."""
        role = role.strip()
        try:
            with unit_of_work() as session:
                user, secret = create_user(session, current_app.config["FEESVC_AUDIT_KEY"],
                                           Actor.system("users create"), username=name, role=role,
                                           department_code=department_code, password=password,
                                           display_name=display_name)
        except DomainError as error:
            _fail(error)
        click.echo(f"已创建用户 {user.username}（{role}）。密码：")
        click.echo(secret)

    @app.cli.group("tokens", help="API 令牌 / API tokens")
    def tokens() -> None:
        pass

    @tokens.command("create")
    @click.argument("name")
    def create_token_command(name: str) -> None:
        """Print a new API token for the user (shown once, stored hashed)."""
        try:
            with unit_of_work() as session:
                token = create_token(session, current_app.config["FEESVC_AUDIT_KEY"],
                                     Actor.system("tokens create"), username=name)
        except DomainError as error:
            _fail(error)
        click.echo(f"用户 {name} 的新 API 令牌（只显示这一次）：")
        click.echo(token)

    @app.cli.group("audit", help="审计日志 / audit log")
    def audit() -> None:
        pass

    @audit.command("verify")
    def verify_command() -> None:
        """Check the hash chain: OK, or the first altered entry and any deleted ones."""
        with reading() as session:
            report = verify_audit_chain(session, current_app.config["FEESVC_AUDIT_KEY"])
        if report.ok:
            click.echo(f"OK：审计日志完整，共 {report.entries} 条。")
            return
        if report.head_missing:
            click.echo("失败：审计链头记录缺失。")
        if report.head_mismatch:
            click.echo("失败：审计链头与最后一条审计记录不符（末尾的记录可能已被删除，或链头被改动）。")
        if report.first_altered is not None:
            click.echo(f"失败：第 {report.first_altered} 条审计记录被篡改（首个不符的记录）。")
        if report.deleted:
            shown = ", ".join(str(s) for s in report.deleted[:50])
            click.echo(f"失败：缺少 {len(report.deleted)} 条审计记录（已被删除）：{shown}")
        sys.exit(1)

    @app.cli.group("demo", help="演示数据 / demo data")
    def demo() -> None:
        pass

    @demo.command("setup")
    @click.option("--fees", "fees_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  default=PROJECT_ROOT / "demo" / "fee-schedule.csv")
    @click.option("--base-url", default="http://127.0.0.1:5000", help="where the demo is served")
    def demo_setup_command(fees_path: Path, base_url: str) -> None:
        """Migrate, load the demo fee schedule, and create demo users (printed with tokens)."""
        from core.demo import setup_demo

        upgrade_database(get_db().url)
        for line in setup_demo(fees_path, base_url.rstrip("/")):
            click.echo(line)
