"""identity and audit (issue 12, HTTP side): who created and revoked an API token and when; the audit
record's EventTypeCode and network access point; the cursor of the audit trail's syslog export

Revision ID: 0005_identity
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_identity"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=128), nullable=False, server_default=""))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("audit_record") as batch:
        batch.add_column(sa.Column("event_type", sa.String(length=16), nullable=False, server_default=""))
        batch.add_column(sa.Column("access_point", sa.String(length=64), nullable=False, server_default=""))
    op.create_table(
        "audit_cursor",
        sa.Column("destination", sa.String(length=256), nullable=False),
        sa.Column("audit_pk", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("destination"),
    )


def downgrade() -> None:
    op.drop_table("audit_cursor")
    with op.batch_alter_table("audit_record") as batch:
        batch.drop_column("access_point")
        batch.drop_column("event_type")
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("created_by")
