"""Alembic environment: the engine is handed in by `service.storage.upgrade`."""

from __future__ import annotations

from alembic import context

from aduan.service.storage import Base

connectable = context.config.attributes["engine"]

with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
