"""A job's life: wall-time limits (job, account default and maximum), progress, scripts
allowed per account, and nodes' Ray id and frameworks. TIMEOUT needs no DDL (the state
column is a VARCHAR).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('account') as batch:
        batch.add_column(sa.Column('default_time_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('max_time_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('allow_scripts', sa.Boolean(), nullable=True))
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('time_limit_s', sa.Float(), nullable=True))
        batch.add_column(sa.Column('progress', sa.JSON(), nullable=True))
    with op.batch_alter_table('node') as batch:
        batch.add_column(sa.Column('ray_id', sa.String(), nullable=True))
        batch.add_column(sa.Column('frameworks', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('node') as batch:
        batch.drop_column('frameworks')
        batch.drop_column('ray_id')
    with op.batch_alter_table('job') as batch:
        batch.drop_column('progress')
        batch.drop_column('time_limit_s')
    with op.batch_alter_table('account') as batch:
        batch.drop_column('allow_scripts')
        batch.drop_column('max_time_s')
        batch.drop_column('default_time_s')
