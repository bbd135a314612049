"""Which process does a reconciliation run (issue 10: runs left 'running' are swept).

A run records `worker` (host:pid) and, on PostgreSQL, holds a lease (core/leases.py) while it
works, so that a run whose process was killed is recognised and marked failed instead of staying
'running' for ever.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.drop_column('worker')
