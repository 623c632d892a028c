"""The conversation of one call: its history, the LLM messages built from it, its transcript,
and the streamed reply cut into sentences that can be spoken one by one.

The engine ↔ LLM contract for ending a call lives here: when the business has the `end_call` tool
on, the system prompt asks the model to call it and say goodbye; otherwise (and still honoured when
a model writes it anyway) to end its final goodbye with `END_CALL_MARKER`, which is never spoken.
Either way, once the goodbye has been heard the engine hangs up (`calls.outcome = "agent_goodbye"`,
which `stream_ended` answers with `<Hangup/>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from server.agent.prompt import build_system_prompt, tools_rule

END_CALL_MARKER = "[END_CALL]"
CALL_CONTROL_RULE = (
    "When the conversation is over (the caller said goodbye or has nothing more to ask) and you have "
    f"said goodbye, end that last reply with the exact text {END_CALL_MARKER} so the call is hung up. "
    f"Never write {END_CALL_MARKER} in any other reply."
)
END_CALL_TOOL_RULE = (
    "When the conversation is over (the caller said goodbye or has nothing more to ask), call the "
    "end_call tool and say one short goodbye; the call is hung up after it."
)
ROLE_LABELS = {"user": "Caller", "assistant": "Agent"}


@dataclass(frozen=True)
class Exchange:
    """One recorded turn: what the caller said and what the agent said that the caller heard."""

    user_text: str
    agent_text: str


def system_prompt(business: Any, tool_names: tuple[str, ...] = ()) -> str:
    ending = END_CALL_TOOL_RULE if "end_call" in tool_names else CALL_CONTROL_RULE
    parts = (build_system_prompt(business, "voice"), tools_rule(list(tool_names)), ending)
    return "\n\n".join(part for part in parts if part)


def llm_messages(system: str, history: Iterable[Exchange], user_text: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for exchange in history:
        if exchange.user_text:
            messages.append({"role": "user", "content": exchange.user_text})
        if exchange.agent_text:
            messages.append({"role": "assistant", "content": exchange.agent_text})
    messages.append({"role": "user", "content": user_text})
    return messages


def render_transcript(history: Iterable[Exchange]) -> str:
    lines = []
    for exchange in history:
        if exchange.user_text:
            lines.append(f"{ROLE_LABELS['user']}: {exchange.user_text}")
        if exchange.agent_text:
            lines.append(f"{ROLE_LABELS['assistant']}: {exchange.agent_text}")
    return "\n".join(lines)


# A sentence ends at . ! ? … (or a run of them, with closing quotes/brackets) followed by
# whitespace, or at a line break. "3.5" or "www.x.co" don't end one: no whitespace follows.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|\n+")
# Past this length, a clause boundary (or failing that a space) ends the chunk anyway, so that a
# long run-on reply doesn't delay the first audio.
LONG_SENTENCE_CHARS = 220
_CLAUSE_END = re.compile(r"[,;:–—]\s+")


class SentenceSplitter:
    """Feed LLM text deltas; get back complete sentences as soon as they are complete."""

    def __init__(self) -> None:
        self._buffer = ""
        self.saw_end_call = False

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        sentences = []
        while True:
            match = _SENTENCE_END.search(self._buffer)
            if match is not None:
                cut = match.end()
            elif len(self._buffer) > LONG_SENTENCE_CHARS:
                cut = self._long_cut(self._buffer)
            else:
                break
            sentence = self._clean(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            if sentence:
                sentences.append(sentence)
        return sentences

    def flush(self) -> list[str]:
        sentence = self._clean(self._buffer)
        self._buffer = ""
        return [sentence] if sentence else []

    def _clean(self, text: str) -> str:
        if END_CALL_MARKER in text:
            self.saw_end_call = True
            text = text.replace(END_CALL_MARKER, "")
        return text.strip()

    @staticmethod
    def _long_cut(text: str) -> int:
        clauses = [m.end() for m in _CLAUSE_END.finditer(text, 0, LONG_SENTENCE_CHARS)]
        if clauses:
            return clauses[-1]
        space = text.rfind(" ", 0, LONG_SENTENCE_CHARS)
        return space + 1 if space > 0 else LONG_SENTENCE_CHARS
