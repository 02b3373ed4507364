"""Persistence: SQLModel tables, the engine (SQLite by default, PostgreSQL by
URL) and the Alembic migrations."""
