"""What the lifecycle machine runs against: one app and database reset cheaply per hypothesis
example, a fake clock, seeded staff and bank, a signing bank, and camt.053 statements.

The pytest DB fixture prepares a database per *test*; hypothesis runs many examples in one
test, so each example resets the database itself: on SQLite by copying a seeded file over the
app's (the engine's pool is disposed first), on PostgreSQL by the fixtures' own TRUNCATE and a
fresh seed (a few hundred milliseconds each).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url
from standardwebhooks import Webhook

from core.audit import Actor
from core.db import Database
from core.models import User
from tests.conftest import AUDIT_KEY, DEMO_FEES, PASSWORD, _truncate_all, make_test_app

TZ = "Asia/Shanghai"
BANK = "MBANK"
# A fixed start, so that a replayed seed replays the same days (never the wall clock).
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC) - timedelta(hours=8)  # 09:00 in Shanghai, a Monday

# key → (username, role, department)
USERS = {
    "window_BDC": ("m-window-bdc", "window", "BDC"),
    "window_GA": ("m-window-ga", "window", "GA"),
    "window_CG": ("m-window-cg", "window", "CG"),
    "cashier_1": ("m-cashier-1", "cashier", None),
    "cashier_2": ("m-cashier-2", "cashier", None),
    "finance": ("m-finance", "finance", None),
}
API_USERS = ("cashier_1", "cashier_2", "finance", "window_BDC", "window_GA", "window_CG")


class FakeClock:
    """What core.clock.utcnow() answers while the machine runs: moved only by the machine."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def today(self) -> date:
        from core.clock import business_date

        return business_date(self.now, TZ)


def install_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """core.clock.utcnow() is the one source of 'now' (models' defaults and services call it; it
    calls core.clock.datetime.now): replacing that name there moves every one of them."""
    import core.clock

    class _Clocked(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return clock.now.astimezone(tz) if tz is not None else clock.now.replace(tzinfo=None)

    monkeypatch.setattr(core.clock, "datetime", _Clocked)


@dataclass
class Seeded:
    tokens: dict[str, str]
    user_ids: dict[str, int]
    bank_secret: str


def seed(db: Database) -> Seeded:
    from core.users import create_token, create_user
    from fees.service import import_fee_schedule
    from webhooks.service import create_bank

    actor = Actor.system("lifecycle machine")
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    with db.unit_of_work() as session:
        import_fee_schedule(session, AUDIT_KEY, actor, DEMO_FEES.read_bytes())
        for key, (username, role, department) in USERS.items():
            user, _password = create_user(session, AUDIT_KEY, actor, username=username, role=role,
                                          department_code=department, password=PASSWORD)
            session.flush()
            ids[key] = user.id
            if key in API_USERS:
                tokens[key] = create_token(session, AUDIT_KEY, actor, username=username)
        secret = create_bank(session, AUDIT_KEY, actor, BANK, "状态机测试银行")
    return Seeded(tokens=tokens, user_ids=ids, bank_secret=secret)


class World:
    """One app for the whole test; `reset()` gives each example an empty, seeded database."""

    def __init__(self, url: str, scratch: Path) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql")
        # The token cache would outlive a reset of the tables.
        self.app: Flask = make_test_app(url, FEESVC_TOKEN_CACHE_SECONDS=0)
        self.db: Database = self.app.extensions["db"]
        self.template: Path | None = None
        self.seeded: Seeded | None = None
        if not self.postgres:
            self.file = Path(make_url(url).database or "")
            self.db.engine.dispose()
            self.template = scratch / "lifecycle-seeded.sqlite3"
            self.seeded = seed(self.db)
            self.db.engine.dispose()
            shutil.copyfile(self.file, self.template)

    def reset(self) -> Seeded:
        if self.postgres:
            self.db.engine.dispose()
            _truncate_all(self.url)
            self.seeded = seed(self.db)
            return self.seeded
        assert self.template is not None and self.seeded is not None
        self.db.engine.dispose()
        for suffix in ("-wal", "-shm"):
            extra = Path(f"{self.file}{suffix}")
            if extra.exists():
                os.remove(extra)
        shutil.copyfile(self.template, self.file)
        return self.seeded

    def user(self, session: Any, key: str) -> User:
        assert self.seeded is not None
        user = session.get(User, self.seeded.user_ids[key])
        assert user is not None
        return user

    def close(self) -> None:
        self.db.engine.dispose()


# --- the bank's side -----------------------------------------------------------------------

def callback_body(notice_number: str, amount: int, reference: str, paid_at: datetime) -> bytes:
    return json.dumps({
        "type": "payment.succeeded", "timestamp": paid_at.isoformat(timespec="seconds"),
        "data": {"notice_number": notice_number, "amount": amount, "currency": "CNY",
                 "paid_at": paid_at.isoformat(timespec="seconds"), "bank_reference": reference,
                 "payer_name": "缴款人", "payer_account": "6222********0000"},
    }, ensure_ascii=False).encode()


def signed_headers(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    """Signed at the real time: the signature's ±300 s window is judged by standardwebhooks
    against the wall clock, not against the machine's fake clock (which only dates the money)."""
    moment = datetime.now(UTC)
    return {"content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, moment, body.decode())}


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass(frozen=True)
class Entry:
    """One statement line as the bank books it."""

    reference: str
    amount: int
    booked: date
    notice_number: str | None = None
    direction: str = "CRDT"
    reversal: bool = False


def camt(entries: list[Entry], day: date, statement_id: str) -> bytes:
    """A camt.053.001.08 statement for one day (FrToDt says which day it covers, also when
    every line of it was left out)."""
    rows = []
    for e in entries:
        remittance = f"<RmtInf><Strd><CdtrRefInf><Ref>{e.notice_number}</Ref></CdtrRefInf></Strd></RmtInf>" \
            if e.notice_number else ""
        rows.append(
            f"<Ntry><Amt Ccy=\"CNY\">{yuan(e.amount)}</Amt><CdtDbtInd>{e.direction}</CdtDbtInd>"
            f"{'<RvslInd>true</RvslInd>' if e.reversal else ''}<Sts><Cd>BOOK</Cd></Sts>"
            f"<BookgDt><Dt>{e.booked}</Dt></BookgDt><AcctSvcrRef>{e.reference}</AcctSvcrRef>"
            f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>{e.reference}</AcctSvcrRef></Refs>"
            f"<Amt Ccy=\"CNY\">{yuan(e.amount)}</Amt><CdtDbtInd>{e.direction}</CdtDbtInd>"
            f"{remittance}</TxDtls></NtryDtls></Ntry>")
    return (f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
<GrpHdr><MsgId>{statement_id}</MsgId><CreDtTm>{day}T23:50:00+08:00</CreDtTm></GrpHdr>
<Stmt><Id>{statement_id}</Id><CreDtTm>{day}T23:50:00+08:00</CreDtTm>
<FrToDt><FrDtTm>{day}T00:00:00+08:00</FrDtTm><ToDtTm>{day}T23:59:59+08:00</ToDtTm></FrToDt>
<Acct><Id><Othr><Id>1202021309900001234</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
{''.join(rows)}
</Stmt></BkToCstmrStmt></Document>""").encode()
