"""Process lifecycle shared by the routes and the live-call engine: draining on shutdown."""
from __future__ import annotations


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False

    def start_draining(self) -> None:
        self.draining = True
