-- Revolving credit: the credit book of each partition (0007 of a Postgres cup), upserted
-- by the fenced commit (shards/mysql/store.py). Keys are command ids or a customer's
-- digits (at most 64 ASCII characters), compared byte for byte; the calendar's key and
-- currency are empty, so the currency is VARCHAR. A body is one small entity (msgpack,
-- well under a kilobyte): BLOB. One statement with its index: a migration cut short runs
-- again (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS credit_book (
    `partition`  INT         NOT NULL,
    kind         SMALLINT    NOT NULL,
    entity_key   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    customer_id  BIGINT      NOT NULL,
    currency     VARCHAR(3)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    amount       BIGINT      NOT NULL,
    is_open      BOOLEAN     NOT NULL,
    body         BLOB        NOT NULL,
    PRIMARY KEY (`partition`, kind, entity_key),
    CONSTRAINT credit_kind_known CHECK (kind BETWEEN 1 AND 4),
    INDEX credit_book_open (`partition`, is_open)
) ENGINE = InnoDB;
