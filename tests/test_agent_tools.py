"""The agent's tool registry and the OpenAI adapter's function calling, through the real `openai` SDK
against the OpenAI wire fake: streamed tool-call fragments put together, tools run, `tool` messages
sent back, bounded rounds, and every way a tool call can go wrong told to the model."""

from __future__ import annotations

import json

import pytest
import requests
import sqlalchemy as sa

from server.agent.tools import Tool, ToolBox, ToolContext, enabled_tools, register, registered, tool_settings
from server.agent_tools import register_all
from server.db.models import ToolCall
from server.errors import DomainError, Problem
from server.providers.openai_llm import MAX_TOOL_ROUNDS, OpenAILanguageModel
from testkit.fakes.openai_server import FakeOpenAI, ToolCalls
from tests.conftest import create_tenant, make_settings

MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "יש תור מחר?"}]


def _echo(context: ToolContext, args: dict) -> dict:
    return {"echo": args["word"], "channel": context.channel}


def _broken(context: ToolContext, args: dict) -> dict:
    raise RuntimeError("database on fire")


def _refusing(context: ToolContext, args: dict) -> dict:
    raise DomainError(Problem.CONFLICT, "slot_taken", "that time is no longer free")


ECHO = register(
    Tool(
        name="test_echo",
        label="בדיקה",
        description="echo a word",
        parameters={
            "type": "object",
            "properties": {"word": {"type": "string", "maxLength": 10}},
            "required": ["word"],
            "additionalProperties": False,
        },
        handler=_echo,
        default_enabled=False,
    )
)
BROKEN = register(Tool("test_broken", "תקלה", "always fails", {"type": "object"}, _broken, default_enabled=False))
REFUSING = register(
    Tool("test_refusing", "סירוב", "always refuses", {"type": "object"}, _refusing, default_enabled=False)
)


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def openai_fake(fake_openai):
    fake_openai.reset()
    yield fake_openai


def model_for(fake: FakeOpenAI) -> OpenAILanguageModel:
    return OpenAILanguageModel(
        make_settings(OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL="gpt-test")
    )


def toolbox(db, business_id: int, *tools: Tool) -> ToolBox:
    context = ToolContext(
        business_id=business_id, channel="whatsapp", database=db, settings=make_settings(), phone="+972501234567"
    )
    return ToolBox(context, list(tools))


def rows(db, business_id: int) -> list[ToolCall]:
    with db.scope() as session:
        found = list(
            session.scalars(sa.select(ToolCall).where(ToolCall.business_id == business_id).order_by(ToolCall.id))
        )
        session.expunge_all()
        return found


# ---- the registry -----------------------------------------------------------------------------
def test_every_product_tool_is_registered_with_a_valid_schema_and_a_hebrew_label():
    register_all()
    names = {t.name for t in registered()}
    assert {
        "find_slots",
        "book_appointment",
        "cancel_appointment",
        "take_message",
        "send_payment_link",
        "end_call",
        "transfer_to_person",
    } <= names
    for tool in registered():
        assert tool.spec()["function"]["parameters"]["type"] == "object"
        assert any("\u0590" <= ch <= "\u05ff" for ch in tool.label), tool.name
    # end_call and transfers belong to calls only; money is opt-in
    call_only = {t.name for t in enabled_tools(None, "whatsapp")}
    assert "end_call" not in call_only and "take_message" in call_only
    assert "send_payment_link" not in {t.name for t in enabled_tools(None, "call")}
    chosen = {t.name for t in enabled_tools({"send_payment_link": True, "take_message": False}, "call")}
    assert "send_payment_link" in chosen and "take_message" not in chosen
    by_name = {row["name"]: row for row in tool_settings({"end_call": False})}
    assert by_name["end_call"]["enabled"] is False and by_name["end_call"]["default_enabled"] is True


def test_a_tool_runs_and_its_row_is_recorded(db):
    tenant = create_tenant(db)
    box = toolbox(db, tenant.business_id, ECHO)
    assert box.run("test_echo", '{"word": "שלום"}') == {"echo": "שלום", "channel": "whatsapp"}
    [row] = rows(db, tenant.business_id)
    assert row.name == "test_echo" and row.arguments == {"word": "שלום"} and row.error is None
    assert row.result == {"echo": "שלום", "channel": "whatsapp"} and row.finished_at >= row.started_at


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("test_echo", "{not json", "not valid JSON"),
        ("test_echo", "[1, 2]", "must be a JSON object"),
        ("test_echo", '{"word": "far too long a word"}', "invalid arguments for test_echo: word"),
        ("test_echo", '{"word": "x", "extra": 1}', "invalid arguments for test_echo"),
        ("test_echo", "{}", "'word' is a required property"),
        ("test_echo", '{"word": "' + "x" * 9000 + '"}', "longer than"),
        ("no_such_tool", "{}", "unknown tool 'no_such_tool'"),
        ("test_broken", "{}", "the tool failed (RuntimeError)"),
        ("test_refusing", "{}", "that time is no longer free"),
    ],
)
def test_every_bad_call_is_an_error_for_the_model_never_an_exception(db, name, arguments, expected):
    tenant = create_tenant(db)
    box = toolbox(db, tenant.business_id, ECHO, BROKEN, REFUSING)
    result = box.run(name, arguments)
    assert expected in result["error"]
    [row] = rows(db, tenant.business_id)
    assert row.name == name and expected in row.error
    assert "database on fire" not in json.dumps(result)  # a bug's details stay in the log


