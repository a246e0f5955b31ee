"""A job's unclean scheduler stops in a row: recovery ends a job FAILED, rather than
starting it a third time, once its task was running at two unclean stops of the server
in a row (a job that kills the server must not crash-loop it). Any other end of an
attempt sets the count back to 0.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 00:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('unclean_stops', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('job') as batch:
        batch.drop_column('unclean_stops')
