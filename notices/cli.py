from __future__ import annotations

import click
from flask import Flask, current_app

from core.clock import today
from core.db import unit_of_work
from notices.service import expire_overdue, settings_from_config


def register(app: Flask) -> None:
    @app.cli.group("notices", help="缴款通知书 / payment notices")
    def notices() -> None:
        pass

    @notices.command("expire")
    def expire_command() -> None:
        """Mark unpaid notices past their due date as expired (also run nightly by the scheduler)."""
        settings = settings_from_config(current_app.config)
        with unit_of_work() as session:
            expired = expire_overdue(session, settings, today(settings.timezone))
        click.echo(f"已将 {len(expired)} 张逾期未缴的通知书标记为已过期。")
