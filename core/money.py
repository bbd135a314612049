"""Money is integer fen everywhere; yuan appear only at the edges (display, bank files)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MAX_AMOUNT = 10**12  # API.md: amounts are integers 0..10^12 fen

_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_PLACES = ("", "拾", "佰", "仟")
_GROUPS = ("", "万", "亿", "万亿")


def format_yuan(fen: int, *, grouping: bool = True) -> str:
    """12345 → '123.45' (with thousands separators by default)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    whole_text = f"{whole:,}" if grouping else str(whole)
    return f"{sign}{whole_text}.{cents:02d}"


def yuan_to_fen(text: str) -> int:
    """'52', '52.5', '52.50' → 5250; more than two decimals or anything else raises ValueError."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {text!r}")
    fen = value * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"more than two decimals: {text!r}")
    return int(fen)


def _group_capitals(group: int) -> str:
    """0 < group < 10000 → its capitals, zeros inside collapsed to one 零, none at the end."""
    text = ""
    pending_zero = False
    for place in range(3, -1, -1):
        digit = group // 10**place % 10
        if digit == 0:
            pending_zero = bool(text)
            continue
        if pending_zero:
            text += "零"
            pending_zero = False
        text += _DIGITS[digit] + _PLACES[place]
    return text


def _integer_capitals(n: int) -> str:
    groups: list[int] = []
    while n:
        n, group = divmod(n, 10000)
        groups.append(group)
    text = ""
    zero_between = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            zero_between = bool(text)
            continue
        if text and (zero_between or group < 1000):
            text += "零"
        text += _group_capitals(group) + _GROUPS[index]
        zero_between = False
    return text


def chinese_capitals(fen: int) -> str:
    """Amount in Chinese capitals as written on financial documents: 5200 → 伍拾贰元整.

    Follows the rules of 《支付结算办法》附件: 整 after 元 or 角 when there are no 分; a 零
    after 元 when 角 is zero but 分 is not; 壹拾 rather than 拾 at the head.
    """
    if fen < 0:
        raise ValueError("negative amount")
    if fen >= 10**16:
        raise ValueError("amount too large")
    yuan, cents = divmod(fen, 100)
    jiao, fen_digit = divmod(cents, 10)
    if yuan == 0 and cents == 0:
        return "零元整"
    text = ""
    if yuan:
        text = _integer_capitals(yuan) + "元"
    if cents == 0:
        return text + "整"
    if jiao:
        text += _DIGITS[jiao] + "角"
    elif yuan:
        text += "零"
    if fen_digit:
        return text + _DIGITS[fen_digit] + "分"
    return text + "整"
