"""Duplicate and repeated reports: each stored complaint's signature (text vector, place,
category, keyed reporter hash, the likely duplicates found at intake, also as pairs indexed by
the earlier report), indexed by unit and time so the search reads only candidate rows;
operators' merges and their verdicts on pairs.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _request_fk(name: str, primary_key: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.String(36),
        sa.ForeignKey("requests.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "request_signatures",
        _request_fk("request_id", primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kelurahan", sa.String(100)),
        sa.Column("kecamatan", sa.String(100)),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("vector_kind", sa.String(40), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("address_vector", sa.LargeBinary),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("reporter", sa.String(64)),
        sa.Column("repeat_reporter", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    # The search's access paths: unit then time, coordinates, a reporter's recent reports.
    op.create_index(
        "ix_request_signatures_kelurahan", "request_signatures", ["kelurahan", "received_at"]
    )
    op.create_index(
        "ix_request_signatures_kecamatan", "request_signatures", ["kecamatan", "received_at"]
    )
    op.create_index("ix_request_signatures_latlon", "request_signatures", ["latitude", "longitude"])
    op.create_index(
        "ix_request_signatures_reporter", "request_signatures", ["reporter", "received_at"]
    )
    op.create_table(
        "duplicate_candidates",
        _request_fk("request_id", primary_key=True),
        _request_fk("candidate_id", primary_key=True),
        sa.Column("similarity", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_duplicate_candidates_candidate_id", "duplicate_candidates", ["candidate_id"]
    )
    op.create_table(
        "request_duplicates",
        _request_fk("request_id", primary_key=True),
        _request_fk("original_id"),
        sa.Column("similarity", sa.Float),
        sa.Column("merged_by", sa.String(200), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_status", sa.String(20), nullable=False),
        sa.Column("previous_note", sa.Text),
    )
    op.create_index("ix_request_duplicates_original_id", "request_duplicates", ["original_id"])
    op.create_table(
        "duplicate_verdicts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _request_fk("request_id"),
        _request_fk("candidate_id"),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("similarity", sa.Float),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_duplicate_verdicts_request_id", "duplicate_verdicts", ["request_id"])


def downgrade() -> None:
    op.drop_table("duplicate_verdicts")
    op.drop_table("request_duplicates")
    op.drop_table("duplicate_candidates")
    op.drop_table("request_signatures")
