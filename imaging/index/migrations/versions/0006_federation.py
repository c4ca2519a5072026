"""federation (issue 17): peer sites (site id, public key, discovery switches), token ids seen (replay
protection), the log of answered count queries (differencing checks), access requests received (with the
studies an approval froze) and sent

Revision ID: 0006_federation
Revises: 0001
Create Date: 2026-12-03 10:18:55.776435
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_federation'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('federation_incoming',
    sa.Column('incoming_pk', sa.Integer(), nullable=False),
    sa.Column('request_uid', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.String(length=128), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('key_check', sa.String(length=64), nullable=False),
    sa.Column('profile', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=512), nullable=False),
    sa.Column('decided_by', sa.String(length=128), nullable=False),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('local_project', sa.String(length=64), nullable=False),
    sa.Column('deliver_to', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('incoming_pk'),
    sa.UniqueConstraint('request_uid')
    )
    with op.batch_alter_table('federation_incoming', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federation_incoming_site_id'), ['site_id'], unique=False)

    op.create_table('federation_outgoing',
    sa.Column('outgoing_pk', sa.Integer(), nullable=False),
    sa.Column('request_uid', sa.String(length=64), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=512), nullable=False),
    sa.Column('delivery', sa.JSON(), nullable=False),
    sa.Column('last_error', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('outgoing_pk'),
    sa.UniqueConstraint('request_uid')
    )
    with op.batch_alter_table('federation_outgoing', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federation_outgoing_project'), ['project'], unique=False)

    op.create_table('federation_peer',
    sa.Column('peer_pk', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.String(length=128), nullable=False),
    sa.Column('url', sa.String(length=512), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('discovery', sa.Boolean(), nullable=False),
    sa.Column('requests', sa.Boolean(), nullable=False),
    sa.Column('ask', sa.Boolean(), nullable=False),
    sa.Column('delivery_peer', sa.String(length=64), nullable=False),
    sa.Column('ca_file', sa.String(length=512), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('peer_pk'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('site_id')
    )
    op.create_table('federation_query',
    sa.Column('query_pk', sa.Integer(), nullable=False),
    sa.Column('requester', sa.String(length=160), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=False),
    sa.Column('studies', sa.Integer(), nullable=False),
    sa.Column('patients', sa.Integer(), nullable=False),
    sa.Column('members', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('query_pk')
    )
    with op.batch_alter_table('federation_query', schema=None) as batch_op:
        batch_op.create_index('ix_federation_query_released', ['outcome', 'created_at', 'patients'], unique=False)

    op.create_table('federation_request_study',
    sa.Column('request_study_pk', sa.Integer(), nullable=False),
    sa.Column('incoming_pk', sa.Integer(), nullable=False),
    sa.Column('StudyInstanceUID', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('request_study_pk'),
    sa.UniqueConstraint('incoming_pk', 'StudyInstanceUID', name='uq_federation_study')
    )
    with op.batch_alter_table('federation_request_study', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federation_request_study_incoming_pk'), ['incoming_pk'], unique=False)

    op.create_table('federation_token_use',
    sa.Column('use_pk', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.String(length=128), nullable=False),
    sa.Column('jti', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('use_pk'),
    sa.UniqueConstraint('site_id', 'jti', name='uq_federation_jti')
    )
    with op.batch_alter_table('federation_token_use', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federation_token_use_expires_at'), ['expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('federation_token_use', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federation_token_use_expires_at'))

    op.drop_table('federation_token_use')
    with op.batch_alter_table('federation_request_study', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federation_request_study_incoming_pk'))

    op.drop_table('federation_request_study')
    with op.batch_alter_table('federation_query', schema=None) as batch_op:
        batch_op.drop_index('ix_federation_query_released')

    op.drop_table('federation_query')
    op.drop_table('federation_peer')
    with op.batch_alter_table('federation_outgoing', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federation_outgoing_project'))

    op.drop_table('federation_outgoing')
    with op.batch_alter_table('federation_incoming', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federation_incoming_site_id'))

    op.drop_table('federation_incoming')
