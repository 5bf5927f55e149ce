"""Alembic environment: SQL-first migrations run as the owner over a synchronous connection."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

sys.path.insert(0, str(Path(__file__).parent))

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("migrations need sqlalchemy.url (set by `llm-service migrate`)")

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
