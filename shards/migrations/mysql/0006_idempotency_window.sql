-- The idempotency window: as Postgres's 0009 (shards/migrations/postgres): each
-- partition's horizon, moved by the fenced commit, and each record's issue time, by which
-- the owning worker deletes the records its horizon has passed. Each statement runs again
-- after a migration cut short (IF NOT EXISTS).

ALTER TABLE partition_state ADD COLUMN IF NOT EXISTS expired_before_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE command_results ADD COLUMN IF NOT EXISTS issued_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS command_results_by_issue ON command_results (`partition`, issued_at_ms);
