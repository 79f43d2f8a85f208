-- Moves with a pre-copy (shards/moves.py): a move copies the partition's history while
-- the partition keeps running (step 'precopied', before 'paused'), then copies only what
-- changed since while it is paused (the catch-up). precopy_watermark is the input place
-- (the source state row's next_offset + internal_offset) the snapshot of the pre-copy's
-- last round stood at: history rows below it were pre-copied; catch_up_watermark is
-- the one the catch-up used (0: a whole copy, when the pre-copy was made by an earlier
-- mover session).

ALTER TABLE moves DROP CONSTRAINT moves_step_check;
ALTER TABLE moves ADD CONSTRAINT moves_step_check CHECK (step IN
    ('planned', 'precopied', 'paused', 'fenced', 'copied', 'flipped', 'done', 'aborted'));

ALTER TABLE moves
    ADD COLUMN precopy_started_at timestamptz,
    ADD COLUMN precopied_at       timestamptz,
    ADD COLUMN precopy_watermark  bigint,
    ADD COLUMN precopy_rows       bigint,
    ADD COLUMN catch_up_watermark bigint;
