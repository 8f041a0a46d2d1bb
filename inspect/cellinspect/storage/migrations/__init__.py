"""Alembic migration environment, shipped inside the package (run by storage.migrate)."""
