"""`/ws/twilio-media`: the Twilio Media Streams WebSocket (docs/architecture.md, "The live-call engine").

The route only does the HTTP part: it refuses a plain GET (400 JSON), accepts the upgrade with
`audio.twilio.com` when the client offers it (Twilio fails with 31920 otherwise), checks
`X-Twilio-Signature` against the public `wss://` URL (or its `https://` form: Twilio has signed
both), and hands the socket and the check's verdict to the live-call engine (`server/voice/`),
which serves the call or closes the socket with 1008 (policy violation) and logs why.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from simple_websocket import Server

from server.errors import DomainError, Problem
from server.logs import log_event
from server.routes import app_services, settings
from server.security.twilio_signature import websocket_signature_problem
from server.voice.engine import VoiceEngine
from server.voice.protocol import SUBPROTOCOL
from server.voice.transport import MediaSocket

bp = Blueprint("media_ws", __name__)
log = logging.getLogger("agentlocator.voice.ws")

PING_INTERVAL_SECONDS = 25
# The socket is closed (1009) above this; messages between 64 KiB (our limit, see
# `protocol.MAX_MESSAGE_BYTES`) and this are skipped one by one and the call goes on.
HARD_MESSAGE_LIMIT_BYTES = 1024 * 1024


@bp.get("/ws/twilio-media")
@bp.get("/ws/twilio-media/")
def twilio_media_without_upgrade():
    raise DomainError(Problem.INVALID, "websocket_required", "this endpoint only accepts a WebSocket upgrade")


# werkzeug routes WebSocket upgrades only to rules marked `websocket=True` (and plain requests only
# to the others), hence the two views on one path.
@bp.get("/ws/twilio-media", websocket=True)
@bp.get("/ws/twilio-media/", websocket=True)
def twilio_media():
    signature_problem = websocket_signature_problem(
        settings(), request.path, request.query_string.decode("latin-1"), request.headers.get("X-Twilio-Signature", "")
    )
    # No extension is offered back (permessage-deflate would inflate every inbound frame), and no
    # reader thread is started: `MediaSocket` reads the frames in the engine's own greenlet.
    environ = {k: v for k, v in request.environ.items() if k != "HTTP_SEC_WEBSOCKET_EXTENSIONS"}
    ws = Server.accept(environ, subprotocols=[SUBPROTOCOL], thread_class=_NoReaderThread)
    log_event(
        log,
        "ws_connected",
        path=request.path,
        subprotocol=ws.subprotocol,
        offered=request.headers.get("Sec-WebSocket-Protocol", ""),
    )
    socket = MediaSocket(ws, ping_interval=PING_INTERVAL_SECONDS, max_message_size=HARD_MESSAGE_LIMIT_BYTES)
    _engine().handle(socket, refusal=signature_problem)
    return _WebSocketDone(ws.mode)


def _engine() -> VoiceEngine:
    """One engine per worker process, made on the first call (after gunicorn forked)."""
    state = app_services()
    if state.voice_engine is None:
        state.voice_engine = VoiceEngine(
            settings(), state.database, current_app.config["APP_SECRET"], lifecycle=state.lifecycle, jobs=state.jobs
        )
    return state.voice_engine


class _NoReaderThread:
    """Stands in for the reader thread simple-websocket starts after the handshake (see `MediaSocket`)."""

    def __init__(self, target=None):
        self.name = "media-ws"

    def start(self) -> None:
        pass


class _WebSocketDone(Response):
    """What the view returns once the WebSocket is over (the trick Flask-Sock uses).

    The connection no longer speaks HTTP, so nothing may be written to it. Under gunicorn,
    raising StopIteration from the WSGI call makes the worker close the socket quietly; returning
    a normal response would write `HTTP/1.1 200` after the close frame and log
    `ConcurrentObjectUseError` for every call (seen under gunicorn's gevent worker).
    """

    def __init__(self, mode: str):
        super().__init__()
        self._mode = mode

    def __call__(self, environ, start_response):
        if self._mode == "gunicorn":
            raise StopIteration()
        if self._mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []
