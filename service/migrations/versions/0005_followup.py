"""Follow-up: each routed complaint's office, lifecycle and deadlines (`followups`), and the
outbox of events for the offices' webhooks (`outbox`), written in the same transaction as the
change that causes them and delivered at least once by `service/dispatch.py`.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "followups",
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("requests.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("office", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_notes", sa.Text),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_response_due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected_datetime", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("overdue_at", sa.DateTime(timezone=True)),
        sa.Column("returned_at", sa.DateTime(timezone=True)),
        sa.Column("returned_to", sa.String(200)),
        sa.Column("escalated_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # Routed automatically: the model's agency and score, and what the office said of it
        # (accepted: acted on it; returned: not theirs), the ground truth of automatic routes.
        sa.Column("auto_agency", sa.String(200)),
        sa.Column("auto_score", sa.Float),
        sa.Column("verdict", sa.String(10)),
        sa.Column("verdict_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_followups_office_status", "followups", ["office", "status"])
    op.create_index("ix_followups_due", "followups", ["status", "first_response_due"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), primary_key=True),  # the event id: webhook-id
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("office", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(80)),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("dead_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
    )
    # What a dispatcher looks for: not yet delivered nor dead, due.
    op.create_index("ix_outbox_due", "outbox", ["delivered_at", "dead_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
    op.drop_index("ix_followups_due", "followups")
    op.drop_index("ix_followups_office_status", "followups")
    op.drop_table("followups")
