"""A bank reference reused for other money is kept as a flagged conflict (issue 10, defect 2).

The unique index on (bank_code, bank_reference) made a second callback with an earlier
reference impossible to record, so it was answered "duplicate" and the bank's money was lost.
The index now leaves out payments flagged bank-reference-conflict: a reference still names one
applied transfer, and every reuse of it for other money is kept for finance.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

NOT_A_REFERENCE_CONFLICT = "flag_reason IS NULL OR flag_reason <> 'bank-reference-conflict'"


def upgrade() -> None:
    op.drop_index('uq_payments_bank_reference', table_name='payments')
    op.create_index('uq_payments_bank_reference', 'payments', ['bank_code', 'bank_reference'], unique=True,
                    postgresql_where=sa.text(NOT_A_REFERENCE_CONFLICT),
                    sqlite_where=sa.text(NOT_A_REFERENCE_CONFLICT))


def downgrade() -> None:
    # Refused while conflicts exist: the full index cannot hold them, and they are money to keep.
    op.drop_index('uq_payments_bank_reference', table_name='payments')
    op.create_index('uq_payments_bank_reference', 'payments', ['bank_code', 'bank_reference'], unique=True)
