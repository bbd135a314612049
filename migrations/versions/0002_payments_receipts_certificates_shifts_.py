"""Payments, receipts, certificates, cashier shifts, idempotency keys.

Read and edited after autogenerate: append-only triggers added by hand (migrations/append_only.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:08:54.903797
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.append_only import drop, guard_update, refuse

PAYMENT_FACTS = ("notice_id", "notice_number_given", "channel", "method", "amount", "currency", "cashier_id",
                 "shift_id", "bank_code", "bank_reference", "payer_name", "paid_at", "recorded_at")
PAYMENT_TRANSITIONS = {"confirmed": ("refund_due",), "flagged": ("refund_due",), "refund_due": ("refunded",)}
RECEIPT_FACTS = ("number", "year", "sequence", "notice_id", "payment_id", "amount", "verification_code",
                 "issued_at", "issued_by")
RECEIPT_TRANSITIONS = {"valid": ("voided",)}


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_type', sa.String(length=100), nullable=True),
    sa.Column('response_body', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
    sa.UniqueConstraint('client', 'key', name='uq_idempotency_keys_client_key')
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_created_at'), ['created_at'], unique=False)

    op.create_table('receipt_counters',
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_number', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('year', name=op.f('pk_receipt_counters'))
    )
    op.create_table('cashier_shifts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cashier_id', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('declared_cash', sa.BigInteger(), nullable=True),
    sa.Column('recorded_cash', sa.BigInteger(), nullable=True),
    sa.Column('recorded_card', sa.BigInteger(), nullable=True),
    sa.Column('recorded_transfer', sa.BigInteger(), nullable=True),
    sa.Column('recorded_other', sa.BigInteger(), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.CheckConstraint('(closed_at IS NULL) = (declared_cash IS NULL)', name=op.f('ck_cashier_shifts_closed_declares_cash')),
    sa.CheckConstraint('declared_cash IS NULL OR declared_cash >= 0', name=op.f('ck_cashier_shifts_declared_not_negative')),
    sa.ForeignKeyConstraint(['cashier_id'], ['users.id'], name=op.f('fk_cashier_shifts_cashier_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cashier_shifts'))
    )
    with op.batch_alter_table('cashier_shifts', schema=None) as batch_op:
        batch_op.create_index('uq_cashier_shifts_one_open_per_cashier', ['cashier_id'], unique=True, postgresql_where=sa.text('closed_at IS NULL'), sqlite_where=sa.text('closed_at IS NULL'))

    op.create_table('payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notice_id', sa.Integer(), nullable=True),
    sa.Column('notice_number_given', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('flag_reason', sa.String(length=32), nullable=True),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('cashier_id', sa.Integer(), nullable=True),
    sa.Column('shift_id', sa.Integer(), nullable=True),
    sa.Column('bank_code', sa.String(length=32), nullable=True),
    sa.Column('bank_reference', sa.String(length=64), nullable=True),
    sa.Column('payer_name', sa.String(length=100), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('refund_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refund_due_reason', sa.String(length=500), nullable=True),
    sa.Column('refunded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refunded_by_id', sa.Integer(), nullable=True),
    sa.Column('refund_method', sa.String(length=16), nullable=True),
    sa.Column('refund_reference', sa.String(length=64), nullable=True),
    sa.CheckConstraint("channel <> 'bank' OR (bank_code IS NOT NULL AND bank_reference IS NOT NULL)", name=op.f('ck_payments_bank_payment_has_reference')),
    sa.CheckConstraint("channel <> 'cashier' OR (cashier_id IS NOT NULL AND shift_id IS NOT NULL)", name=op.f('ck_payments_cashier_payment_has_shift')),
    sa.CheckConstraint("channel IN ('cashier','bank')", name=op.f('ck_payments_channel_known')),
    sa.CheckConstraint("method IN ('cash','card','transfer','other')", name=op.f('ck_payments_method_known')),
    sa.CheckConstraint("status <> 'confirmed' OR notice_id IS NOT NULL", name=op.f('ck_payments_confirmed_has_notice')),
    sa.CheckConstraint("status <> 'flagged' OR flag_reason IS NOT NULL", name=op.f('ck_payments_flag_has_reason')),
    sa.CheckConstraint("status IN ('confirmed','flagged','refund_due','refunded')", name=op.f('ck_payments_status_known')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_payments_amount_positive')),
    sa.ForeignKeyConstraint(['cashier_id'], ['users.id'], name=op.f('fk_payments_cashier_id_users')),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_payments_notice_id_notices')),
    sa.ForeignKeyConstraint(['refunded_by_id'], ['users.id'], name=op.f('fk_payments_refunded_by_id_users')),
    sa.ForeignKeyConstraint(['shift_id'], ['cashier_shifts.id'], name=op.f('fk_payments_shift_id_cashier_shifts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payments'))
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payments_notice_id'), ['notice_id'], unique=False)
        batch_op.create_index('ix_payments_recorded_at', ['recorded_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_payments_shift_id'), ['shift_id'], unique=False)
        batch_op.create_index('uq_payments_bank_reference', ['bank_code', 'bank_reference'], unique=True)
        batch_op.create_index('uq_payments_one_confirmed_per_notice', ['notice_id'], unique=True, postgresql_where=sa.text("status = 'confirmed'"), sqlite_where=sa.text("status = 'confirmed'"))

    op.create_table('receipts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=16), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('notice_id', sa.Integer(), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('verification_code', sa.String(length=16), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_by', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_by_id', sa.Integer(), nullable=True),
    sa.Column('void_reason', sa.String(length=500), nullable=True),
    sa.CheckConstraint("status = 'valid' OR (voided_at IS NOT NULL AND void_reason IS NOT NULL)", name=op.f('ck_receipts_void_has_reason')),
    sa.CheckConstraint("status IN ('valid','voided')", name=op.f('ck_receipts_status_known')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_receipts_amount_positive')),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_receipts_notice_id_notices')),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], name=op.f('fk_receipts_payment_id_payments')),
    sa.ForeignKeyConstraint(['voided_by_id'], ['users.id'], name=op.f('fk_receipts_voided_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receipts')),
    sa.UniqueConstraint('number', name=op.f('uq_receipts_number')),
    sa.UniqueConstraint('payment_id', name=op.f('uq_receipts_payment_id')),
    sa.UniqueConstraint('year', 'sequence', name='uq_receipts_year_sequence')
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipts_notice_id'), ['notice_id'], unique=False)
        batch_op.create_index('uq_receipts_one_valid_per_notice', ['notice_id'], unique=True, postgresql_where=sa.text("status = 'valid'"), sqlite_where=sa.text("status = 'valid'"))

    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('notice_id', sa.Integer(), nullable=False),
    sa.Column('receipt_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('issued_by_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['issued_by_id'], ['users.id'], name=op.f('fk_certificates_issued_by_id_users')),
    sa.ForeignKeyConstraint(['notice_id'], ['notices.id'], name=op.f('fk_certificates_notice_id_notices')),
    sa.ForeignKeyConstraint(['receipt_id'], ['receipts.id'], name=op.f('fk_certificates_receipt_id_receipts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('notice_id', name=op.f('uq_certificates_notice_id')),
    sa.UniqueConstraint('number', name=op.f('uq_certificates_number')),
    sa.UniqueConstraint('receipt_id', name=op.f('uq_certificates_receipt_id'))
    )
    op.create_table('receipt_prints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('receipt_id', sa.Integer(), nullable=False),
    sa.Column('printed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('printed_by_id', sa.Integer(), nullable=True),
    sa.Column('is_copy', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['printed_by_id'], ['users.id'], name=op.f('fk_receipt_prints_printed_by_id_users')),
    sa.ForeignKeyConstraint(['receipt_id'], ['receipts.id'], name=op.f('fk_receipt_prints_receipt_id_receipts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_receipt_prints'))
    )
    with op.batch_alter_table('receipt_prints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipt_prints_receipt_id'), ['receipt_id'], unique=False)


    for table in ("payments", "receipts", "cashier_shifts"):
        refuse(table, "DELETE")
    for table in ("receipt_prints", "certificates"):
        refuse(table, "UPDATE", "DELETE")
    guard_update("payments", "payments_forward_only", PAYMENT_FACTS, PAYMENT_TRANSITIONS)
    guard_update("receipts", "receipts_forward_only", RECEIPT_FACTS, RECEIPT_TRANSITIONS)


def downgrade() -> None:
    for table in ("payments", "receipts", "cashier_shifts", "receipt_prints", "certificates"):
        for name in (f"{table}_append_only", f"{table}_no_delete", f"{table}_no_update"):
            drop(table, name)
    drop("payments", "payments_forward_only")
    drop("receipts", "receipts_forward_only")
    with op.batch_alter_table('receipt_prints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipt_prints_receipt_id'))

    op.drop_table('receipt_prints')
    op.drop_table('certificates')
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index('uq_receipts_one_valid_per_notice', postgresql_where=sa.text("status = 'valid'"), sqlite_where=sa.text("status = 'valid'"))
        batch_op.drop_index(batch_op.f('ix_receipts_notice_id'))

    op.drop_table('receipts')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('uq_payments_one_confirmed_per_notice', postgresql_where=sa.text("status = 'confirmed'"), sqlite_where=sa.text("status = 'confirmed'"))
        batch_op.drop_index('uq_payments_bank_reference')
        batch_op.drop_index(batch_op.f('ix_payments_shift_id'))
        batch_op.drop_index('ix_payments_recorded_at')
        batch_op.drop_index(batch_op.f('ix_payments_notice_id'))

    op.drop_table('payments')
    with op.batch_alter_table('cashier_shifts', schema=None) as batch_op:
        batch_op.drop_index('uq_cashier_shifts_one_open_per_cashier', postgresql_where=sa.text('closed_at IS NULL'), sqlite_where=sa.text('closed_at IS NULL'))

    op.drop_table('cashier_shifts')
    op.drop_table('receipt_counters')
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_created_at'))

    op.drop_table('idempotency_keys')
