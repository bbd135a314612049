from __future__ import annotations

import statistics
import sys
from datetime import timedelta

import click
import requests
from flask import Flask, current_app
from sqlalchemy import select

from core.audit import Actor
from core.clock import utcnow
from core.db import get_db, reading, unit_of_work
from core.errors import DomainError
from notices.models import Notice, NoticeStatus
from webhooks import delivery, service, simulator


def _fail(error: DomainError) -> None:
    click.echo(f"错误：{error.detail or error.title}", err=True)
    for field, messages in (error.extra.get("errors") or {}).items():
        click.echo(f"  {field}: {'; '.join(messages)}", err=True)
    sys.exit(1)


def register(app: Flask) -> None:
    key = lambda: current_app.config["FEESVC_AUDIT_KEY"]  # noqa: E731

    @app.cli.group("banks", help="银行客户端 / bank clients")
    def banks() -> None:
        pass

    @banks.command("create")
    @click.argument("code")
    @click.option("--name", required=True)
    def create_bank(code: str, name: str) -> None:
        """Register a bank; its signing secret (whsec_…) is printed once, on the last line."""
        try:
            with unit_of_work() as session:
                secret = service.create_bank(session, key(), Actor.system("banks create"), code, name)
        except DomainError as error:
            _fail(error)
        click.echo(f"已登记银行 {code}。签名密钥（只显示这一次）：")
        click.echo(secret)

    @banks.command("rotate")
    @click.argument("code")
    @click.option("--grace-hours", default=24.0, show_default=True, help="旧密钥继续有效的小时数")
    def rotate(code: str, grace_hours: float) -> None:
        """Issue a new secret; the old one keeps working for the grace period."""
        try:
            with unit_of_work() as session:
                secret = service.rotate_secret(session, key(), Actor.system("banks rotate"), code,
                                               timedelta(hours=grace_hours))
        except DomainError as error:
            _fail(error)
        click.echo(f"银行 {code} 的新签名密钥（旧密钥 {grace_hours:g} 小时内仍有效）：")
        click.echo(secret)

    @banks.command("disable")
    @click.argument("code")
    def disable(code: str) -> None:
        """Refuse every callback of this bank from now on."""
        try:
            with unit_of_work() as session:
                service.disable_bank(session, key(), Actor.system("banks disable"), code)
        except DomainError as error:
            _fail(error)
        click.echo(f"已停用银行 {code}。")

    @app.cli.group("webhooks", help="向部门系统推送事件 / outbound notifications")
    def webhooks() -> None:
        pass

    @webhooks.command("subscribe")
    @click.argument("name")
    @click.option("--url", required=True)
    @click.option("--event", "events", multiple=True, required=True,
                  help="notice.paid / receipt.voided / certificate.issued（可多次）")
    def subscribe(name: str, url: str, events: tuple[str, ...]) -> None:
        """Register a department system; its signing secret is printed on the last line."""
        try:
            with unit_of_work() as session:
                _sub, secret = delivery.subscribe(session, key(), Actor.system("webhooks subscribe"), name=name,
                                                  url=url, event_types=list(events))
        except DomainError as error:
            _fail(error)
        click.echo(f"已登记订阅 {name}。签名密钥（只显示这一次）：")
        click.echo(secret)

    @webhooks.command("deliver")
    def deliver() -> None:
        """Deliver what is due once (the scheduler runs this continuously)."""
        run = delivery.deliver_due(get_db().write_sessions)
        click.echo(f"新事件分发 {run.dispatched}，尝试 {run.attempted}，送达 {run.delivered}，失败 {run.failed}。")

    @app.cli.group("bank-sim", help="银行模拟器 / a bank that pays notices")
    def bank_sim() -> None:
        pass

    def _secret(bank: str, given: str | None) -> str:
        if given:
            return given
        with reading() as session:
            found = service.live_secrets(session, bank, utcnow())
        if not found:
            click.echo(f"错误：银行 {bank} 未登记或已停用（可用 --secret 指定密钥）。", err=True)
            sys.exit(1)
        return found[0]

    @bank_sim.command("pay")
    @click.argument("number")
    @click.option("--bank", default="DEMO-BANK", show_default=True)
    @click.option("--url", "base_url", default="http://127.0.0.1:5000", show_default=True)
    @click.option("--amount", type=int, default=None, help="分；不给则先查询应缴金额")
    @click.option("--secret", default=None, help="whsec_…；不给则从本机数据库读取")
    def sim_pay(number: str, bank: str, base_url: str, amount: int | None, secret: str | None) -> None:
        """Pay one notice as the bank would (query, then a signed callback with retries)."""
        with requests.Session() as http:
            result = simulator.pay(http, base_url.rstrip("/"), bank, _secret(bank, secret), number, amount)
        click.echo(f"HTTP {result.status}（{result.attempts} 次尝试，{result.seconds * 1000:.0f} ms）：{result.body}")
        if result.status != 200 or '"confirmed"' not in result.body:
            sys.exit(1)

    @bank_sim.command("load")
    @click.option("--bank", default="DEMO-BANK", show_default=True)
    @click.option("--url", "base_url", default="http://127.0.0.1:5000", show_default=True)
    @click.option("--count", default=100, show_default=True, help="最多支付多少张待缴通知书")
    @click.option("--concurrency", default=8, show_default=True)
    @click.option("--secret", default=None)
    def sim_load(bank: str, base_url: str, count: int, concurrency: int, secret: str | None) -> None:
        """Pay up to COUNT unpaid notices from this database, CONCURRENCY at a time."""
        with reading() as session:
            due = [(n, t) for n, t in session.execute(
                select(Notice.number, Notice.total).where(Notice.status == NoticeStatus.ISSUED)
                .order_by(Notice.id).limit(count))]
        results = simulator.load(base_url.rstrip("/"), bank, _secret(bank, secret), due, concurrency)
        times = sorted(r.seconds * 1000 for r in results)
        by_status: dict[str, int] = {}
        for r in results:
            by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
        if times:
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            click.echo(f"{len(results)} 笔：{by_status}；p50 {statistics.median(times):.1f} ms，p99 {p99:.1f} ms")
        else:
            click.echo("没有待缴的通知书。")
