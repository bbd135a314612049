"""Operator commands of API.md: init-db, users create, tokens create, audit verify|anchor, demo setup."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import click
from alembic import command
from alembic.config import Config
from flask import Flask, current_app
from flask_babel import gettext as _

from core.audit import Actor, Anchor, AnchorMismatch, AnchorProblem, AuditReport, verify_audit_chain
from core.audit_anchors import SavedAnchorsInvalid, anchor_audit_day, anchor_view, parse_saved_anchors
from core.clock import today
from core.config import PROJECT_ROOT
from core.db import get_db, reading, unit_of_work
from core.errors import DomainError, ValidationFailed
from core.models import Role
from core.schemas import ISO_DATE
from core.users import create_token, create_user, set_password, set_user_active


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


def _business_day(text: str | None, timezone: str) -> date:
    if text is None:
        return today(timezone) - timedelta(days=1)
    try:
        if ISO_DATE.fullmatch(text.strip()):
            return date.fromisoformat(text.strip())
    except ValueError:
        pass
    raise ValidationFailed({"date": [_("须为 YYYY-MM-DD 格式的日期。")]})


def _describe_checks(report: AuditReport, anchors_path: Path | None) -> list[str]:
    """What was checked, so that an OK is worth something to whoever reads it."""
    lines = [_("已检查审计记录 %(n)d 条（序号 1–%(last)d），逐条核对密钥散列、前后链接，以及链头记录。",
               n=report.entries, last=report.last_seq)]
    latest = report.latest_anchor
    if latest is None:
        lines.append(_("数据库中没有每日审计锚点。"))
    else:
        lines.append(_("已核对数据库中的每日审计锚点 %(n)d 个（最新：%(day)s，第 %(seq)d 条）。",
                       n=report.anchors_checked, day=latest.business_date.isoformat(), seq=latest.last_seq))
    if anchors_path is not None:
        lines.append(_("已核对锚点文件 %(path)s 中的锚点 %(n)d 个。", path=str(anchors_path),
                       n=report.file_anchors_checked))
    return lines


def _describe_mismatch(mismatch: AnchorMismatch, report: AuditReport) -> str:
    anchor = mismatch.anchor
    where = (_("锚点文件中 %(day)s 的锚点（第 %(seq)d 条）", day=anchor.business_date.isoformat(), seq=anchor.last_seq)
             if mismatch.source == "file" else
             _("数据库中 %(day)s 的锚点（第 %(seq)d 条）", day=anchor.business_date.isoformat(), seq=anchor.last_seq))
    if mismatch.problem is AnchorProblem.MISSING:
        if report.entries == 0:
            return _("%(where)s：审计日志已被清空（当时已有 %(seq)d 条）。", where=where, seq=anchor.last_seq)
        return _("%(where)s：审计日志只到第 %(last)d 条，其后的记录已被删除（链头落后于锚点）。",
                 where=where, last=report.last_seq)
    if mismatch.problem is AnchorProblem.REWRITTEN:
        return _("%(where)s：该条记录的散列已不同，历史记录被改写（锚点 %(expected)s，现为 %(found)s）。",
                 where=where, expected=anchor.last_hash[:16] + "…", found=str(mismatch.found)[:16] + "…")
    if mismatch.problem is AnchorProblem.COUNT:
        return _("%(where)s：当时共 %(expected)d 条，现在截至该条只有 %(found)d 条。",
                 where=where, expected=anchor.entries or 0, found=int(mismatch.found or 0))
    if mismatch.problem is AnchorProblem.UNRECORDED:
        return _("%(where)s：数据库中已没有该日的锚点。", where=where)
    return _("%(where)s：与数据库中该日的锚点（第 %(seq)d 条）不一致。", where=where, seq=int(mismatch.found or 0))


def _describe_failures(report: AuditReport) -> list[str]:
    lines = []
    if report.anchor_mismatches:
        first, *others = report.anchor_mismatches
        lines.append(_("失败：%(first)s", first=_describe_mismatch(first, report)))
        if others:
            lines.append(_("另有 %(n)d 处锚点不符：", n=len(others)))
            lines.extend("  " + _describe_mismatch(m, report) for m in others[:20])
    if report.head_missing:
        lines.append(_("失败：审计链头记录缺失。"))
    if report.head_mismatch:
        lines.append(_("失败：审计链头与最后一条审计记录不符（末尾的记录可能已被删除，或链头被改动）。"))
    if report.first_altered is not None:
        lines.append(_("失败：第 %(seq)d 条审计记录被篡改（首个不符的记录）。", seq=report.first_altered))
    if report.deleted:
        shown = ", ".join(str(s) for s in report.deleted[:50])
        lines.append(_("失败：缺少 %(n)d 条审计记录（已被删除）：%(seqs)s", n=len(report.deleted), seqs=shown))
    return lines


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

    @users.command("set-password")
    @click.argument("name")
    @click.option("--password", default=None, help="不给则随机生成并打印")
    def set_password_command(name: str, password: str | None) -> None:
        """Set a new password (printed on the last line); every page session of the user ends."""
        try:
            with unit_of_work() as session:
                secret = set_password(session, current_app.config["FEESVC_AUDIT_KEY"],
                                      Actor.system("users set-password"), username=name, password=password)
        except DomainError as error:
            _fail(error)
        click.echo(f"已为用户 {name} 设置新密码，其已登录的页面会话全部失效。密码：")
        click.echo(secret)

    @users.command("disable")
    @click.argument("name")
    def disable_user_command(name: str) -> None:
        """The user can no longer sign in; their sessions end and their tokens answer 401."""
        try:
            with unit_of_work() as session:
                set_user_active(session, current_app.config["FEESVC_AUDIT_KEY"], Actor.system("users disable"),
                                username=name, active=False)
        except DomainError as error:
            _fail(error)
        click.echo(f"已停用用户 {name}。")

    @users.command("enable")
    @click.argument("name")
    def enable_user_command(name: str) -> None:
        """Undo `users disable` (old sessions stay ended)."""
        try:
            with unit_of_work() as session:
                set_user_active(session, current_app.config["FEESVC_AUDIT_KEY"], Actor.system("users enable"),
                                username=name, active=True)
        except DomainError as error:
            _fail(error)
        click.echo(f"已启用用户 {name}。")

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
    @click.option("--anchors", "anchors_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="保存下来的公开审计锚点（GET /api/v1/public/audit-anchors 的 JSON）")
    def verify_command(anchors_path: Path | None) -> None:
        """Check the hash chain, the head and the daily anchors (also a saved copy of them): OK, or
        what does not hold, first mismatch first; exit 1 on a failure, 2 on an unreadable file."""
        saved: list[Anchor] = []
        if anchors_path is not None:
            try:
                saved = parse_saved_anchors(anchors_path.read_bytes())
            except OSError as error:
                click.echo(f"错误：无法读取锚点文件 {anchors_path}：{error.strerror or error}", err=True)
                sys.exit(2)
            except SavedAnchorsInvalid as error:
                click.echo(f"错误：锚点文件 {anchors_path} 无法使用：{error}", err=True)
                sys.exit(2)
        with reading() as session:
            report = verify_audit_chain(session, current_app.config["FEESVC_AUDIT_KEY"], saved)
        for line in _describe_checks(report, anchors_path):
            click.echo(line)
        if report.ok:
            click.echo(_("OK：审计日志完整，共 %(n)d 条。", n=report.entries))
            return
        for line in _describe_failures(report):
            click.echo(line)
        sys.exit(1)

    @audit.command("anchor")
    @click.option("--date", "day", default=None, help="营业日 YYYY-MM-DD（默认昨天）")
    def anchor_command(day: str | None) -> None:
        """Record the audit anchor of a finished business date (the scheduler does it nightly)."""
        timezone = current_app.config["FEESVC_TIMEZONE"]
        try:
            business_day = _business_day(day, timezone)
            with unit_of_work() as session:
                anchor = anchor_audit_day(session, current_app.config["FEESVC_AUDIT_KEY"], business_day,
                                          timezone=timezone, actor=Actor.system("audit anchor"))
                view = anchor_view(anchor, timezone)
        except DomainError as error:
            _fail(error)
        click.echo(f"{view['date']} 的审计锚点：第 {view['last_seq']} 条，共 {view['entries']} 条，"
                   f"散列 {view['last_hash']}")

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
