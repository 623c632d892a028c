"""The settings every test app starts from: a public origin, a Twilio account and the secrets the
signatures in the tests are computed with. The fakes that sign requests as Twilio does use the same."""

from __future__ import annotations

import tempfile

TEST_BASE_URL = "https://agent.example.test"
TEST_TWILIO_TOKEN = "test-twilio-auth-token"

BASE_TEST_ENV = {
    "PUBLIC_BASE_URL": TEST_BASE_URL,
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": TEST_TWILIO_TOKEN,
    "APP_SECRET": "test-app-secret",
    "LOG_LEVEL": "INFO",
    # Prompts made in the agent's voice (server/voice/prompt_audio.py) stay in this test process's own
    # folder, never in the project's instance/, so no run plays audio an earlier run made.
    "PROMPT_AUDIO_DIR": tempfile.mkdtemp(prefix="agentlocator-prompts-"),
}
