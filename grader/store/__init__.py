"""Persistence: SQLAlchemy 2 models, the Store (engine + sessions + migrations) and repository functions.

SQLite in the data directory by default, PostgreSQL by URL. The schema is owned
by the Alembic migrations in `migrations/`, applied automatically at start-up.
"""
