-- The internal topic (<prefix>.internal: saga legs and privileged commands): a partition's
-- worker reads it besides the commands topic, and the state row records where it resumes
-- there too. The fenced commit moves both positions together (shards/postgres/store.py);
-- a move copies both (shards/moves.py).

ALTER TABLE partition_state ADD COLUMN internal_offset bigint NOT NULL DEFAULT 0;
