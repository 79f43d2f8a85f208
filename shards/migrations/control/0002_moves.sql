-- Moving partitions between cups online (shards/moves.py).
-- A paused partition is being moved: no worker may claim or commit it until the map
-- flips it to its new cup (or the move is aborted). NOTIFY smallcups_shard_map tells
-- the workers that the map has a new version.

ALTER TABLE shard_map ADD COLUMN paused boolean NOT NULL DEFAULT false;

CREATE TABLE moves (
    move_id       bigserial PRIMARY KEY,
    partition     integer NOT NULL,
    source_cup    integer NOT NULL REFERENCES cups (cup_id),
    target_cup    integer NOT NULL REFERENCES cups (cup_id),
    step          text    NOT NULL DEFAULT 'planned' CHECK (step IN
                      ('planned', 'paused', 'fenced', 'copied', 'flipped', 'done', 'aborted')),
    fence_epoch   bigint,
    copied_offset bigint,
    rows_copied   bigint,
    planned_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    paused_at     timestamptz,
    flipped_at    timestamptz,
    resumed_at    timestamptz,
    finished_at   timestamptz,
    CHECK (source_cup <> target_cup)
);

-- One unfinished move per partition, whoever starts it.
CREATE UNIQUE INDEX moves_one_open_per_partition ON moves (partition)
    WHERE step NOT IN ('done', 'aborted');
