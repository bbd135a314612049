"""Audit trail against truncation: TRUNCATE refused, the chain head moves forward only, daily anchors.

Issue 10, defect 3: `audit verify` passed after the newest entries were deleted together with the
head row, or after TRUNCATE (which row-level DELETE triggers never see). Written by hand:
- on PostgreSQL every append-only table refuses TRUNCATE (a statement-level trigger);
- the head row refuses DELETE, and an UPDATE must be one of the two steps of an append
  (core.audit.append_audit): the bump (last_seq + 1, hash unchanged) or the seal (same last_seq,
  last_hash set to the hash of the entry at that seq). A head wound back, or given a hash no entry
  has, is refused on SQLite and PostgreSQL alike;
- `audit_anchors`: the chain head at the end of each business date, published (API and page) so
  that an outsider who saved it can prove later that history was not rewritten. Append-only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.append_only import allow_truncate, drop, refuse, refuse_truncate

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# Every table of 0001–0004 with an append-only (UPDATE/DELETE) trigger, the head and the anchors.
NO_TRUNCATE = (
    "audit_entries", "audit_chain_head", "audit_anchors",
    "notice_lines", "notices", "fee_items",
    "payments", "receipts", "cashier_shifts", "receipt_prints", "certificates",
    "bank_events", "security_events", "outbox_events", "webhook_delivery_attempts",
    "statement_lines", "bank_statements",
)

HEAD_REFUSAL = "feeservice: the audit chain head only moves forward, to an entry that exists"
# The two steps of an append; anything else rewinds, skips or rewrites the chain's end. The seal's
# hash must be the entry's own: that entry was inserted earlier in the same transaction (SQLite)
# or by the same statement (PostgreSQL's WITH new_entry AS (INSERT …) UPDATE audit_chain_head).
BUMP = "NEW.id = OLD.id AND NEW.last_seq = OLD.last_seq + 1 AND NEW.last_hash = OLD.last_hash"
SEAL = ("NEW.id = OLD.id AND NEW.last_seq = OLD.last_seq AND (NEW.last_hash = OLD.last_hash OR EXISTS ("
        "SELECT 1 FROM audit_entries WHERE seq = NEW.last_seq AND hash = NEW.last_hash))")


def upgrade() -> None:
    op.create_table(
        'audit_anchors',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('business_date', sa.Date(), nullable=False),
        sa.Column('last_seq', sa.Integer(), nullable=False),
        sa.Column('last_hash', sa.String(length=64), nullable=False),
        sa.Column('entries', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('last_seq >= 0', name=op.f('ck_audit_anchors_last_seq_not_negative')),
        sa.CheckConstraint('entries >= 0', name=op.f('ck_audit_anchors_entries_not_negative')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_anchors')),
        sa.UniqueConstraint('business_date', name=op.f('uq_audit_anchors_business_date')),
    )
    refuse("audit_anchors", "UPDATE", "DELETE")
    refuse("audit_chain_head", "DELETE")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION feesvc_guard_audit_head() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF {SEAL} THEN RETURN NULL; END IF; "
            f"RAISE EXCEPTION '{HEAD_REFUSAL}' USING ERRCODE = 'restrict_violation'; END $$"
        )
        # AFTER, not BEFORE: the seal's entry is inserted by the same statement, and only an AFTER
        # trigger (run at the statement's end) sees it. The bump is let through by WHEN without
        # queuing a trigger event: it is half of every append, on the payment path.
        op.execute(f"CREATE TRIGGER audit_chain_head_forward_only AFTER UPDATE ON audit_chain_head "
                   f"FOR EACH ROW WHEN (NOT ({BUMP})) EXECUTE FUNCTION feesvc_guard_audit_head()")
    else:
        op.execute(f"CREATE TRIGGER audit_chain_head_forward_only BEFORE UPDATE ON audit_chain_head "
                   f"WHEN NOT (({BUMP}) OR ({SEAL})) BEGIN SELECT RAISE(ABORT, '{HEAD_REFUSAL}'); END")
    refuse_truncate(*NO_TRUNCATE)


def downgrade() -> None:
    allow_truncate(*NO_TRUNCATE)
    drop("audit_chain_head", "audit_chain_head_forward_only")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS feesvc_guard_audit_head()")
    for name in ("audit_chain_head_append_only", "audit_chain_head_no_delete"):
        drop("audit_chain_head", name)
    for name in ("audit_anchors_append_only", "audit_anchors_no_update", "audit_anchors_no_delete"):
        drop("audit_anchors", name)
    op.drop_table('audit_anchors')
