"""Initial schema: stored requests and operator feedback.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.String(200)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
        sa.Column("media_url", sa.Text),
        sa.Column("service_code", sa.String(50)),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("category_score", sa.Float, nullable=False),
        sa.Column("agency", sa.String(200), nullable=False),
        sa.Column("agency_score", sa.Float, nullable=False),
        sa.Column("kelurahan", sa.String(100)),
        sa.Column("kecamatan", sa.String(100)),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("route", sa.String(10), nullable=False),
    )
    op.create_index("ix_requests_received_at", "requests", ["received_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("requests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("agency", sa.String(200), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "operator", name="uq_feedback_operator"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("requests")
