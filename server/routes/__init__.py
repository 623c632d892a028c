"""One blueprint per area. Routes stay thin: parse, authorise, call a service or the DAO, answer.

`db_session()` is the request's session. A response below 400 commits it; an error response rolls
it back (a route that must keep something on an error, such as a failed send, commits itself).
"""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from server.app_state import AppServices, services
from server.config import Settings


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def app_services() -> AppServices:
    """The services of the app handling this request."""
    return services(current_app)


def db_session() -> Session:
    if "db_session" not in g:
        g.db_session = app_services().database.sessions()
    return g.db_session


def register_session_lifecycle(app: Flask) -> None:
    @app.after_request
    def _commit(response):
        session = g.get("db_session")
        if session is not None:
            if response.status_code < 400:
                session.commit()
            else:
                session.rollback()
        return response

    @app.teardown_request
    def _close(exc):
        session = g.pop("db_session", None)
        if session is not None:
            if exc is not None:
                session.rollback()
            session.close()
