"""Leader lease; a job's own failures apart from its attempts; token scope; node reason.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 00:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leader_lease',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('holder', sa.String(), nullable=False),
    sa.Column('host', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leader_lease'))
    )
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('failures', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('api_token') as batch:
        batch.add_column(sa.Column('scope', sa.String(), nullable=False, server_default='full'))
    with op.batch_alter_table('node') as batch:
        batch.add_column(sa.Column('reason', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('node') as batch:
        batch.drop_column('reason')
    with op.batch_alter_table('api_token') as batch:
        batch.drop_column('scope')
    with op.batch_alter_table('job') as batch:
        batch.drop_column('failures')
    op.drop_table('leader_lease')
