"""One set of money rules for documents and payment links (`server.money`), no database needed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from server import money
from server.errors import DomainError, Problem

CAP = money.MAX_AMOUNT_MINOR  # 1,000,000,000.00


@pytest.mark.parametrize(
    "amount, minor",
    [
        ("0.1", 10),
        ("0.01", 1),
        ("49.90", 4990),
        ("49.9", 4990),
        ("10", 1000),
        ("10.000", 1000),
        (" 12.5 ", 1250),
        ("007", 700),
        (7, 700),
        ("999999999.99", CAP - 1),
        ("1000000000", CAP),
        ("1000000000.00", CAP),
        (10**9, CAP),
        ("1000000.01", 100_000_001),
    ],
)
def test_amounts_convert_exactly(amount, minor):
    assert money.parse_amount(amount) == minor


@pytest.mark.parametrize(
    "amount",
    [
        "10.005",
        "0.001",
        "1.0000000000000000000000000001",
        "abc",
        "",
        " ",
        "-1",
        "-0.01",
        "-0",
        -5,
        "1,5",
        "1_000",
        "0x10",
        ".5",
        "5.",
        "1e3",
        "1E3",
        "NaN",
        "Infinity",
        "-Infinity",
        "٤٩",
        "1000000000.01",
        "1" * 41,
        "9" * 5000,
        10**9 + 1,
        10**20,
        "0e999999",
        True,
        None,
        [1],
        {"v": 1},
        # JSON fractions are binary floats: refused even when they look exact.
        49.9,
        0.1,
        1e3,
        7.0,
        float("nan"),
        float("inf"),
    ],
)
def test_bad_amounts_are_refused_naming_the_field(amount):
    with pytest.raises(DomainError) as refused:
        money.parse_amount(amount, "price")
    error = refused.value
    assert (error.problem, error.code, error.field) == (Problem.INVALID, "invalid_field", "price")
    assert error.message.startswith(("price ", "send price "))


def test_zero_is_refused_unless_the_amount_may_be_empty():
    for zero in ("0", "0.00", 0):
        with pytest.raises(DomainError) as refused:
            money.parse_amount(zero)
        assert refused.value.message == "amount must be greater than zero"
        assert money.parse_amount(zero, allow_zero=True) == 0
    with pytest.raises(DomainError):
        money.parse_minor(0)
    assert money.parse_minor(0, allow_zero=True) == 0


@pytest.mark.parametrize("value", [-1, CAP + 1, 1.5, "100", True, None])
def test_bad_minor_units_are_refused(value):
    with pytest.raises(DomainError) as refused:
        money.parse_minor(value, allow_zero=True)
    assert (refused.value.code, refused.value.field) == ("invalid_field", "amount_minor")


def test_minor_units_up_to_the_cap():
    assert money.parse_minor(1) == 1 and money.parse_minor(CAP) == CAP
    assert CAP < 2**53  # a client reading amount_minor as a double still reads it exactly


def test_currencies_are_exact_codes():
    assert [money.currency(code) for code in ("ILS", "USD", "EUR", "GBP")] == ["ILS", "USD", "EUR", "GBP"]
    for bad in ("ils", "NIS", " ILS", 376, None):
        with pytest.raises(DomainError) as refused:
            money.currency(bad)
        assert refused.value.field == "currency"


def test_display_forms():
    assert [money.major_text(v) for v in (0, 5, 4990, 100000, CAP)] == [
        "0.00",
        "0.05",
        "49.90",
        "1000.00",
        "1000000000.00",
    ]
    assert money.to_major(4990) == Decimal("49.90") and str(money.to_major(5)) == "0.05"
    assert money.display(4990, "ILS") == "49.90 ₪" and money.display(100, "USD") == "1.00 $"


@pytest.mark.parametrize(
    "value, minor",
    [
        ("49.90", 4990),
        ("49.9", 4990),
        (49.9, 4990),
        (Decimal("49.90"), 4990),
        ("0", 0),
        (12, 1200),
        ("4.999", None),
        ("abc", None),
        ("-1", None),
        (None, None),
        (True, None),
        (1e22, None),
        ("9" * 5000, None),
    ],
)
def test_provider_amounts_are_read_for_comparison_only(value, minor):
    assert money.from_provider(value) == minor
