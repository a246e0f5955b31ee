"""Pending reasons per (account, size): the loop stores a group's reason once instead of
on every waiting job of the group (a 100k queue had tens of thousands of rows rewritten in
a cycle when reasons flipped). Jobs' own reasons stay on the job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wait_reason',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('slices', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.Column('message', sa.String(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_wait_reason_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'slices', name=op.f('pk_wait_reason'))
    )
    # Group reasons used to be written on every pending job: those become the groups'.
    op.execute("UPDATE job SET reason = NULL, reason_message = NULL WHERE state = 'PENDING' "
               "AND reason IN ('Priority', 'Resources', 'QuotaCap', 'Fragmentation')")


def downgrade() -> None:
    op.drop_table('wait_reason')
