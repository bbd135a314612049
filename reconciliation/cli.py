"""Commands: statements import, reconcile, scheduler."""

from __future__ import annotations

import click
from flask import Flask, current_app


def register(app: Flask) -> None:
    @app.cli.command("scheduler")
    @click.option("--once", is_flag=True, help="catch up missed runs and run what is due now, then exit")
    def scheduler_command(once: bool) -> None:
        """Run the nightly jobs (reconciliation, expiry, webhook delivery, clean-up) in the foreground."""
        from reconciliation.scheduler import run_scheduler

        run_scheduler(current_app._get_current_object(), once=once)  # type: ignore[attr-defined]
