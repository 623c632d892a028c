"""Hebrew text said right: digits and signs in a reply become the words a Hebrew speaker says.

Google's Hebrew voices read "₪49.90" or "14:30" digit by digit, in the wrong gender, or not at
all, so every text goes through `spoken_text()` before it is synthesised (`server.voice.turns.synthesize`,
the one funnel of the live call and of the fixed prompts). Numbers become words with `num2words`
(`lang="he"`: cardinals in both genders, construct forms, ordinals); the rules around it (which
gender a count takes, prices, times, dates, phone numbers) are ours. The reviewed examples are in
docs/hebrew_speech.md; the choices, in short:

* Times are said as people say them on the phone, on a 12-hour clock: "14:30" → "שתיים וחצי",
  "09:15" → "תשע ורבע", "16:45" → "רבע לחמש", "10:20" → "עשר ועשרים"; "00:00" is "חצות". A range
  "9:00-18:00" is "תשע עד שש".
* Dates are day first, as written in Israel: "12/3" and "12.3.2026" → "שנים עשר במרץ (אלפיים
  עשרים ושש)". A "12.3" without a year is a decimal number, not a date.
* Prices: shekels are masculine, agorot feminine: "₪49.90" → "ארבעים ותשעה שקלים ותשעים אגורות",
  "1 ש"ח" → "שקל אחד", "2 ש"ח" → "שני שקלים".
* Phone numbers are read digit by digit, in their groups: "050-123-4567" → "אפס חמש אפס, אחת
  שתיים שלוש, ארבע חמש שש שבע".
* A number before a known noun agrees with it ("3 תורים" → "שלושה תורים", "3 שעות" → "שלוש
  שעות"), with the dual where Hebrew has one ("2 שעות" → "שעתיים"). A bare number is said in the
  counting form (feminine): "חדר 5" → "חדר חמש".
* "ה-" before a number after a known noun is an ordinal ("בפעם ה-2" → "בפעם השנייה"), and before a
  day of the month up to ten too ("ה-1 לחודש" → "הראשון לחודש").
* A prefix glued to the number stays glued to its first word: "ב-14:30" → "בשתיים וחצי".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable, Optional

from num2words import num2words  # type: ignore[import-untyped]  # no type hints shipped

MASCULINE, FEMININE = "m", "f"

# Prefix letters written before a number ("ב-14:30", "ל3", "וה-5"): kept, glued to the first word.
_PREFIX = r"(?:(?P<pre>[ובכלמהש]{1,3})[-־]?)?"
# Digits that are not part of a longer number or word on their left.
_START = r"(?<![\w.,:/\-־+])"
_NOT_MORE_DIGITS = r"(?![\d])"
_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?"

MONTHS = (
    "ינואר",
    "פברואר",
    "מרץ",
    "אפריל",
    "מאי",
    "יוני",
    "יולי",
    "אוגוסט",
    "ספטמבר",
    "אוקטובר",
    "נובמבר",
    "דצמבר",
)

DIGITS = ("אפס", "אחת", "שתיים", "שלוש", "ארבע", "חמש", "שש", "שבע", "שמונה", "תשע")


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str
    gender: str
    dual: Optional[str] = None  # "שעתיים": two of it, said as one word


# Nouns a front desk counts. Each is found by its singular or plural form.
_NOUN_LIST = (
    Noun("תור", "תורים", MASCULINE),
    Noun("יום", "ימים", MASCULINE, "יומיים"),
    Noun("שבוע", "שבועות", MASCULINE, "שבועיים"),
    Noun("חודש", "חודשים", MASCULINE, "חודשיים"),
    Noun("שקל", "שקלים", MASCULINE),
    Noun("דולר", "דולרים", MASCULINE),
    Noun("אחוז", "אחוזים", MASCULINE),
    Noun("איש", "אנשים", MASCULINE),
    Noun("ילד", "ילדים", MASCULINE),
    Noun("טיפול", "טיפולים", MASCULINE),
    Noun("מקום", "מקומות", MASCULINE),
    Noun("חדר", "חדרים", MASCULINE),
    Noun("פריט", "פריטים", MASCULINE),
    Noun("מפגש", "מפגשים", MASCULINE),
    Noun("שיעור", "שיעורים", MASCULINE),
    Noun("לילה", "לילות", MASCULINE),
    Noun("רגע", "רגעים", MASCULINE),
    Noun("מטר", "מטרים", MASCULINE),
    Noun("קילומטר", "קילומטרים", MASCULINE),
    Noun("אורח", "אורחים", MASCULINE),
    Noun("סועד", "סועדים", MASCULINE),
    Noun("משתתף", "משתתפים", MASCULINE),
    Noun("כרטיס", "כרטיסים", MASCULINE),
    Noun("מוצר", "מוצרים", MASCULINE),
    Noun("שולחן", "שולחנות", MASCULINE),
    Noun("תשלום", "תשלומים", MASCULINE),
    Noun("שעה", "שעות", FEMININE, "שעתיים"),
    Noun("דקה", "דקות", FEMININE),
    Noun("שנייה", "שניות", FEMININE),
    Noun("שנה", "שנים", FEMININE, "שנתיים"),
    Noun("פעם", "פעמים", FEMININE, "פעמיים"),
    Noun("אגורה", "אגורות", FEMININE),
    Noun("פגישה", "פגישות", FEMININE),
    Noun("מנה", "מנות", FEMININE),
    Noun("קומה", "קומות", FEMININE),
    Noun("תספורת", "תספורות", FEMININE),
    Noun("הזמנה", "הזמנות", FEMININE),
    Noun("יחידה", "יחידות", FEMININE),
    Noun("אישה", "נשים", FEMININE),
    Noun("ילדה", "ילדות", FEMININE),
    Noun("חבילה", "חבילות", FEMININE),
    Noun("בדיקה", "בדיקות", FEMININE),
    Noun("שיחה", "שיחות", FEMININE),
    Noun("הודעה", "הודעות", FEMININE),
    Noun("משתתפת", "משתתפות", FEMININE),
)
NOUNS: dict[str, Noun] = {form: noun for noun in _NOUN_LIST for form in (noun.singular, noun.plural)}
_NOUN_WORDS = "|".join(sorted(NOUNS, key=len, reverse=True))


# ---- numbers as words ------------------------------------------------------------------------
def cardinal(value: int, gender: str = FEMININE) -> str:
    """`value` in words; feminine is the counting form a bare number is said in."""
    return str(num2words(value, lang="he", gender=gender))


def ordinal(value: int, gender: str = MASCULINE) -> str:
    return str(num2words(value, lang="he", to="ordinal", gender=gender))


def count(value: int, noun: Noun) -> str:
    """`value` of `noun`, in agreement: "תור אחד", "שני תורים", "שעתיים", "שלוש שעות"."""
    if value == 1:
        return f"{noun.singular} {cardinal(1, noun.gender)}"
    if value == 2:
        if noun.dual:
            return noun.dual
        return f"{'שני' if noun.gender == MASCULINE else 'שתי'} {noun.plural}"
    return f"{cardinal(value, noun.gender)} {noun.plural}"


def decimal_words(text: str, gender: str = FEMININE) -> str:
    """A number as written ("1,200", "2.5", "3.75") in words: ".5" is "וחצי", other fractions are
    read digit by digit after "נקודה"."""
    whole, _, fraction = text.replace(",", "").partition(".")
    words = cardinal(int(whole), gender)
    fraction = fraction.rstrip("0")
    if not fraction:
        return words
    if fraction == "5":
        return f"{words} וחצי"
    return f"{words} נקודה {' '.join(DIGITS[int(d)] for d in fraction)}"


def digits(text: str) -> str:
    return " ".join(DIGITS[int(d)] for d in text if d.isdigit())


def _glue(prefix: Optional[str], words: str) -> str:
    return (prefix or "") + words


# ---- the rules, in the order they apply ------------------------------------------------------
_PHONE = re.compile(
    _START
    + _PREFIX
    + r"(?P<number>(?:\+972[-\s]?|0)(?:5\d|7\d|[23489])[-\s]?\d{3}[-\s]?\d{4}|1[-\s]?[5789]00[-\s]?\d{2,3}[-\s]?\d{3})"
    + _NOT_MORE_DIGITS
)


def _phone(match: re.Match) -> str:
    """Digit by digit, in the groups an Israeli number is said in: area code, three, four."""
    written = match["number"]
    number = re.sub(r"[-\s]", "", written)
    if number.startswith("1"):  # 1-800-123-456: the groups as written
        parts = re.split(r"[-\s]+", written)
        return _glue(match["pre"], ", ".join(digits(part) for part in parts))
    groups = []
    if number.startswith("+972"):
        groups.append("פלוס " + digits("972"))
        number = number[4:]
        area = 2 if number[0] in "57" else 1
    else:
        area = 3 if number[1] in "57" else 2
    groups += [digits(number[:area]), digits(number[area:-4]), digits(number[-4:])]
    return _glue(match["pre"], ", ".join(groups))


_TIME = r"(?P<{h}>[01]?\d|2[0-3]):(?P<{m}>[0-5]\d)"
_TIMES = re.compile(
    _START
    + _PREFIX
    + _TIME.format(h="h1", m="m1")
    + r"(?:\s*[-–]\s*(?:עד\s*)?"
    + _TIME.format(h="h2", m="m2")
    + r")?"
    + _NOT_MORE_DIGITS
)


def clock_time(hour: int, minute: int) -> str:
    """A time as said on the phone, on a 12-hour clock (see the module's docstring)."""
    if hour == 0 and minute == 0:
        return "חצות"
    if minute == 45:
        return f"רבע ל{_hour_word(hour + 1)}"
    words = _hour_word(hour)
    if minute == 0:
        return words
    if minute == 15:
        return f"{words} ורבע"
    if minute == 30:
        return f"{words} וחצי"
    if minute == 10:
        return f"{words} ועשרה"
    if minute < 10:
        return f"{words} ו{cardinal(minute, FEMININE)} דקות"
    return f"{words} ו{cardinal(minute, FEMININE)}"


def _hour_word(hour: int) -> str:
    twelve = hour % 12 or 12
    return cardinal(twelve, FEMININE)


def _time(match: re.Match) -> str:
    words = clock_time(int(match["h1"]), int(match["m1"]))
    if match["h2"] is not None:
        words += " עד " + clock_time(int(match["h2"]), int(match["m2"]))
    return _glue(match["pre"], words)


_DATE = re.compile(
    _START
    + _PREFIX
    + r"(?P<d>\d{1,2})(?:(?P<sep>[./])(?P<m>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})|/(?P<m2>\d{1,2}))"
    + _NOT_MORE_DIGITS
)


def day_of_month(day: int, prefix: Optional[str]) -> str:
    """ "ה-1" is "הראשון" (an ordinal up to the tenth), "12" is "שנים עשר" (masculine: יום)."""
    if prefix and prefix.endswith("ה") and day <= 10:
        return _glue(prefix, ordinal(day, MASCULINE))
    return _glue(prefix, cardinal(day, MASCULINE))


def _date(match: re.Match) -> str:
    day, month = int(match["d"]), int(match["m"] or match["m2"])
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return match[0]
    words = f"{day_of_month(day, match['pre'])} ב{MONTHS[month - 1]}"
    if match["y"]:
        year = int(match["y"])
        words += " " + cardinal(year + 2000 if year < 100 else year, FEMININE)
    return words


_DAY_IN_MONTH = re.compile(
    _START + _PREFIX + r"(?P<d>\d{1,2})\s+(?P<rest>ב(?:" + "|".join(MONTHS) + r")|לחודש)(?![\w])"
)


def _day_in_month(match: re.Match) -> str:
    day = int(match["d"])
    if not 1 <= day <= 31:
        return match[0]
    return f"{day_of_month(day, match['pre'])} {match['rest']}"


_SHEKEL_WORDS = r"ש\"ח|ש״ח|שח|שקלים|שקל|NIS|ILS|₪"
_PRICE = re.compile(
    _START
    + _PREFIX
    + r"(?:(?:₪|NIS|ILS)\s?(?P<a1>"
    + _AMOUNT
    + r")|(?P<a2>"
    + _AMOUNT
    + r")\s?(?:"
    + _SHEKEL_WORDS
    + r"))(?![\w])"
)
_AGOROT = re.compile(_START + _PREFIX + r"(?P<n>\d+)\s?(?:אגורות|אגורה|אג')(?![\w])")


def price(amount: str) -> str:
    """An amount of shekels ("49.90") in words: "ארבעים ותשעה שקלים ותשעים אגורות"."""
    try:
        value = Decimal(amount.replace(",", ""))
    except InvalidOperation:
        return amount
    shekels = int(value)
    agorot = int((value - shekels) * 100)
    parts = []
    if shekels or not agorot:
        parts.append(count(shekels, NOUNS["שקל"]) if shekels else f"אפס {NOUNS['שקל'].plural}")
    if agorot:
        parts.append(count(agorot, NOUNS["אגורה"]))
    return " ו".join(parts)


def _price(match: re.Match) -> str:
    return _glue(match["pre"], price(match["a1"] or match["a2"]))


def _agorot(match: re.Match) -> str:
    return _glue(match["pre"], count(int(match["n"]), NOUNS["אגורה"]))


_PERCENT = re.compile(_START + _PREFIX + r"(?P<n>" + _AMOUNT + r")\s?%")


def _percent(match: re.Match) -> str:
    number = match["n"].replace(",", "")
    if number == "1":
        return _glue(match["pre"], "אחוז אחד")
    if number == "2":
        return _glue(match["pre"], "שני אחוז")
    return _glue(match["pre"], decimal_words(number, MASCULINE) + " אחוז")


_COUNT = re.compile(
    _START
    + _PREFIX
    + r"(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:\s*[-–]\s*(?P<n2>\d{1,3}(?:,\d{3})+|\d+))?\s+(?P<noun>"
    + _NOUN_WORDS
    + r")(?![\w])"
)


def _count(match: re.Match) -> str:
    noun = NOUNS[match["noun"]]
    first = int(match["n"].replace(",", ""))
    if match["n2"] is None:
        return _glue(match["pre"], count(first, noun))
    second = int(match["n2"].replace(",", ""))
    # "3-4 ימים": both numbers agree with the noun, which is said once, in the plural.
    return _glue(match["pre"], f"{cardinal(first, noun.gender)} עד {cardinal(second, noun.gender)} {noun.plural}")


_ORDINAL = re.compile(r"(?P<word>[\u05d0-\u05ea]+)\s+ה[-־](?P<n>\d{1,2})" + _NOT_MORE_DIGITS)


def _noun_of(word: str) -> Optional[Noun]:
    """The table's noun in `word`, which may carry prefix letters ("בפעם", "והקומה")."""
    for start in range(0, min(3, len(word) - 1) + 1):
        noun = NOUNS.get(word[start:])
        if noun is not None and (start == 0 or all(c in "ובכלמהש" for c in word[:start])):
            return noun
    return None


def _ordinal(match: re.Match) -> str:
    noun = _noun_of(match["word"])
    if noun is None:
        return match[0]
    value = int(match["n"])
    words = ordinal(value, noun.gender) if 1 <= value <= 10 else cardinal(value, noun.gender)
    return f"{match['word']} ה{words}"


_RANGE = re.compile(_START + _PREFIX + r"(?P<a>\d{1,4})\s*[-–]\s*(?P<b>\d{1,4})" + _NOT_MORE_DIGITS)


def _range(match: re.Match) -> str:
    return _glue(match["pre"], f"{cardinal(int(match['a']))} עד {cardinal(int(match['b']))}")


_NUMBER = re.compile(_START + _PREFIX + r"(?P<n>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)" + _NOT_MORE_DIGITS)
LONGEST_SAID_AS_A_NUMBER = 6  # digits; longer (or with a leading 0) is an id, read digit by digit


def _number(match: re.Match) -> str:
    number = match["n"]
    plain = number.replace(",", "")
    whole = plain.partition(".")[0]
    if "," not in number and (len(whole) > LONGEST_SAID_AS_A_NUMBER or (len(whole) > 1 and whole[0] == "0")):
        return _glue(match["pre"], digits(plain))
    return _glue(match["pre"], decimal_words(plain, FEMININE))


_ALWAYS = re.compile(_START + r"24/7" + _NOT_MORE_DIGITS)  # "open 24/7" is no date


_RULES: tuple[tuple[re.Pattern, Callable[[re.Match], str]], ...] = (
    (_ALWAYS, lambda _match: "עשרים וארבע שבע"),
    (_PHONE, _phone),
    (_DATE, _date),
    (_TIMES, _time),
    (_PRICE, _price),
    (_AGOROT, _agorot),
    (_PERCENT, _percent),
    (_DAY_IN_MONTH, _day_in_month),
    (_ORDINAL, _ordinal),
    (_COUNT, _count),
    (_RANGE, _range),
    (_NUMBER, _number),
    # Digits in odd company ("31/13", "12.3.4.5", "A4") still become words, never "digit one digit three".
    (
        re.compile(r"(?P<pre>(?<=[^\W\d_]))?(?P<n>\d+)"),
        lambda match: (" " if match["pre"] is not None else "") + _number(match),
    ),
)


def spoken_text(text: str) -> str:
    """`text` as it should be spoken: digits, prices, times, dates and phone numbers in Hebrew words.
    Text without digits or signs comes back unchanged."""
    if not any(c.isdigit() for c in text):
        return text
    for pattern, rewrite in _RULES:
        text = pattern.sub(rewrite, text)
    return text
