"""Slurm's verbs: a job array's id on its jobs; holds and dependencies (job_gate).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('array_id', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_job_array_id'), ['array_id'], unique=False)
    op.create_table('job_gate',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.Column('after', sa.JSON(none_as_null=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], name=op.f('fk_job_gate_job_id_job'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_job_gate'))
    )


def downgrade() -> None:
    op.drop_table('job_gate')
    with op.batch_alter_table('job') as batch:
        batch.drop_index(batch.f('ix_job_array_id'))
        batch.drop_column('array_id')
