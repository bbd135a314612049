"""Time: stored in UTC, shown and judged in the service's time zone (FEESVC_TIMEZONE)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def utcnow() -> datetime:
    return datetime.now(UTC)


def local(moment: datetime, tz_name: str) -> datetime:
    return moment.astimezone(zone(tz_name))


def business_date(moment: datetime, tz_name: str) -> date:
    """The calendar date of a moment in the service's time zone."""
    return local(moment, tz_name).date()


def today(tz_name: str) -> date:
    return business_date(utcnow(), tz_name)


def rfc3339(moment: datetime, tz_name: str) -> str:
    return local(moment, tz_name).isoformat(timespec="seconds")
