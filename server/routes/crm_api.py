"""Placeholder: this area's routes arrive with their issue."""
from flask import Blueprint

bp = Blueprint("crm_api", __name__)
