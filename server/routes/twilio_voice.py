"""Placeholder: this area's routes arrive with their issue."""
from flask import Blueprint

bp = Blueprint("twilio_voice", __name__)
