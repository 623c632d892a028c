"""Placeholder: this area's routes arrive with their issue."""
from flask import Blueprint

bp = Blueprint("payments_api", __name__)
