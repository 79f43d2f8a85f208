-- Revolving credit (engine.core.credit): the credit book of each partition, one row per
-- entity (kind: 1 = credit line, 2 = loan, 3 = hold, 4 = the partition's calendar). The
-- fenced commit upserts the entities a batch changed (shards/postgres/store.py); a worker
-- loads the open ones at its claim. The entity itself is the body (msgpack); the other
-- columns are what an operator reads without decoding it. Keys: a line's is its customer,
-- a loan's the draw's command id, a hold's the hold's command id, the calendar's empty.

CREATE TABLE credit_book (
    partition   integer  NOT NULL,
    kind        smallint NOT NULL CHECK (kind BETWEEN 1 AND 4),
    entity_key  text     NOT NULL,
    customer_id bigint   NOT NULL,
    currency    text     NOT NULL,
    amount      bigint   NOT NULL,
    is_open     boolean  NOT NULL,
    body        bytea    NOT NULL,
    PRIMARY KEY (partition, kind, entity_key)
);
CREATE INDEX credit_book_open ON credit_book (partition) WHERE is_open;
