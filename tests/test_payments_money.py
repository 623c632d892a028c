"""Money at the provider boundary, and the state machine's shape (no database needed). The rules for
amounts clients send are in `tests/test_money.py`."""

from __future__ import annotations

from decimal import Decimal

from server.payments.states import FINAL, NEXT, STATUSES, sources_of
from server.providers.tranzila import _json


def test_tranzila_json_writes_decimals_as_exact_numbers():
    assert (
        _json({"sum": Decimal("49.90"), "items": [{"n": "שם", "p": Decimal("0.10")}], "x": None})
        == '{"sum":49.90,"items":[{"n":"שם","p":0.10}],"x":null}'
    )


def test_the_state_machine_only_goes_forward():
    assert sources_of("pending") == ["created"]
    assert sources_of("paid") == ["pending", "awaiting_confirm"]
    assert sources_of("awaiting_confirm") == ["pending"]
    assert sources_of("rejected") == ["awaiting_confirm"]
    assert sorted(sources_of("refund_required")) == ["awaiting_confirm", "expired", "failed", "pending"]
    assert sorted(sources_of("refunded")) == ["paid", "refund_required"]
    assert sorted(sources_of("expired")) == ["created", "pending"]
    assert all(state not in NEXT for state in FINAL)
    order = [
        "created",
        "pending",
        "awaiting_confirm",
        "expired",
        "failed",
        "paid",
        "refund_required",
        "refunded",
        "rejected",
    ]
    assert sorted(order) == sorted(STATUSES)
    for source, targets in NEXT.items():
        for target in targets:
            assert target not in order or order.index(target) > order.index(source)
