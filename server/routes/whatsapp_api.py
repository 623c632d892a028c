"""Placeholder: this area's routes arrive with their issue."""
from flask import Blueprint

bp = Blueprint("whatsapp_api", __name__)
