-- Where the last clean reconcile stopped, per partition (engine/admin/reconcile.py): the
-- offsets it read to in the commands, internal and results topics, and the commands it
-- consumed whose result was not out yet (transfers in flight), as a msgpack list of ids.
-- The next run reads only what came after. ``topics`` names the topics (their prefix), so
-- two deployments sharing a control database do not share a checkpoint.

CREATE TABLE reconcile_checkpoints (
    topics          text    NOT NULL,
    partition       integer NOT NULL,
    commands_offset bigint  NOT NULL CHECK (commands_offset >= 0),
    internal_offset bigint  NOT NULL CHECK (internal_offset >= 0),
    results_offset  bigint  NOT NULL CHECK (results_offset >= 0),
    unanswered      bytea   NOT NULL,
    saved_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topics, partition)
);
