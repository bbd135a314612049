"""Money helpers: Chinese capitals on the printed notice, yuan shown and typed at the edges.

The capitals follow 《支付结算办法》附件一《正确填写票据和结算凭证的基本规定》; the rows marked
"rule example" are the examples printed in that text (where it allows two spellings, the one
this service writes).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import MAX_AMOUNT, chinese_capitals, format_yuan, yuan_to_fen

CAPITALS = [
    # (fen, capitals) — the amounts named in issue 2 first.
    (1, "壹分"),  # 0.01
    (10, "壹角整"),  # 0.10: after 角 the rules allow 整 or nothing; we write 整
    (100, "壹元整"),  # 1
    (1005, "壹拾元零伍分"),  # 10.05: 壹拾 at the head; 零 after 元 when 角 is 0 and 分 is not
    (10000, "壹佰元整"),  # 100
    (100050, "壹仟元伍角整"),  # 1,000.50
    (1000000, "壹万元整"),  # 10,000
    (100000009, "壹佰万元零玖分"),  # 1,000,000.09
    # Zero and the smallest amounts.
    (0, "零元整"),  # 0.00
    (5, "伍分"),  # no 零 before 分 when there are no yuan
    (50, "伍角整"),
    (55, "伍角伍分"),
    # 壹拾 at the head, and 拾 elsewhere.
    (1000, "壹拾元整"),
    (1100, "壹拾壹元整"),
    (11000, "壹佰壹拾元整"),
    (8000, "捌拾元整"),  # API.md's example
    (5200, "伍拾贰元整"),  # issue 2's example
    # Zeros in the middle: one 零 for a run, none at the end.
    (101000, "壹仟零壹拾元整"),  # 1,010
    (140950, "壹仟肆佰零玖元伍角整"),  # 1,409.50 (rule example)
    (600714, "陆仟零柒元壹角肆分"),  # 6,007.14 (rule example)
    (168032, "壹仟陆佰捌拾元叁角贰分"),  # 1,680.32 (rule example; 元 digit 0, no 零 needed)
    (1640902, "壹万陆仟肆佰零玖元零贰分"),  # 16,409.02 (rule example)
    (32504, "叁佰贰拾伍元零肆分"),  # 325.04 (rule example)
    (10700053, "壹拾万柒仟元伍角叁分"),  # 107,000.53 (rule example)
    (1001000, "壹万零壹拾元整"),  # 10,010
    (10010000, "壹拾万零壹佰元整"),  # 100,100: the run of zeros crosses the 万 boundary
    (10000001, "壹拾万元零壹分"),  # 100,000.01
    (10000010, "壹拾万元壹角整"),  # 100,000.10
    (100000100, "壹佰万零壹元整"),  # 1,000,001
    (1000000000, "壹仟万元整"),  # 10,000,000
    (1000001000, "壹仟万零壹拾元整"),  # 10,000,010
    # 亿
    (10000000000, "壹亿元整"),  # 100,000,000
    (10000000100, "壹亿零壹元整"),  # 100,000,001
    (10000100000, "壹亿零壹仟元整"),  # 100,001,000
    (10010000000, "壹亿零壹拾万元整"),  # 100,100,000
    (11000000000, "壹亿壹仟万元整"),  # 110,000,000
    (45309242000, "肆亿伍仟叁佰零玖万贰仟肆佰贰拾元整"),  # 453,092,420
    (MAX_AMOUNT, "壹佰亿元整"),  # the largest amount the API accepts: 10,000,000,000
    (MAX_AMOUNT - 1, "玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
    (1000000050000, "壹佰亿零伍佰元整"),
    # Beyond the API's range the 亿 unit still nests correctly (not 壹万亿零壹亿).
    (10**14, "壹万亿元整"),
    (10**14 + 10**10, "壹万零壹亿元整"),
    (10**16 - 1, "玖拾玖万玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
]


@pytest.mark.parametrize(("fen", "expected"), CAPITALS, ids=[format_yuan(fen) for fen, _ in CAPITALS])
def test_chinese_capitals_follow_the_payment_settlement_rules(fen: int, expected: str) -> None:
    assert chinese_capitals(fen) == expected


@pytest.mark.parametrize("fen", [-1, -100, 10**16])
def test_chinese_capitals_refuse_negative_and_absurd_amounts(fen: int) -> None:
    with pytest.raises(ValueError):
        chinese_capitals(fen)


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_chinese_capitals_always_end_in_zheng_or_fen(fen: int) -> None:
    text = chinese_capitals(fen)
    assert text.endswith(("整", "分"))
    assert text.endswith("整") == (fen % 10 == 0)  # 整 exactly when there is no 分
    assert "零零" not in text
    assert not text.startswith("零") or fen == 0
    assert ("元" in text) == (fen >= 100 or fen == 0)
    assert set(text) <= set("零壹贰叁肆伍陆柒捌玖拾佰仟万亿元角分整")


def _parse_capitals(text: str) -> int:
    """An independent reading of capitals back into fen, to check the spelling adds up."""
    digits = {c: i for i, c in enumerate("零壹贰叁肆伍陆柒捌玖")}
    small = {"拾": 10, "佰": 100, "仟": 1000}
    total = section = number = 0
    yuan = 0
    fen = 0
    for char in text:
        if char in digits:
            number = digits[char]
        elif char in small:
            section += number * small[char]
            number = 0
        elif char == "万":
            total += (section + number) * 10**4
            section = number = 0
        elif char == "亿":
            total = (total + section + number) * 10**8
            section = number = 0
        elif char == "元":
            yuan = total + section + number
            total = section = number = 0
        elif char == "角":
            fen += number * 10
            number = 0
        elif char == "分":
            fen += number
            number = 0
    return yuan * 100 + fen


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_chinese_capitals_read_back_to_the_same_amount(fen: int) -> None:
    assert _parse_capitals(chinese_capitals(fen)) == fen


@pytest.mark.parametrize(
    ("fen", "grouped", "plain"),
    [
        (0, "0.00", "0.00"),
        (1, "0.01", "0.01"),
        (10, "0.10", "0.10"),
        (5250, "52.50", "52.50"),
        (100050, "1,000.50", "1000.50"),
        (100000009, "1,000,000.09", "1000000.09"),
        (MAX_AMOUNT, "10,000,000,000.00", "10000000000.00"),
        (-5250, "-52.50", "-52.50"),
        (-1, "-0.01", "-0.01"),
    ],
)
def test_format_yuan(fen: int, grouped: str, plain: str) -> None:
    assert format_yuan(fen) == grouped
    assert format_yuan(fen, grouping=False) == plain


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("52", 5200),
        ("52.5", 5250),
        ("52.50", 5250),
        ("0.01", 1),
        ("0", 0),
        ("0.00", 0),
        (" 80 ", 8000),
        ("1,000.50", 100050),
        ("10,000,000,000.00", MAX_AMOUNT),
        ("-3.10", -310),
    ],
)
def test_yuan_to_fen_accepts_yuan_with_up_to_two_decimals(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "1.234",  # three decimals
        "52.500",  # a third decimal, even a zero
        "0.001",
        "abc",
        "",
        "  ",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e3",  # exponent
        "1E+2",
        "5_000",  # Python's digit separator
        "１２",  # full-width digits
        "१२",  # Devanagari digits
        "1,00",  # separator out of place
        "12,34.5",
        ".5",
        "5.",
        "¥52",
        "52元",
        "1e999999999",  # would overflow Decimal arithmetic rather than raise ValueError
    ],
)
def test_yuan_to_fen_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(text)


@given(st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_yuan_to_fen_reads_what_format_yuan_writes(fen: int) -> None:
    assert yuan_to_fen(format_yuan(fen)) == fen
    assert yuan_to_fen(format_yuan(fen, grouping=False)) == fen
