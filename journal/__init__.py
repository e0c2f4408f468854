"""The change journal of the captured models, on PostgreSQL only (see models.py)."""
