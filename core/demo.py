"""The demo of `make run`: the demo fee schedule and one user per role, printed once."""

from __future__ import annotations

from pathlib import Path

from flask import current_app
from sqlalchemy import select

from core.audit import Actor
from core.db import unit_of_work
from core.models import User
from core.users import create_token, create_user

DEMO_PASSWORD = "demo-pass-2026"
DEMO_USERS = [
    ("window-bdc", "window", "BDC", "不动产窗口 王芳"),
    ("window-ga", "window", "GA", "户政窗口 李强"),
    ("cashier", "cashier", None, "收费员 赵敏"),
    ("finance", "finance", None, "财务 陈静"),
    ("admin", "admin", None, "管理员 刘洋"),
]


def setup_demo(fees_path: Path, base: str) -> list[str]:
    from fees.service import import_fee_schedule

    key = current_app.config["FEESVC_AUDIT_KEY"]
    actor = Actor.system("demo setup")
    out = []
    with unit_of_work() as session:
        summary = import_fee_schedule(session, key, actor, fees_path.read_bytes())
    out.append(f"演示收费标准：{fees_path}（新增 {len(summary.created)}，未变 {summary.unchanged}）")
    out.append(f"演示用户（密码均为 {DEMO_PASSWORD}）：")
    out.append(f"  {'用户名':<12} {'角色':<8} {'部门':<5} API 令牌")
    for username, role, department, display in DEMO_USERS:
        with unit_of_work() as session:
            if session.scalar(select(User.id).where(User.username == username)) is None:
                create_user(session, key, actor, username=username, role=role,
                            department_code=department, password=DEMO_PASSWORD, display_name=display)
            token = create_token(session, key, actor, username=username)
        out.append(f"  {username:<12} {role:<8} {department or '-':<5} {token}")
    out.extend(_demo_bank(key, actor, base))
    out.append(f"打开 {base}/login 登录；公开收费标准：{base}/fees ；API 文档：{base}/api/v1/openapi.json")
    out.append(f"示例：curl -H 'Authorization: Bearer <window-bdc 的令牌>' {base}/api/v1/notices")
    out.append(f"对账：finance 登录后打开 {base}/finance ；导入示例对账单："
               ".venv/bin/flask --app wsgi statements import demo/statement-example.camt053.001.08.xml "
               "--bank DEMO-BANK ；对账：.venv/bin/flask --app wsgi reconcile --date 2026-11-24")
    return out


def _demo_bank(key: str, actor: Actor, base: str) -> list[str]:
    """A demo bank for the simulator: `flask --app wsgi bank-sim pay NUMBER` pays a notice."""
    from webhooks.models import BankClient
    from webhooks.service import create_bank

    with unit_of_work() as session:
        if session.scalar(select(BankClient.id).where(BankClient.code == "DEMO-BANK")) is not None:
            line = "演示银行 DEMO-BANK 已登记（密钥不再显示；模拟器从本机数据库读取）。"
        else:
            secret = create_bank(session, key, actor, "DEMO-BANK", "演示银行")
            line = f"演示银行 DEMO-BANK 的回调签名密钥：{secret}"
    return [line, f"银行模拟器：.venv/bin/flask --app wsgi bank-sim pay <通知书编号> --url {base}"
                  f"   （批量：bank-sim load --count 100 --url {base}）"]
