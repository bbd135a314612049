from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask, current_app

from core.audit import Actor
from core.db import unit_of_work
from core.errors import DomainError
from fees.service import import_fee_schedule


def register(app: Flask) -> None:
    @app.cli.group("fees", help="收费标准 / the published fee schedule")
    def fees() -> None:
        pass

    @fees.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def import_command(path: Path) -> None:
        """Load a fee schedule CSV (all rows or none)."""
        try:
            with unit_of_work() as session:
                summary = import_fee_schedule(session, current_app.config["FEESVC_AUDIT_KEY"],
                                              Actor.system("fees import"), path.read_bytes())
        except DomainError as error:
            click.echo(f"收费标准文件被拒绝，未做任何修改：{path}", err=True)
            for problem in error.extra.get("problems", [error.detail]):
                click.echo(f"  {problem}", err=True)
            sys.exit(1)
        click.echo(f"已读取 {summary.rows} 行：新增 {len(summary.created)}，修改 {len(summary.updated)}，"
                   f"未变 {summary.unchanged}；新建部门 {len(summary.departments_created)}，"
                   f"更名部门 {len(summary.departments_renamed)}。")
        if not summary.changed:
            click.echo("收费标准没有任何变化（nothing changed）。")
