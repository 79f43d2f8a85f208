-- The control database: which cups exist and which partition lives in which cup.

CREATE TABLE settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE cups (
    cup_id   integer PRIMARY KEY,
    dsn      text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_map (
    partition integer PRIMARY KEY,
    cup_id    integer NOT NULL REFERENCES cups (cup_id),
    version   bigint  NOT NULL
);

CREATE TABLE shard_map_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL
);
