"""Initial schema: accounts, nodes, jobs and their events, usage, API tokens, settings.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Write migrations with plain SQLAlchemy types (sa.String, sa.DateTime(timezone=True),
sa.JSON...), never by importing scheduler.store.models: a migration is frozen history.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('guaranteed_slices', sa.Integer(), nullable=False),
    sa.Column('max_slices', sa.Integer(), nullable=True),
    sa.Column('max_pending', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['account.id'], name=op.f('fk_account_parent_id_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account'))
    )
    op.create_index(op.f('ix_account_name'), 'account', ['name'], unique=True)
    op.create_index(op.f('ix_account_parent_id'), 'account', ['parent_id'], unique=False)

    op.create_table('node',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('gpu_type', sa.String(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('slices_per_gpu', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node')),
    sa.UniqueConstraint('name', name=op.f('uq_node_name'))
    )
    op.create_table('setting',
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_setting'))
    )
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('token_hash', sa.String(), nullable=False),
    sa.Column('prefix', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_api_token_account_id_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    op.create_table('job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(), nullable=False),
    sa.Column('framework', sa.String(), nullable=True),
    sa.Column('mode', sa.String(), nullable=False),
    sa.Column('slices', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', name='jobstate', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(), nullable=True),
    sa.Column('reason_message', sa.String(), nullable=True),
    sa.Column('queue_seq', sa.Float(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('admitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('node', sa.String(), nullable=True),
    sa.Column('gpu', sa.Integer(), nullable=True),
    sa.Column('gpu_slices', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('preemptions', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('error', sa.String(), nullable=True),
    sa.Column('ray_task_id', sa.String(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_job_account_id_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job'))
    )
    op.create_index(op.f('ix_job_account_id'), 'job', ['account_id'], unique=False)
    op.create_index('ix_job_state_account_id', 'job', ['state', 'account_id'], unique=False)

    op.create_table('job_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('message', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_event_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_event'))
    )
    op.create_index(op.f('ix_job_event_job_id'), 'job_event', ['job_id'], unique=False)

    op.create_table('usage_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('slice_seconds', sa.Float(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_usage_record_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_usage_record_job_id_job'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_record'))
    )
    op.create_index(op.f('ix_usage_record_account_id'), 'usage_record', ['account_id'], unique=False)
    op.create_index(op.f('ix_usage_record_at'), 'usage_record', ['at'], unique=False)



def downgrade() -> None:
    op.drop_index(op.f('ix_usage_record_at'), table_name='usage_record')
    op.drop_index(op.f('ix_usage_record_account_id'), table_name='usage_record')

    op.drop_table('usage_record')
    op.drop_index(op.f('ix_job_event_job_id'), table_name='job_event')

    op.drop_table('job_event')
    op.drop_index('ix_job_state_account_id', table_name='job')
    op.drop_index(op.f('ix_job_account_id'), table_name='job')

    op.drop_table('job')
    op.drop_table('api_token')
    op.drop_table('setting')
    op.drop_table('node')
    op.drop_index(op.f('ix_account_parent_id'), table_name='account')
    op.drop_index(op.f('ix_account_name'), table_name='account')

    op.drop_table('account')
