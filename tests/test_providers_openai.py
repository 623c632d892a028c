"""The OpenAI adapter against the local OpenAI-compatible HTTP fake, and the agent's system prompt."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from server.agent.prompt import build_system_prompt, opening_line
from server.providers.base import ProviderError, ProviderTimeout
from server.providers.openai_llm import OpenAILanguageModel
from server.providers.plugin import load_providers
from testkit.fakes.openai_server import FakeOpenAI
from tests.conftest import make_settings

MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "מה השעות?"}]


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def openai_fake(fake_openai):
    fake_openai.reset()
    yield fake_openai
    fake_openai.release()


def model_for(fake: FakeOpenAI, **env: str) -> OpenAILanguageModel:
    return OpenAILanguageModel(
        make_settings(OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.base_url, OPENAI_MODEL="gpt-test", **env)
    )


def test_stream_reply_yields_deltas_of_the_scripted_reply(openai_fake):
    openai_fake.script("פתוחים מחר בשמונה בבוקר.")
    deltas = list(model_for(openai_fake).stream_reply(MESSAGES))
    assert len(deltas) > 1
    assert "".join(deltas) == "פתוחים מחר בשמונה בבוקר."
    request = openai_fake.requests[-1]
    assert request["authorization"] == f"Bearer {openai_fake.api_key}"
    assert request["body"]["model"] == "gpt-test" and request["body"]["stream"] is True
    assert request["body"]["messages"] == MESSAGES


def test_reply_keyed_on_last_user_message_and_default(openai_fake):
    openai_fake.replies_for["מה השעות?"] = "משמונה עד חמש."
    model = model_for(openai_fake)
    assert "".join(model.stream_reply(MESSAGES)) == "משמונה עד חמש."
    other = [{"role": "user", "content": "שלום"}]
    assert model.complete(other) == "קיבלתי: שלום"


def test_complete_returns_the_whole_reply(openai_fake):
    openai_fake.reply_fn = lambda messages: f"{len(messages)} הודעות"
    assert model_for(openai_fake).complete(MESSAGES) == "2 הודעות"
    assert "stream" not in openai_fake.requests[-1]["body"] or not openai_fake.requests[-1]["body"]["stream"]


def test_stall_hits_the_first_token_timeout(openai_fake):
    openai_fake.stall = True
    model = model_for(openai_fake, LLM_FIRST_TOKEN_TIMEOUT_SECONDS="0.5")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        list(model.stream_reply(MESSAGES))
    assert 0.4 < time.monotonic() - started < 2.0


def test_slow_first_token_times_out_but_fast_one_passes(openai_fake):
    model = model_for(openai_fake, LLM_FIRST_TOKEN_TIMEOUT_SECONDS="0.4")
    openai_fake.first_token_delay = 1.0
    with pytest.raises(ProviderTimeout):
        list(model.stream_reply(MESSAGES))
    openai_fake.first_token_delay = 0.05
    openai_fake.script("בסדר.")
    assert "".join(model.stream_reply(MESSAGES)) == "בסדר."


def test_timeout_works_in_a_plain_thread(openai_fake):
    openai_fake.stall = True
    outcome = []

    def run():
        try:
            list(model_for(openai_fake, LLM_FIRST_TOKEN_TIMEOUT_SECONDS="0.3").stream_reply(MESSAGES))
        except ProviderTimeout as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and len(outcome) == 1


def test_http_errors_become_provider_errors_after_one_retry(openai_fake):
    openai_fake.fail_next(500, count=2)
    with pytest.raises(ProviderError) as caught:
        list(model_for(openai_fake).stream_reply(MESSAGES))
    assert not isinstance(caught.value, ProviderTimeout)
    assert "500" in str(caught.value)
    assert len(openai_fake.requests) == 2  # the live-call budget allows exactly one retry


def test_one_transient_error_is_retried(openai_fake):
    openai_fake.fail_next(503, count=1)
    openai_fake.script("עובד.")
    assert "".join(model_for(openai_fake).stream_reply(MESSAGES)) == "עובד."


def test_wrong_key_is_a_provider_error_without_the_key(openai_fake):
    model = OpenAILanguageModel(make_settings(OPENAI_API_KEY="sk-wrong-secret", OPENAI_BASE_URL=openai_fake.base_url))
    with pytest.raises(ProviderError) as caught:
        model.complete(MESSAGES)
    assert "401" in str(caught.value) and "sk-wrong-secret" not in str(caught.value)


def test_missing_key_is_a_provider_error():
    with pytest.raises(ProviderError):
        list(OpenAILanguageModel(make_settings()).stream_reply(MESSAGES))


def test_closing_the_iterator_early_stops_the_stream(openai_fake):
    openai_fake.script("אחת שתיים שלוש ארבע חמש")
    openai_fake.token_delay = 0.05
    replies = model_for(openai_fake).stream_reply(MESSAGES)
    assert next(replies).strip() == "אחת"
    replies.close()
    openai_fake.token_delay = 0.0
    openai_fake.script("שוב.")
    assert "".join(model_for(openai_fake).stream_reply(MESSAGES)) == "שוב."


# ---- prompt -----------------------------------------------------------------------------------
BUSINESS = SimpleNamespace(
    name="מספרת דנה", ai_instructions='פתוח א-ה 9:00-18:00. תספורת 80 ש"ח.', opening_line="", timezone="Asia/Jerusalem"
)


# ---- the VOICE_PROVIDERS plug-in (calls and WhatsApp load their language model through it) ----
def test_the_production_plug_in_builds_one_openai_model_per_configuration(openai_fake):
    settings = make_settings(OPENAI_API_KEY=openai_fake.api_key, OPENAI_BASE_URL=openai_fake.base_url)
    providers = load_providers(settings)
    assert isinstance(providers.llm, OpenAILanguageModel) and load_providers(settings).llm is providers.llm
    assert providers.llm.complete(MESSAGES) == "קיבלתי: מה השעות?"


@pytest.mark.parametrize(
    "plug_in, why",
    [
        ("testkit.fakes.no_such_module:build", "can't be loaded"),
        ("server.providers.google_openai:no_such_factory", "can't be loaded"),
        ("server.providers.google_openai", "can't be loaded"),
        ("server.phones:to_e164", "factory failed: InvalidPhone"),  # raises when handed the settings
        ("server.providers.openai_llm:OpenAILanguageModel", "not VoiceProviders"),  # answers a model, not the set
    ],
)
def test_a_plug_in_that_does_not_build_providers_is_a_provider_error(plug_in, why):
    with pytest.raises(ProviderError, match=why):
        load_providers(make_settings(VOICE_PROVIDERS=plug_in))


def test_voice_prompt_has_instructions_and_spoken_rules():
    prompt = build_system_prompt(BUSINESS, "voice", now=datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc))
    assert "מספרת דנה" in prompt and "תספורת 80" in prompt
    assert "one or two short spoken sentences" in prompt and "no markdown" in prompt
    assert "Hebrew words" in prompt
    assert "2026-03-01 10:00" in prompt and "יום ראשון" in prompt  # UTC+2 in March, a Sunday


def test_whatsapp_prompt_differs_and_unknown_channel_is_rejected():
    prompt = build_system_prompt(BUSINESS, "whatsapp")
    assert "WhatsApp" in prompt and "one or two short spoken sentences" not in prompt
    with pytest.raises(ValueError):
        build_system_prompt(BUSINESS, "fax")


def test_prompt_without_instructions_and_bad_timezone():
    bare = SimpleNamespace(name="", ai_instructions="", timezone="Mars/Base")
    prompt = build_system_prompt(bare, "voice")
    assert "no further information" in prompt and "Asia/Jerusalem" in prompt


def test_opening_line_prefers_the_owners_line():
    assert opening_line(BUSINESS) == "שלום, הגעתם למספרת דנה. איך אפשר לעזור?"
    assert opening_line(SimpleNamespace(name="X", opening_line="  היי!  ")) == "היי!"
    assert opening_line(SimpleNamespace(name="", opening_line="")) == "שלום, איך אפשר לעזור?"
