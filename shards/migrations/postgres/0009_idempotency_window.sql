-- The idempotency window (engine.core.ledger, docs/messages.md "Idempotency window").
-- Each partition's horizon moves with the fenced commit (shards/postgres/store.py) and
-- never back; a command issued before it is answered id_expired and never applied, so the
-- records of commands issued before it can go: the owning worker deletes them in small
-- batches (engine.worker.housekeeping), by the index below. Records made before this
-- migration have no issue time (0): they are the first to go, and their commands, which
-- name none, are refused if re-sent (issued_at_ms is required).

ALTER TABLE partition_state ADD COLUMN expired_before_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE command_results ADD COLUMN issued_at_ms bigint NOT NULL DEFAULT 0;
CREATE INDEX command_results_by_issue ON command_results (partition, issued_at_ms);
