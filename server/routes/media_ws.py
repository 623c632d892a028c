"""Placeholder: this area's routes arrive with their issue."""
from flask import Blueprint

bp = Blueprint("media_ws", __name__)
