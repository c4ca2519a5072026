"""lifecycle (issue 14): IOCM rejections, pending deletions, retention rules, last access per study,
erasure requests and their steps, delete requests to peers; the clinical patient on outbox rows

Revision ID: 0003_lifecycle
Revises: 0001
Create Date: 2026-12-03 09:35:03.358736
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_lifecycle'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasure_request',
    sa.Column('request_pk', sa.Integer(), nullable=False),
    sa.Column('PatientID', sa.String(length=64), nullable=False),
    sa.Column('IssuerOfPatientID', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('request_pk')
    )
    op.create_table('erasure_step',
    sa.Column('step_pk', sa.Integer(), nullable=False),
    sa.Column('request_pk', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=80), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('step_pk'),
    sa.UniqueConstraint('request_pk', 'step', name='uq_erasure_step')
    )
    with op.batch_alter_table('erasure_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasure_step_request_pk'), ['request_pk'], unique=False)

    op.create_table('pending_deletion',
    sa.Column('deletion_pk', sa.Integer(), nullable=False),
    sa.Column('object_key', sa.String(length=160), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('StudyInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('SOPInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('deletion_pk')
    )
    with op.batch_alter_table('pending_deletion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_deletion_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_pending_deletion_object_key'), ['object_key'], unique=False)

    op.create_table('rejected_instance',
    sa.Column('rejected_pk', sa.Integer(), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('StudyInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('SeriesInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('SOPInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('SOPClassUID', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=16), nullable=False),
    sa.Column('note_uid', sa.String(length=64), nullable=False),
    sa.Column('rejected_by', sa.String(length=128), nullable=False),
    sa.Column('rejected_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('rejected_pk'),
    sa.UniqueConstraint('partition', 'SOPInstanceUID', name='uq_rejected_instance')
    )
    op.create_table('retention_rule',
    sa.Column('rule_pk', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('modalities', sa.JSON(), nullable=False),
    sa.Column('received_days', sa.Float(), nullable=True),
    sa.Column('accessed_days', sa.Float(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_run_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('rule_pk'),
    sa.UniqueConstraint('name')
    )
    op.create_table('sharing_erasure',
    sa.Column('erasure_pk', sa.Integer(), nullable=False),
    sa.Column('request_pk', sa.Integer(), nullable=False),
    sa.Column('peer', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('peer_StudyInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('instances', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('remaining', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('erasure_pk'),
    sa.UniqueConstraint('request_pk', 'peer', 'project', 'peer_StudyInstanceUID', name='uq_sharing_erasure')
    )
    with op.batch_alter_table('sharing_erasure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sharing_erasure_request_pk'), ['request_pk'], unique=False)

    op.create_table('study_access',
    sa.Column('access_pk', sa.Integer(), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('StudyInstanceUID', sa.String(length=64), nullable=False),
    sa.Column('last_accessed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('access_pk'),
    sa.UniqueConstraint('partition', 'StudyInstanceUID', name='uq_study_access')
    )
    with op.batch_alter_table('sharing_outbox', schema=None) as batch_op:
        # Rows queued before this revision name their patient by patient_pk only (erasure looks there too).
        batch_op.add_column(sa.Column('PatientID', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('IssuerOfPatientID', sa.String(length=64), nullable=False, server_default=''))



def downgrade() -> None:
    with op.batch_alter_table('sharing_outbox', schema=None) as batch_op:
        batch_op.drop_column('IssuerOfPatientID')
        batch_op.drop_column('PatientID')

    op.drop_table('study_access')
    with op.batch_alter_table('sharing_erasure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sharing_erasure_request_pk'))

    op.drop_table('sharing_erasure')
    op.drop_table('retention_rule')
    op.drop_table('rejected_instance')
    with op.batch_alter_table('pending_deletion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_deletion_object_key'))
        batch_op.drop_index(batch_op.f('ix_pending_deletion_created_at'))

    op.drop_table('pending_deletion')
    with op.batch_alter_table('erasure_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasure_step_request_pk'))

    op.drop_table('erasure_step')
    op.drop_table('erasure_request')
