"""An instance that dies after storing a WhatsApp message, before queueing its AI reply, answers the
provider with an error; the provider delivers the message again, to any instance. That delivery is a
replay (the message is stored already), and the message must still be answered, once."""

from __future__ import annotations

import time

from server.routes import whatsapp_webhooks
from tests.test_whatsapp_auto_reply import llm, llm_server, replies, set_auto_reply, wa_app  # noqa: F401
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    bridge,
    bridge_message,
    bridge_server,
    post_bridge,
    tenant,
    twilio_api,
    twilio_server,
    wa_client,
    wa_db,
    wa_env,
    wait_for,
)


def test_a_stored_message_whose_reply_was_never_queued_is_answered_on_the_next_delivery(
    wa_app, wa_client, wa_db, tenant, llm, bridge, monkeypatch
):
    set_auto_reply(wa_db, tenant.business_id)
    event = bridge_message(tenant.whatsapp)
    with monkeypatch.context() as died:
        died.setattr(whatsapp_webhooks, "schedule_auto_reply", lambda *args, **kwargs: None)
        assert post_bridge(wa_client, event).status_code == 204  # stored; its reply is never queued
    time.sleep(0.5)
    assert not replies(wa_db) and not llm.requests

    assert post_bridge(wa_client, event).status_code == 204  # delivered again
    wait_for(lambda: replies(wa_db), timeout=15)
    assert post_bridge(wa_client, event).status_code == 204  # and again, once answered
    time.sleep(0.5)
    assert len(llm.requests) == 1 and len(replies(wa_db)) == 1
