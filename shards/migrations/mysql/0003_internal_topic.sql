-- The internal topic's position in each partition's state row (0006 of a Postgres cup):
-- where the worker resumes reading <prefix>.internal (saga legs and privileged commands),
-- moved together with next_offset by the fenced commit (shards/mysql/store.py). IF NOT
-- EXISTS: a migration cut short runs again (shards.mysql.admin.MysqlCupAdmin.migrate).

ALTER TABLE partition_state ADD COLUMN IF NOT EXISTS internal_offset BIGINT NOT NULL DEFAULT 0;
