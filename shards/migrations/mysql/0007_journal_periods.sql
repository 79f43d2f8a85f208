-- The journal partitioned by booking time (0010 of a Postgres cup), as MariaDB's
-- PARTITION BY RANGE COLUMNS: p<end> holds the rows booked in [the previous partition's
-- end, <end>) (<end> in seconds since the epoch, UTC), p_max (MAXVALUE) catches a row
-- booked after every period made so far. A row booked before the first partition's
-- range (a move's row of a period this cup archived already) goes to the first
-- partition: it is archived with it. The worker's housekeeping makes the next periods
-- by splitting p_max (REORGANIZE PARTITION: the rows of p_max move, usually none).
--
-- Existing rows are booked at the migration's time (ADD COLUMN fills them with
-- CURRENT_TIMESTAMP(6)) and go to the first partition, p<U>, U = the next whole second.
-- Both statements run again after a migration cut short (re-partitioning an already
-- partitioned table rebuilds it with a later U).
--
-- The append-only guards of 0002 stay (row triggers of the table: every partition).
-- DROP PARTITION of an archived period (shards.mysql.journal_periods, after its rows are
-- exported and their sums carried into journal_openings) is the one sanctioned removal
-- besides a frozen partition's; it needs the DROP privilege, which the cups' account
-- lacks: archive connects as an account that holds it (archive.mysql_user).

ALTER TABLE journal ADD COLUMN IF NOT EXISTS booked_at DATETIME(6) NOT NULL
    DEFAULT CURRENT_TIMESTAMP(6);

SET @journal_first_end = UNIX_TIMESTAMP() DIV 1 + 1;
SET @journal_partitioning = CONCAT(
    'ALTER TABLE journal PARTITION BY RANGE COLUMNS (booked_at) (',
    'PARTITION p', @journal_first_end, ' VALUES LESS THAN (''',
    FROM_UNIXTIME(@journal_first_end), '''), PARTITION p_max VALUES LESS THAN (MAXVALUE))');
PREPARE journal_partitioning FROM @journal_partitioning;
EXECUTE journal_partitioning;
DEALLOCATE PREPARE journal_partitioning;

-- Each account's archived sum per period (journal_openings of a Postgres cup).
CREATE TABLE IF NOT EXISTS journal_openings (
    `partition`  INT         NOT NULL,
    customer_id  BIGINT      NOT NULL,
    account_no   BIGINT      NOT NULL,
    currency     CHAR(3)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    period_end   DATETIME(6) NOT NULL,
    amount       BIGINT      NOT NULL,
    row_count    BIGINT      NOT NULL,
    PRIMARY KEY (`partition`, customer_id, account_no, currency, period_end),
    CONSTRAINT opening_rows_positive CHECK (row_count > 0)
) ENGINE = InnoDB;
