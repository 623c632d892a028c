"""`/api/crm/tasks`, `/api/crm/tool_calls`, `/api/crm/agent_tools`: what the agent's tools leave for
staff and which tools a business has on. Thin: parse, authorise, call `server.crm.agent`, answer."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from server.crm import agent
from server.openapi import document
from server.routes import db_session
from server.routes.agent_openapi import OPENAPI_PATHS, OPENAPI_SCHEMAS
from server.routes.auth_api import require_auth
from server.web import json_body

bp = Blueprint("agent_api", __name__)
document(bp, OPENAPI_PATHS, OPENAPI_SCHEMAS)
CRM = "/api/crm"


@bp.get(f"{CRM}/tasks")
@require_auth()
def list_tasks():
    return jsonify(agent.list_tasks(db_session(), g.business_id, request.args))


@bp.patch(f"{CRM}/tasks/<int:task_id>")
@require_auth()
def update_task(task_id: int):
    return jsonify(agent.update_task(db_session(), g.business_id, task_id, g.user.id, json_body()))


@bp.get(f"{CRM}/tool_calls")
@require_auth()
def list_tool_calls():
    return jsonify(agent.list_tool_calls(db_session(), g.business_id, request.args))


@bp.get(f"{CRM}/agent_tools")
@require_auth()
def get_agent_tools():
    return jsonify(agent.get_agent_tools(db_session(), g.business_id))


@bp.put(f"{CRM}/agent_tools")
@require_auth("owner")
def set_agent_tools():
    return jsonify(agent.set_agent_tools(db_session(), g.business_id, f"user:{g.user.id}", json_body()))
