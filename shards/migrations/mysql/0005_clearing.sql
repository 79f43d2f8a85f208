-- Joint lending: each partition's clearing entries, the lines of the partner banks'
-- clearing statements (0008 of a Postgres cup), appended by the fenced commit
-- (shards/mysql/store.py) and never changed. Loan and command ids are at most 64 ASCII
-- characters, compared byte for byte; a day's net has the loan id ''. The credit book
-- also holds the partners now (kind 5). Each statement runs again after a migration cut
-- short (IF EXISTS, IF NOT EXISTS).

ALTER TABLE credit_book DROP CONSTRAINT IF EXISTS credit_kind_known,
    ADD CONSTRAINT credit_kind_known CHECK (kind BETWEEN 1 AND 5);

CREATE TABLE IF NOT EXISTS clearing_entries (
    `partition`   INT         NOT NULL,
    src_offset    BIGINT      NOT NULL,
    entry         INT         NOT NULL,
    business_day  INT         NOT NULL,
    partner       INT         NOT NULL,
    currency      CHAR(3)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    loan_id       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    customer_id   BIGINT      NOT NULL,
    kind          SMALLINT    NOT NULL,
    amount        BIGINT      NOT NULL,
    command_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_nopad_bin NOT NULL,
    PRIMARY KEY (`partition`, src_offset, entry),
    CONSTRAINT clearing_kind_known CHECK (kind BETWEEN 1 AND 4),
    INDEX clearing_by_partner_day (partner, business_day, loan_id, kind, command_id)
) ENGINE = InnoDB;
