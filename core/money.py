"""Money is integer fen everywhere; yuan appear only at the edges (display, bank files)."""

from __future__ import annotations

import re

MAX_AMOUNT = 10**12  # API.md: amounts are integers 0..10^12 fen

_YUAN = re.compile(r"(?P<sign>[+-]?)(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<cents>[0-9]{1,2}))?",
                   re.ASCII)
_MORE_DECIMALS = re.compile(r"[+-]?[0-9,]+\.[0-9]{3,}", re.ASCII)
_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_PLACES = ("", "拾", "佰", "仟")


def format_yuan(fen: int, *, grouping: bool = True) -> str:
    """12345 → '123.45' (with thousands separators by default)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    whole_text = f"{whole:,}" if grouping else str(whole)
    return f"{sign}{whole_text}.{cents:02d}"


def yuan_to_fen(text: str) -> int:
    """'52', '52.5', '52.50', '1,052.50' → fen; anything else raises ValueError.

    Only ASCII digits with at most two decimals (thousands separators allowed in their places),
    optionally signed: no exponents ('1e3'), underscores, full-width or other Unicode digits,
    NaN or Infinity, and no third decimal even when it is zero ('52.500').
    """
    match = _YUAN.fullmatch(text.strip())
    if not match:
        if _MORE_DECIMALS.fullmatch(text.strip()):
            raise ValueError(f"more than two decimals: {text!r}")
        raise ValueError(f"not an amount: {text!r}")
    sign, whole, cents = match.group("sign"), match.group("whole").replace(",", ""), match.group("cents") or ""
    fen = int(whole) * 100 + int(cents.ljust(2, "0"))
    return -fen if sign == "-" else fen


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
    """0 < n → its capitals in units of 万 and 亿 (10^12 is 壹万亿, 10^12 + 10^8 壹万零壹亿).

    A 零 stands for any run of zeros between two non-zero digits, including a run that crosses
    a 万 or 亿 boundary (100,100 → 壹拾万零壹佰), and never at the end.
    """
    if n >= 10**8:
        high, low = divmod(n, 10**8)
        text = _integer_capitals(high) + "亿"
        if low:
            text += ("零" if low < 10**7 else "") + _integer_capitals(low)
        return text
    if n >= 10**4:
        high, low = divmod(n, 10**4)
        text = _group_capitals(high) + "万"
        if low:
            text += ("零" if low < 1000 else "") + _group_capitals(low)
        return text
    return _group_capitals(n)


def chinese_capitals(fen: int) -> str:
    """Amount in Chinese capitals as written on financial documents: 5200 → 伍拾贰元整.

    Follows 《支付结算办法》附件一《正确填写票据和结算凭证的基本规定》: 整 after 元 when the
    amount ends there; after 角 the rules allow 整 or nothing, and we write 整; never 整 after 分.
    One 零 for a run of zeros inside the number (6,007.14 → 陆仟零柒元壹角肆分); 零 after 元
    when 角 is zero but 分 is not (325.04 → 叁佰贰拾伍元零肆分); where the 元 or 万 digit is zero
    but the next is not, the rules allow either form and we write none (1,680.32 →
    壹仟陆佰捌拾元叁角贰分). 壹拾 rather than 拾 at the head (10 → 壹拾元整).
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
