"""cohort exports with progress (issue 17, web interface): one row per download of a cohort's zip

Revision ID: 0007_ui
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_ui"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cohort_export",
        sa.Column("export_pk", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("cohort", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_after", sa.String(length=64), nullable=False),
        sa.Column("series_total", sa.Integer(), nullable=False),
        sa.Column("series_done", sa.Integer(), nullable=False),
        sa.Column("objects_total", sa.Integer(), nullable=False),
        sa.Column("objects_done", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("last_series", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("export_pk"),
    )
    op.create_index("ix_cohort_export_project_user", "cohort_export", ["project", "user"])


def downgrade() -> None:
    op.drop_index("ix_cohort_export_project_user", table_name="cohort_export")
    op.drop_table("cohort_export")
