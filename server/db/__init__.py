from server.db.engine import Database

__all__ = ["Database"]
