-- A move's catch-up reads and replaces a partition's history from an input place on
-- (0011 of a Postgres cup says why). Each statement runs again after a migration cut
-- short (IF NOT EXISTS).

CREATE INDEX IF NOT EXISTS journal_by_place ON journal (`partition`, src_offset);
CREATE INDEX IF NOT EXISTS command_results_by_place ON command_results (`partition`, src_offset);
