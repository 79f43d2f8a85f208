-- A MariaDB/MySQL cup: the same tables, columns and constraints as a Postgres cup
-- (shards/migrations/postgres, 0001 to 0005 together), so a move copies a partition
-- between the two by column name. Where MySQL needs another shape:
--   `partition` and `key` are reserved words: always quoted;
--   ids compare byte for byte (ascii_nopad_bin): the default collations ignore case and
--   trailing spaces, and would make "A1" and "a1" one command;
--   timestamps are DATETIME(6) in UTC (every session sets time_zone '+00:00');
--   booleans are BOOLEAN (TINYINT(1)), read back as 0/1;
--   bytes are MEDIUMBLOB: a record is at most worker.message_bytes_max (<= 1 MiB).

CREATE TABLE partition_state (
    `partition`  INT          NOT NULL PRIMARY KEY,
    epoch        BIGINT       NOT NULL DEFAULT 0,
    next_offset  BIGINT       NOT NULL DEFAULT 0,
    owner        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL DEFAULT '',
    updated_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    frozen       BOOLEAN      NOT NULL DEFAULT FALSE
) ENGINE = InnoDB;

CREATE TABLE accounts (
    `partition`  INT      NOT NULL,
    customer_id  BIGINT   NOT NULL,
    account_no   BIGINT   NOT NULL,
    currency     CHAR(3)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    balance      BIGINT   NOT NULL,
    credit_limit BIGINT   NOT NULL,
    status       SMALLINT NOT NULL,
    PRIMARY KEY (`partition`, customer_id, account_no),
    CONSTRAINT credit_limit_not_negative CHECK (credit_limit >= 0),
    CONSTRAINT balance_within_credit_limit CHECK (customer_id = 0 OR balance >= -credit_limit)
) ENGINE = InnoDB;

-- No primary key, as in Postgres: InnoDB clusters the rows on a hidden row id, in
-- insertion order, which is the journal's order.
CREATE TABLE journal (
    `partition`  INT          NOT NULL,
    src_offset   BIGINT       NOT NULL,
    command_id   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    customer_id  BIGINT       NOT NULL,
    account_no   BIGINT       NOT NULL,
    currency     CHAR(3)      CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    amount       BIGINT       NOT NULL,
    CONSTRAINT amount_not_zero CHECK (amount <> 0),
    INDEX journal_by_account (`partition`, customer_id, account_no)
) ENGINE = InnoDB;

CREATE TABLE command_results (
    `partition`  INT          NOT NULL,
    command_id   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    fingerprint  BIGINT       NOT NULL,
    src_offset   BIGINT       NOT NULL,
    result       MEDIUMBLOB   NOT NULL,
    PRIMARY KEY (`partition`, command_id)
) ENGINE = InnoDB;

-- kind: 1 = result, 2 = dead letter.
CREATE TABLE outbox (
    `partition`      INT        NOT NULL,
    src_offset       BIGINT     NOT NULL,
    seq              INT        NOT NULL,
    kind             SMALLINT   NOT NULL,
    `key`            MEDIUMBLOB NULL,
    value            MEDIUMBLOB NOT NULL,
    target_partition INT        NOT NULL DEFAULT 0,
    PRIMARY KEY (`partition`, src_offset, seq)
) ENGINE = InnoDB;

CREATE TABLE transfers_in_flight (
    `partition`    INT          NOT NULL,
    transfer_id    VARCHAR(128) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    from_customer  BIGINT       NOT NULL,
    from_account   BIGINT       NOT NULL,
    to_customer    BIGINT       NOT NULL,
    to_account     BIGINT       NOT NULL,
    amount         BIGINT       NOT NULL,
    currency       CHAR(3)      CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    src_offset     BIGINT       NOT NULL,
    opened_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    answer_json    BOOLEAN      NOT NULL DEFAULT FALSE,
    forwarded_from INT          NOT NULL DEFAULT -1,
    PRIMARY KEY (`partition`, transfer_id),
    CONSTRAINT transfer_amount_positive CHECK (amount > 0),
    INDEX transfers_in_flight_by_age (opened_at)
) ENGINE = InnoDB;
