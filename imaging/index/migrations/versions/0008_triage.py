"""triage failures (issue 13): a series' outcome records its status, the reason it failed and how many
attempts were made

Revision ID: 0008_triage
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_triage"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triage_outcome") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="done"))
        batch.add_column(sa.Column("error", sa.String(length=1024), nullable=False, server_default=""))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("triage_outcome") as batch:
        batch.drop_column("attempts")
        batch.drop_column("error")
        batch.drop_column("status")
