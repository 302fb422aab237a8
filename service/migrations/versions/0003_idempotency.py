"""Idempotent creation: the `Idempotency-Key` a client sent with a stored request (hashed with
the caller's key name and the item's position), unique, so a retry after an unclear commit
finds the first request instead of storing a second complaint.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEX = "ux_requests_idempotency_key"


def upgrade() -> None:
    # A plain ADD COLUMN (no table copy on SQLite); NULLs never collide in a unique index.
    op.add_column("requests", sa.Column("idempotency_key", sa.String(80)))
    op.create_index(_INDEX, "requests", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="requests")
    # A plain DROP COLUMN (SQLite >= 3.35): copying the table, as a batch operation does,
    # would cascade-delete the feedback and audit rows that reference it.
    op.drop_column("requests", "idempotency_key")
