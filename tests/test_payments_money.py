"""Money at the boundary, and the state machine's shape (no database needed)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from server.payments.money import InvalidAmount, check_minor, display, major_text, minor_from_provider, minor_from_text
from server.payments.states import FINAL, NEXT, sources_of
from server.providers.tranzila import _json


@pytest.mark.parametrize("text, minor", [("49.90", 4990), ("0.1", 10), ("0.01", 1), ("7", 700),
                                         ("1000000.00", 100000000), (" 12.5 ", 1250), ("10.000", 1000)])
def test_decimal_text_to_agorot(text, minor):
    assert minor_from_text(text) == minor


@pytest.mark.parametrize("text", ["10.005", "-1", "1e3", "abc", "", "1,5", "NaN", "1_000", "0x10", ".5"])
def test_malformed_amounts_are_refused(text):
    with pytest.raises(InvalidAmount):
        minor_from_text(text)


def test_minor_units_checks_and_display():
    assert check_minor(4990) == 4990
    for bad in (0, -1, True, 1.5, "10", 10**9):
        with pytest.raises(InvalidAmount):
            check_minor(bad)
    assert major_text(4990) == "49.90" and major_text(5) == "0.05" and major_text(100) == "1.00"
    assert display(4990, "ILS") == "49.90 ₪"
    assert minor_from_provider("49.90") == 4990 and minor_from_provider(None) is None
    assert minor_from_provider("4.999") is None


def test_tranzila_json_writes_decimals_as_exact_numbers():
    assert _json({"sum": Decimal("49.90"), "items": [{"n": "שם", "p": Decimal("0.10")}], "x": None}) == \
        '{"sum":49.90,"items":[{"n":"שם","p":0.10}],"x":null}'


def test_the_state_machine_only_goes_forward():
    assert sources_of("pending") == ["created"]
    assert sources_of("paid") == ["pending"]
    assert sources_of("refunded") == ["paid"]
    assert sorted(sources_of("expired")) == ["created", "pending"]
    assert all(state not in NEXT for state in FINAL)
    order = ["created", "pending", "paid", "refunded"]
    for source, targets in NEXT.items():
        for target in targets:
            assert target not in order or order.index(target) > order.index(source)