# ---- the OpenAI adapter with tools ------------------------------------------------------------
class Recorder:
    """A ToolRunner that answers from a dict and remembers the calls."""

    def __init__(self, answers: dict[str, dict]):
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def specs(self) -> list[dict]:
        return [
            {"type": "function", "function": {"name": name, "description": name, "parameters": {"type": "object"}}}
            for name in self.answers
        ]

    def run(self, name: str, arguments_json: str) -> dict:
        self.calls.append((name, arguments_json))
        return self.answers.get(name, {"error": f"unknown tool {name}"})


def test_streamed_tool_calls_are_assembled_run_and_answered(openai_fake):
    call = ToolCalls(
        [("find_slots", {"date": "2026-03-01", "service_id": 3}), ("take_message", {"reason": "שאלה על מחיר"})],
        text="רגע, אני בודקת. ",
    )
    openai_fake.script(call, "יש תור בעשר.")
    tools = Recorder({"find_slots": {"slots": ["10:00"]}, "take_message": {"ok": True}})
    deltas = list(model_for(openai_fake).stream_reply(MESSAGES, tools=tools))
    assert "".join(deltas) == "רגע, אני בודקת. יש תור בעשר."
    assert [(name, json.loads(args)) for name, args in tools.calls] == [
        ("find_slots", {"date": "2026-03-01", "service_id": 3}),
        ("take_message", {"reason": "שאלה על מחיר"}),
    ]
    first, second = (r["body"] for r in openai_fake.requests)
    assert [t["function"]["name"] for t in first["tools"]] == ["find_slots", "take_message"]
    assistant, *answers = second["messages"][-3:]
    assert assistant["role"] == "assistant" and [c["id"] for c in assistant["tool_calls"]] == call.ids
    assert assistant["content"] == "רגע, אני בודקת. "
    assert [a["tool_call_id"] for a in answers] == call.ids
    assert openai_fake.tool_results == {call.ids[0]: {"slots": ["10:00"]}, call.ids[1]: {"ok": True}}


def test_complete_runs_tools_too(openai_fake):
    openai_fake.script(ToolCalls([("book_appointment", '{"service_id": 1, "start": "2026-03-01T10:00"}')]), "נקבע.")
    tools = Recorder({"book_appointment": {"booked": True}})
    assert model_for(openai_fake).complete(MESSAGES, tools=tools) == "נקבע."
    assert tools.calls == [("book_appointment", '{"service_id": 1, "start": "2026-03-01T10:00"}')]
    assert list(openai_fake.tool_results.values()) == [{"booked": True}]


def test_tool_rounds_are_bounded_and_the_last_round_must_answer_in_words(openai_fake):
    openai_fake.reply_fn = lambda messages: ToolCalls([("find_slots", {})], fallback="אבדוק ואחזור אלייך.")
    tools = Recorder({"find_slots": {"slots": []}})
    assert "".join(model_for(openai_fake).stream_reply(MESSAGES, tools=tools)) == "אבדוק ואחזור אלייך."
    assert len(tools.calls) == MAX_TOOL_ROUNDS
    assert len(openai_fake.requests) == MAX_TOOL_ROUNDS + 1 and "tools" not in openai_fake.requests[-1]["body"]


def test_malformed_arguments_and_unknown_tools_reach_the_model_as_errors(openai_fake, db):
    tenant = create_tenant(db)
    openai_fake.script(ToolCalls([("test_echo", '{"word": '), ("nope", "{}")]), "סליחה, לא הצלחתי.")
    box = toolbox(db, tenant.business_id, ECHO)
    assert model_for(openai_fake).complete(MESSAGES, tools=box) == "סליחה, לא הצלחתי."
    errors = [result["error"] for result in openai_fake.tool_results.values()]
    assert "not valid JSON" in errors[0] and "unknown tool 'nope'" in errors[1]
    assert [r.name for r in rows(db, tenant.business_id)] == ["test_echo", "nope"]


def test_the_fake_refuses_tool_calls_left_unanswered_as_openai_does(openai_fake):
    headers = {"Authorization": f"Bearer {openai_fake.api_key}"}
    unanswered = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}],
        },
        {"role": "user", "content": "y"},
    ]
    stray = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9", "content": "{}"}]
    for messages in (unanswered, stray):
        answer = requests.post(
            openai_fake.base_url + "/chat/completions",
            json={"model": "m", "messages": messages},
            headers=headers,
            timeout=5,
        )
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
