"""Check digits (ISO 7064 MOD 97-10): every generated number validates; every single-digit
substitution and every adjacent transposition of a valid number is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notices.numbers import (
    InvalidNoticeNumber,
    compose_notice_number,
    group_digits,
    is_valid_notice_number,
    normalise_notice_number,
)

regions = st.from_regex(r"[0-9]{6}", fullmatch=True)
years = st.integers(min_value=2000, max_value=2099)
serials = st.integers(min_value=1, max_value=10**10 - 1)


def test_the_example_of_api_md() -> None:
    assert compose_notice_number("990001", 2026, 1) == "99000126000000000119"
    assert int("99000126000000000119") % 97 == 1


@given(regions, years, serials)
def test_every_generated_number_validates(region: str, year: int, serial: int) -> None:
    number = compose_notice_number(region, year, serial)
    assert len(number) == 20 and number.isdigit()
    assert number[:6] == region and number[6:8] == f"{year % 100:02d}" and int(number[8:18]) == serial
    assert int(number) % 97 == 1
    assert normalise_notice_number(number) == number
    assert normalise_notice_number(group_digits(number)) == number


@given(regions, years, serials, st.integers(min_value=0, max_value=19), st.integers(min_value=1, max_value=9))
def test_every_single_digit_substitution_is_rejected(region: str, year: int, serial: int, position: int,
                                                      shift: int) -> None:
    number = compose_notice_number(region, year, serial)
    wrong_digit = str((int(number[position]) + shift) % 10)
    mistyped = number[:position] + wrong_digit + number[position + 1:]
    assert not is_valid_notice_number(mistyped)


@given(regions, years, serials, st.integers(min_value=0, max_value=18))
def test_every_adjacent_transposition_is_rejected(region: str, year: int, serial: int, position: int) -> None:
    number = compose_notice_number(region, year, serial)
    swapped = number[:position] + number[position + 1] + number[position] + number[position + 2:]
    if swapped == number:  # two equal digits: nothing was mistyped
        return
    assert not is_valid_notice_number(swapped)


def test_exhaustive_single_errors_of_one_number() -> None:
    number = compose_notice_number("990001", 2026, 1234567)
    for position in range(20):
        for digit in "0123456789":
            candidate = number[:position] + digit + number[position + 1:]
            assert is_valid_notice_number(candidate) == (candidate == number)


@pytest.mark.parametrize("text", ["", "1234", "9900012600000000011", "990001260000000001190",
                                  "9900012600000000011a", "٩٩٠٠٠١٢٦٠٠٠٠٠٠٠٠٠١١٩", "99000126000000000118"])
def test_malformed_numbers_are_invalid_not_unknown(text: str) -> None:
    with pytest.raises(InvalidNoticeNumber):
        normalise_notice_number(text)


def test_spaces_are_accepted_as_people_write_them() -> None:
    assert normalise_notice_number(" 9900 0126 0000 0000 0119\n") == "99000126000000000119"
    assert group_digits("99000126000000000119") == "9900 0126 0000 0000 0119"
