"""Hebrew text said right (server/voice/speech_text.py): the reviewed phrases of docs/hebrew_speech.md,
each written form → the words the voice is given, and the edges of the rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.voice.speech_text import NOUNS, clock_time, count, price, spoken_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "hebrew_speech.md"


def reviewed_phrases() -> list[tuple[str, str]]:
    """The rows of the doc's "reviewed phrases" table."""
    section = DOC.read_text(encoding="utf-8").split("## The reviewed phrases", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("Written", "---"):
            rows.append((cells[0], cells[1]))
    return rows


PHRASES = reviewed_phrases()


def test_the_doc_reviews_at_least_forty_phrases():
    assert len(PHRASES) >= 40
    assert len({written for written, _ in PHRASES}) == len(PHRASES)


@pytest.mark.parametrize("written, spoken", PHRASES, ids=[f"row{i}" for i in range(len(PHRASES))])
def test_a_reviewed_phrase_is_said_as_reviewed(written, spoken):
    assert spoken_text(written) == spoken


def test_what_is_said_has_no_digits_or_signs_left():
    for written, _ in PHRASES:
        said = spoken_text(written)
        assert not re.search(r"[\d₪%]", said), (written, said)


def test_text_without_numbers_is_left_alone():
    for text in ("", "שלום", "סליחה, הייתה לי תקלה קטנה. אפשר לחזור על זה?", "Hello, world!"):
        assert spoken_text(text) == text


def test_spoken_text_is_idempotent():
    for written, _ in PHRASES:
        once = spoken_text(written)
        assert spoken_text(once) == once


@pytest.mark.parametrize(
    "hour, minute, said",
    [
        (0, 0, "חצות"),
        (1, 0, "אחת"),
        (12, 30, "שתים עשרה וחצי"),
        (13, 15, "אחת ורבע"),
        (23, 45, "רבע לשתים עשרה"),
        (11, 45, "רבע לשתים עשרה"),
        (12, 45, "רבע לאחת"),
        (18, 59, "שש וחמישים ותשע"),
    ],
)
def test_clock_times(hour, minute, said):
    assert clock_time(hour, minute) == said


@pytest.mark.parametrize(
    "amount, said",
    [
        ("0", "אפס שקלים"),
        ("0.01", "אגורה אחת"),
        ("0.02", "שתי אגורות"),
        ("1.01", "שקל אחד ואגורה אחת"),
        ("2.5", "שני שקלים וחמישים אגורות"),
        ("1000000", "מיליון שקלים"),
    ],
)
def test_prices(amount, said):
    assert price(amount) == said


def test_every_noun_agrees_with_its_number():
    for noun in {id(n): n for n in NOUNS.values()}.values():
        feminine = noun.gender == "f"
        assert count(1, noun).endswith("אחת" if feminine else "אחד")
        assert count(3, noun).startswith("שלוש " if feminine else "שלושה ")
        assert count(2, noun) == noun.dual or count(2, noun).startswith("שתי " if feminine else "שני ")


@pytest.mark.parametrize(
    "written",
    [
        "31/13",  # no such month: left for the number rules, not a date
        "99:99",
        "12.3.4.5",
        "1/0",
        "A4",
    ],
)
def test_what_is_no_date_or_time_is_still_said_without_digits(written):
    said = spoken_text(written)
    assert not re.search(r"\d", said)
    assert "במרץ" not in said


def test_a_long_reply_keeps_its_words_and_order():
    reply = "מעולה! קבעתי לך תור ל-12/3 ב-14:30, המחיר ₪49.90. לשאלות: 050-123-4567."
    assert spoken_text(reply) == (
        "מעולה! קבעתי לך תור לשנים עשר במרץ בשתיים וחצי, המחיר ארבעים ותשעה שקלים ותשעים אגורות. "
        "לשאלות: אפס חמש אפס, אחת שתיים שלוש, ארבע חמש שש שבע."
    )
