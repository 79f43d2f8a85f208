-- Draining and removing cups (shards/cluster.py: drain, undrain, remove).
-- A draining cup takes no partition: `shards drain` moves every partition it holds to
-- the other cups, `shards rebalance` and `shards move` never choose it, until
-- `shards undrain`. A removed cup's row is deleted, so the moves that named it keep its
-- id without a reference (their history outlives the cup).

ALTER TABLE cups ADD COLUMN draining boolean NOT NULL DEFAULT false;

ALTER TABLE moves DROP CONSTRAINT moves_source_cup_fkey;
ALTER TABLE moves DROP CONSTRAINT moves_target_cup_fkey;
