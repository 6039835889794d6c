"""Alembic migrations for the costwarden schema (run them with costwarden.storage.migrate)."""
