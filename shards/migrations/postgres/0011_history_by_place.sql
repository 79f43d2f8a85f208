-- A move's catch-up (shards/moves.py, shards/partition_copy.py) reads a partition's
-- history in the source, and replaces it in the target, from an input place on
-- (src_offset at or above the pre-copy's watermark): by these indexes that costs the
-- rows written since the pre-copy, not the partition's whole history. Rows are appended
-- in src_offset order per partition, so each index grows at its right edge.
-- (clearing_entries' primary key leads with (partition, src_offset) already.)

CREATE INDEX journal_by_place ON journal (partition, src_offset);
CREATE INDEX command_results_by_place ON command_results (partition, src_offset);
