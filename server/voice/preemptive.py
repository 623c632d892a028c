"""Preemptive generation: the reply is written while Google is still deciding the final transcript.

Google's streaming recognition has no "the caller is done" event before its final result, which
comes an endpointing delay (often 500 ms or more) after the caller stopped. The session therefore
starts the language model on the latest interim transcript once its own energy VAD has heard
`PREEMPTIVE_SILENCE_MS` of quiet, and holds the reply (text, and its synthesised audio) unplayed.
When the final arrives it is compared with the interim the reply was written for, word by word
after `meaning_words` took away what doesn't change the meaning (punctuation, case, Hebrew niqqud
and cantillation, filler sounds): the same words → the held reply plays at once; other words → the
held reply is cancelled (its HTTP stream closed) and the final is answered as before. Nothing of a
held reply is ever queued to the pacer before the final confirmed it, and a tool the model calls
waits for that confirmation before it runs.

Limits, as in LiveKit Agents' preemptive generation: at most `MAX_ATTEMPTS` speculative starts per
caller turn, none once the caller has been talking for `MAX_SPEECH_SECONDS` (long speech changes
too often to be worth it), and a reply is only kept if the conversation didn't move meanwhile.
"""

from __future__ import annotations

import re
import unicodedata

FEATURE = "preemptive_generation"  # the business's switch (`Business.features`), on by default
FEATURE_DEFAULT = True
MAX_ATTEMPTS = 3
MAX_SPEECH_SECONDS = 10.0

# Hesitation sounds Google writes out that carry no meaning (Hebrew and English spellings).
FILLER_WORDS = frozenset(
    {"אה", "אהה", "אההה", "אמ", "אממ", "אמממ", "אהם", "הממ", "מממ", "uh", "um", "umm", "uhm", "er", "hmm"}
)
# Hebrew points: cantillation U+0591–U+05AF and niqqud U+05B0–U+05C7 (except the maqaf and sof pasuq,
# which are punctuation and split or end words).
_POINTS = re.compile(r"[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7]")
_WORD = re.compile(r"\w+(?:['\u05f3\u05f4\"]\w+)*")  # גז'וז, צ'ק, צה"ל stay one word


def meaning_words(text: str) -> tuple[str, ...]:
    """The words of a transcript that carry its meaning, in order, for comparing two transcripts."""
    text = unicodedata.normalize("NFC", _POINTS.sub("", unicodedata.normalize("NFD", text))).casefold()
    words = (word.replace("\u05f3", "'").replace("\u05f4", '"') for word in _WORD.findall(text))
    return tuple(word for word in words if word not in FILLER_WORDS)


def same_meaning(first: str, second: str) -> bool:
    return meaning_words(first) == meaning_words(second)
