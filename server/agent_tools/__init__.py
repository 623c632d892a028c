"""The agent's tools, registered in `server.agent.tools` at start-up (`register_all`).

They wrap the services the agent may act through (the appointment book, payments, WhatsApp sending,
the live call), which is why they live here, above those services, and not in `server.agent`: the
live-call engine and the WhatsApp auto-reply sit below the services and find the tools through the
registry only.
"""

from __future__ import annotations

import importlib

TOOL_MODULES = (
    "server.agent_tools.calls",
    "server.agent_tools.messages",
    "server.agent_tools.payment_links",
    "server.agent_tools.appointments",
    "server.agent_tools.transfer",
)


def register_all() -> None:
    """Register every tool (idempotent: each module registers once, on import)."""
    for name in TOOL_MODULES:
        importlib.import_module(name)
