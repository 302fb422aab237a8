"""Workbench sessions kept on the server: a cookie carries only a random token, the table its
SHA-256, so logging out (or a revoked key) ends the session on every replica, and neither a
leaked cookie nor a leaked table reveals anything about the operator's key.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("key_check", sa.String(64), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_operator_sessions_expires_at", "operator_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_operator_sessions_expires_at", "operator_sessions")
    op.drop_table("operator_sessions")
