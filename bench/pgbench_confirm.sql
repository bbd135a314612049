-- One cashier confirmation in raw SQL: the transaction of payments.service.confirm_payment,
-- statement for statement (as on PostgreSQL, see tests/api/test_confirm_path.py for the order), with
-- its three serialisation points held to commit: the notice row (FOR UPDATE), the receipt counter
-- row of the year, the audit chain head row.
-- Run by bench/confirmations.py against the app's own schema (indexes, checks, triggers) with
--   pgbench -n -M prepared -f bench/pgbench_confirm.sql -D year=YYYY -D first_cashier=ID -D cashiers=N -D outbox=1
-- Every transaction pays a fresh notice: bench_notice_seq hands out the ids of notices inserted for
-- pgbench (a sequence is not transactional and takes no row lock: no extra serialisation point).
-- Not included: the app's Python (HTTP, token, JSON, the MACs) — that is the overhead measured.
\set cid :first_cashier + (:client_id % :cashiers)
SELECT nextval('bench_notice_seq') AS nid \gset
BEGIN;
SELECT n.id, n.number, n.status, n.total, n.due_date, d.code,
       (SELECT s.id FROM cashier_shifts s WHERE s.cashier_id = :cid AND s.closed_at IS NULL) AS shift_id
  FROM notices n JOIN departments d ON n.department_id = d.id WHERE n.id = :nid FOR UPDATE OF n \gset
INSERT INTO payments (notice_id, notice_number_given, channel, method, amount, currency, status, cashier_id,
                      shift_id, paid_at, recorded_at)
  SELECT id, number, 'cashier', 'cash', total, 'CNY', 'confirmed', :cid, :shift_id, now(), now()
  FROM notices WHERE id = :nid ON CONFLICT DO NOTHING RETURNING id AS pid, amount AS amount \gset
UPDATE notices SET status = 'paid' WHERE id = :nid;
UPDATE receipt_counters SET last_number = last_number + 1 WHERE year = :year RETURNING last_number AS rseq \gset
INSERT INTO receipts (number, year, sequence, notice_id, payment_id, amount, verification_code, issued_at,
                      issued_by, status)
  VALUES (:year::text || '-' || lpad(:rseq::text, 8, '0'), :year, :rseq, :nid, :pid, :amount,
          upper(substr(md5(:rseq::text), 1, 10)), now(), 'bench', 'valid') RETURNING id AS rid \gset
UPDATE audit_chain_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS aseq, last_hash AS prev \gset
WITH new_entry AS (
  INSERT INTO audit_entries (seq, occurred_at, actor_type, actor_id, actor_name, action, entity_type, entity_id,
                             before, after, prev_hash, hash)
    VALUES (:aseq, now(), 'user', :cid, 'bench', 'payment.confirmed', 'payment', :pid::text,
            '{"notice_status":"issued"}', '{"amount":' || :amount::text || ',"channel":"cashier"}', :prev,
            encode(sha256(convert_to(:prev || :aseq::text, 'UTF8')), 'hex'))
    RETURNING id)
UPDATE audit_chain_head SET last_hash = encode(sha256(convert_to(:prev || :aseq::text, 'UTF8')), 'hex')
  WHERE id = 1 RETURNING (SELECT id FROM new_entry);
-- The notice.paid event for department systems (core.outbox, from migration 0003 on; -D outbox=0 before).
\if :outbox
INSERT INTO outbox_events (event_id, event_type, payload, created_at)
  VALUES ('evt_' || md5(:pid::text), 'notice.paid',
          '{"type":"notice.paid","data":{"amount":' || :amount::text || ',"receipt_number":"' || :year::text || '-'
          || lpad(:rseq::text, 8, '0') || '"}}', now()) RETURNING id;
\endif
COMMIT;
