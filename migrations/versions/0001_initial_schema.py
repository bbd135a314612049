"""Initial schema: staff, audit chain, fee schedule, notices.

Read and edited after autogenerate: the audit head row and the append-only triggers are
written by hand (the same on SQLite and PostgreSQL, apart from trigger syntax).

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 18:58:51.065302
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.append_only import drop, guard_update, refuse

# Facts are never rewritten (ARCHITECTURE.md): these tables refuse UPDATE and/or DELETE in the
# database itself. The audit chain still detects a privileged user who drops the triggers.
APPEND_ONLY = {
    "audit_entries": ("UPDATE", "DELETE"),
    "notice_lines": ("UPDATE", "DELETE"),
    "notices": ("DELETE",),
    "fee_items": ("DELETE",),
}
# Columns of a notice that are facts: only status and the cancellation fields may change.
NOTICE_FACTS = ("number", "department_id", "payer_name", "payer_id_number", "total", "issued_at",
                "issued_by_id", "due_date", "case_reference")
# A notice's status moves only along its state machine (a void returns a paid notice to issued).
NOTICE_TRANSITIONS = {"issued": ("paid", "cancelled", "expired"), "paid": ("issued",),
                      "expired": ("paid", "cancelled")}


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.create_table('audit_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor_type', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_name', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('entity_type', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('seq >= 1', name=op.f('ck_audit_entries_seq_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entries')),
    sa.UniqueConstraint('seq', name=op.f('uq_audit_entries_seq'))
    )
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entries_action'), ['action'], unique=False)

    op.create_table('departments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_departments')),
    sa.UniqueConstraint('code', name=op.f('uq_departments_code'))
    )
    op.create_table('notice_serials',
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_serial', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('region_code', 'year', name=op.f('pk_notice_serials'))
    )
    op.create_table('fee_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('legal_basis', sa.String(length=500), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('effective_to', sa.Date(), nullable=True),
    sa.Column('in_use', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_fee_items_amount_not_negative')),
    sa.CheckConstraint('effective_to IS NULL OR effective_to >= effective_from', name=op.f('ck_fee_items_effective_range')),
    sa.ForeignKeyConstraint(['department_id'], ['departments.id'], name=op.f('fk_fee_items_department_id_departments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fee_items')),
    sa.UniqueConstraint('code', 'effective_from', name='uq_fee_items_code_effective_from')
    )
    with op.batch_alter_table('fee_items', schema=None) as batch_op:
        batch_op.create_index('ix_fee_items_code_range', ['code', 'effective_from', 'effective_to'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role <> 'window' OR department_id IS NOT NULL", name=op.f('ck_users_window_has_department')),
    sa.CheckConstraint("role IN ('window','cashier','finance','admin')", name=op.f('ck_users_role_known')),
    sa.ForeignKeyConstraint(['department_id'], ['departments.id'], name=op.f('fk_users_department_id_departments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_api_tokens_token_hash', ['token_hash'], unique=True)

    op.create_table('notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('serial', sa.BigInteger(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=False),
    sa.Column('case_reference', sa.String(length=64), nullable=True),
    sa.Column('payer_name', sa.String(length=100), nullable=False),
    sa.Column('payer_id_number', sa.String(length=64), nullable=True),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_by_id', sa.Integer(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by_id', sa.Integer(), nullable=True),
    sa.Column('cancel_reason', sa.String(length=500), nullable=True),
    sa.CheckConstraint("currency = 'CNY'", name=op.f('ck_notices_currency_cny')),
    sa.CheckConstraint("status IN ('issued','paid','cancelled','expired')", name=op.f('ck_notices_status_known')),
    sa.CheckConstraint('length(number) = 20', name=op.f('ck_notices_number_length')),
    sa.CheckConstraint('total > 0', name=op.f('ck_notices_total_positive')),
    sa.CheckConstraint('serial BETWEEN 1 AND 9999999999', name=op.f('ck_notices_serial_range')),
    sa.ForeignKeyConstraint(['cancelled_by_id'], ['users.id'], name=op.f('fk_notices_cancelled_by_id_users')),
    sa.ForeignKeyConstraint(['department_id'], ['departments.id'], name=op.f('fk_notices_department_id_departments')),
    sa.ForeignKeyConstraint(['issued_by_id'], ['users.id'], name=op.f('fk_notices_issued_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notices')),
    sa.UniqueConstraint('number', name=op.f('uq_notices_number')),
    sa.UniqueConstraint('region_code', 'year', 'serial', name='uq_notices_region_year_serial')
    )
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.create_index('ix_notices_department_issued', ['department_id', 'issued_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notices_payer_name'), ['payer_name'], unique=False)
        batch_op.create_index('ix_notices_status_due', ['status', 'due_date'], unique=False)

    op.create_table('notice_lines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notice_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('fee_item_id', sa.Integer(), nullable=False),
    sa.Column('fee_code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_amount', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('override_reason', sa.String(length=500), nullable=True),
    sa.CheckConstraint('(override_reason IS NULL AND amount = unit_amount * quantity) OR (override_reason IS NOT NULL AND amount <= unit_amount * quantity)', name=op.f('ck_notice_lines_override_rule')),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_notice_lines_amount_not_negative')),
    sa.CheckConstraint('quantity BETWEEN 1 AND 100000', name=op.f('ck_notice_lines_quantity_range')),
    sa.CheckConstraint('unit_amount >= 0', name=op.f('ck_notice_lines_unit_amount_not_negative')),
    sa.ForeignKeyConstraint(['fee_item_id'], ['fee_items.id'], name=op.f('fk_notice_lines_fee_item_id_fee_items')),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_notice_lines_notice_id_notices')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notice_lines')),
    sa.UniqueConstraint('notice_id', 'position', name='uq_notice_lines_notice_position')
    )
    with op.batch_alter_table('notice_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notice_lines_fee_item_id'), ['fee_item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notice_lines_notice_id'), ['notice_id'], unique=False)


    op.execute("INSERT INTO audit_chain_head (id, last_seq, last_hash) VALUES (1, 0, '" + "0" * 64 + "')")
    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    for table, operations in APPEND_ONLY.items():
        refuse(table, *operations)
    guard_update("notices", "notices_facts_immutable", NOTICE_FACTS, NOTICE_TRANSITIONS)


def downgrade() -> None:
    for table in APPEND_ONLY:
        for name in (f"{table}_append_only", f"{table}_no_update", f"{table}_no_delete"):
            drop(table, name)
    drop("notices", "notices_facts_immutable")
    with op.batch_alter_table('notice_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notice_lines_notice_id'))
        batch_op.drop_index(batch_op.f('ix_notice_lines_fee_item_id'))

    op.drop_table('notice_lines')
    with op.batch_alter_table('notices', schema=None) as batch_op:
        batch_op.drop_index('ix_notices_status_due')
        batch_op.drop_index(batch_op.f('ix_notices_payer_name'))
        batch_op.drop_index('ix_notices_department_issued')

    op.drop_table('notices')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_api_tokens_token_hash')

    op.drop_table('api_tokens')
    op.drop_table('users')
    with op.batch_alter_table('fee_items', schema=None) as batch_op:
        batch_op.drop_index('ix_fee_items_code_range')

    op.drop_table('fee_items')
    op.drop_table('notice_serials')
    op.drop_table('departments')
    with op.batch_alter_table('audit_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_entries_action'))

    op.drop_table('audit_entries')
    op.drop_table('audit_chain_head')
