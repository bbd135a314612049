-- One cashier confirmation in raw SQL: the transaction of payments.service.confirm_payment,
-- statement for statement, with its three serialisation points held to commit:
--   the notice row (FOR UPDATE), the receipt counter row of the year, the audit chain head row.
-- Run by bench/confirmations.py against the app's own schema (indexes, checks, triggers) with
--   pgbench -n -M prepared -f bench/pgbench_confirm.sql -D year=YYYY -D first_cashier=ID -D cashiers=N -D outbox=1
-- Every transaction pays a fresh notice: bench_notice_seq hands out the ids of notices inserted for
-- pgbench (a sequence is not transactional and takes no row lock: no extra serialisation point).
-- Not included: what the ORM adds around it (joined department/user and selectin lines of the
-- notice, lazy loads for the response) and the bearer-token lookup; those are the app's overhead.
\set cid :first_cashier + (:client_id % :cashiers)
SELECT nextval('bench_notice_seq') AS nid \gset
BEGIN;
SELECT id, number, status, total, due_date FROM notices WHERE id = :nid FOR UPDATE;
SELECT id AS shift_id FROM cashier_shifts WHERE cashier_id = :cid AND closed_at IS NULL \gset
SAVEPOINT payment;
INSERT INTO payments (notice_id, notice_number_given, channel, method, amount, currency, status, cashier_id,
                      shift_id, paid_at, recorded_at)
  SELECT id, number, 'cashier', 'cash', total, 'CNY', 'confirmed', :cid, :shift_id, now(), now()
  FROM notices WHERE id = :nid RETURNING id AS pid, amount AS amount \gset
RELEASE SAVEPOINT payment;
UPDATE notices SET status = 'paid' WHERE id = :nid;
INSERT INTO receipt_counters (year, last_number) VALUES (:year, 0) ON CONFLICT DO NOTHING;
UPDATE receipt_counters SET last_number = last_number + 1 WHERE year = :year RETURNING last_number AS rseq \gset
INSERT INTO receipts (number, year, sequence, notice_id, payment_id, amount, verification_code, issued_at,
                      issued_by, status)
  VALUES (:year::text || '-' || lpad(:rseq::text, 8, '0'), :year, :rseq, :nid, :pid, :amount,
          upper(substr(md5(:rseq::text), 1, 10)), now(), 'bench', 'valid');
UPDATE audit_chain_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS aseq, last_hash AS prev \gset
INSERT INTO audit_entries (seq, occurred_at, actor_type, actor_id, actor_name, action, entity_type, entity_id,
                           before, after, prev_hash, hash)
  VALUES (:aseq, now(), 'user', :cid, 'bench', 'payment.confirmed', 'payment', :pid::text,
          '{"notice_status":"issued"}', '{"amount":' || :amount::text || ',"channel":"cashier"}', :prev,
          encode(sha256(convert_to(:prev || :aseq::text, 'UTF8')), 'hex'));
UPDATE audit_chain_head SET last_hash = encode(sha256(convert_to(:prev || :aseq::text, 'UTF8')), 'hex')
  WHERE id = 1;
-- The notice.paid event for department systems (core.outbox, from migration 0003 on; -D outbox=0 before).
\if :outbox
INSERT INTO outbox_events (event_id, event_type, payload, created_at)
  VALUES ('evt_' || md5(:pid::text), 'notice.paid',
          '{"type":"notice.paid","data":{"amount":' || :amount::text || ',"receipt_number":"' || :year::text || '-'
          || lpad(:rseq::text, 8, '0') || '"}}', now());
\endif
COMMIT;
