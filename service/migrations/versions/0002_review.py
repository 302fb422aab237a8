"""The operators' review: status, public note, expected date and corrected labels on each
request, why it was routed so and its unit's evidence, its ranked labels, and an append-only
audit table (`request_events`) that a trigger keeps from being rewritten.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("route_reason", sa.String(30)),
    ("unit_source", sa.String(20)),
    ("unit_confidence", sa.Float),
    ("predictions", sa.JSON),
    ("note", sa.Text),
    ("expected_at", sa.DateTime(timezone=True)),
    ("updated_at", sa.DateTime(timezone=True)),
    ("corrected_category", sa.String(100)),
    ("corrected_agency", sa.String(200)),
    ("corrected_by", sa.String(200)),
    ("corrected_at", sa.DateTime(timezone=True)),
)
_INDEXES = {
    "ix_requests_route_status": ["route", "status"],
    "ix_requests_agency": ["agency"],
    "ix_requests_corrected_agency": ["corrected_agency"],
    "ix_requests_kecamatan": ["kecamatan"],
}
_APPEND_ONLY = "request_events is append-only"


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="open"))
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind))
    for name, columns in _INDEXES.items():
        op.create_index(name, "requests", columns)
    # Earlier corrections (POST /v1/feedback) become the requests' corrected labels.
    latest = (
        "(select {col} from feedback where feedback.request_id = requests.id "
        "order by feedback.id desc limit 1)"
    )
    op.execute(
        "update requests set "
        + ", ".join(
            f"{target} = {latest.format(col=source)}"
            for target, source in (
                ("corrected_category", "category"),
                ("corrected_agency", "agency"),
                ("corrected_by", "operator"),
                ("corrected_at", "created_at"),
            )
        )
        + " where exists (select 1 from feedback where feedback.request_id = requests.id)"
    )
    op.create_table(
        "request_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("requests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("field", sa.String(40), nullable=False),
        sa.Column("old_value", sa.Text),
        sa.Column("new_value", sa.Text),
    )
    op.create_index("ix_request_events_request_id", "request_events", ["request_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "create function request_events_append_only() returns trigger as $$ "
            f"begin raise exception '{_APPEND_ONLY}'; end; $$ language plpgsql"
        )
        op.execute(
            "create trigger request_events_no_update before update on request_events "
            "for each row execute function request_events_append_only()"
        )
    else:
        op.execute(
            "create trigger request_events_no_update before update on request_events "
            f"begin select raise(abort, '{_APPEND_ONLY}'); end"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("drop trigger if exists request_events_no_update on request_events")
        op.execute("drop function if exists request_events_append_only()")
    else:
        op.execute("drop trigger if exists request_events_no_update")
    op.drop_table("request_events")
    for name in _INDEXES:
        op.drop_index(name, "requests")
    with op.batch_alter_table("requests") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("status")
