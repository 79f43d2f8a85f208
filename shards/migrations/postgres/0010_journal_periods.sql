-- The journal partitioned by booking time (declarative partitioning on booked_at), so
-- `smallcups archive` exports a closed period to a file and drops its partition, and
-- the carried-forward opening balances that replace it (journal_openings).
--
-- Partitions: journal_<end> holds the rows booked in [the previous partition's end,
-- <end>) (<end> in seconds since the epoch, aligned on archive.period_seconds except
-- the first: see below); journal_default catches a row no partition covers (a move's
-- row of a period this cup archived already, or a row booked before the worker's
-- housekeeping made its period). journal_add_partition makes the next one, moving
-- rows of its range out of journal_default in the same transaction.
--
-- Existing rows are booked at the migration's time (now(), this transaction's start):
-- they go to the first partition, journal_<U>, from MINVALUE to U = the next whole
-- second. They are archived with the first period that ends after U.
--
-- The append-only guards of 0004 stay: UPDATE, TRUNCATE and DELETE of journal rows are
-- refused on the parent and on every partition (statement triggers fire only on the
-- table a statement names, so each partition gets its own). Dropping an archived
-- period's partition (shards.postgres.journal_periods, after its rows are exported and
-- their sums carried into journal_openings in the same transaction) is the one
-- sanctioned removal besides a frozen partition's.

ALTER TABLE journal RENAME TO journal_unpartitioned;
ALTER INDEX journal_by_account RENAME TO journal_unpartitioned_by_account;
DROP TRIGGER journal_never_updated ON journal_unpartitioned;
DROP TRIGGER journal_never_truncated ON journal_unpartitioned;
DROP TRIGGER journal_deleted_only_when_frozen ON journal_unpartitioned;

CREATE TABLE journal (
    partition   integer     NOT NULL,
    src_offset  bigint      NOT NULL,
    command_id  text        NOT NULL,
    customer_id bigint      NOT NULL,
    account_no  bigint      NOT NULL,
    currency    char(3)     NOT NULL,
    amount      bigint      NOT NULL CHECK (amount <> 0),
    booked_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (booked_at);
CREATE INDEX journal_by_account ON journal (partition, customer_id, account_no);

-- The guards of one table of the journal (the parent or a partition).
CREATE FUNCTION journal_guard(target regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER journal_never_updated BEFORE UPDATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_change()', target);
    EXECUTE format('CREATE TRIGGER journal_never_truncated BEFORE TRUNCATE ON %s'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_change()', target);
    EXECUTE format('CREATE TRIGGER journal_deleted_only_when_frozen AFTER DELETE ON %s'
                   ' REFERENCING OLD TABLE AS removed'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_delete()', target);
END;
$$;

-- The partition of the rows booked in [start_s, end_s) (start_s NULL: from MINVALUE),
-- named journal_<end_s>; rows of that range in journal_default move into it. The
-- journal is locked first (the DDL would lock it anyway): a commit between the look
-- into journal_default and the DDL could put a row there that the DDL refuses.
CREATE FUNCTION journal_add_partition(start_s bigint, end_s bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    name text := format('journal_%s', end_s);
    low  text := CASE WHEN start_s IS NULL THEN '(MINVALUE)'
                      ELSE format('(%L)', to_timestamp(start_s)) END;
    moving boolean;
BEGIN
    LOCK TABLE journal IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM journal_default WHERE booked_at < %L%s)',
                   to_timestamp(end_s),
                   CASE WHEN start_s IS NULL THEN ''
                        ELSE format(' AND booked_at >= %L', to_timestamp(start_s)) END)
        INTO moving;
    IF moving THEN
        ALTER TABLE journal DETACH PARTITION journal_default;
        ALTER TABLE journal_default RENAME TO journal_default_detached;
        CREATE TABLE journal_default PARTITION OF journal DEFAULT;
        PERFORM journal_guard('journal_default');
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF journal FOR VALUES FROM %s TO (%L)',
                   name, low, to_timestamp(end_s));
    PERFORM journal_guard(name::regclass);
    IF moving THEN
        INSERT INTO journal SELECT * FROM journal_default_detached;
        DROP TABLE journal_default_detached;
    END IF;
END;
$$;

CREATE TABLE journal_default PARTITION OF journal DEFAULT;
SELECT journal_guard('journal');
SELECT journal_guard('journal_default');
SELECT journal_add_partition(NULL, floor(extract(epoch FROM now()))::bigint + 1);

INSERT INTO journal (partition, src_offset, command_id, customer_id, account_no, currency,
                     amount, booked_at)
SELECT partition, src_offset, command_id, customer_id, account_no, currency, amount, now()
FROM journal_unpartitioned;
DROP TABLE journal_unpartitioned;

-- Each account's archived sum per period: its balance is the sum of its openings and of
-- its journal rows booked at or after its last opening's period_end (a row booked
-- before is archived, or being archived: counted in the opening). Keyed by partition
-- first, like every cup table, so a move copies it.
CREATE TABLE journal_openings (
    partition   integer     NOT NULL,
    customer_id bigint      NOT NULL,
    account_no  bigint      NOT NULL,
    currency    char(3)     NOT NULL,
    period_end  timestamptz NOT NULL,
    amount      bigint      NOT NULL,
    row_count   bigint      NOT NULL CHECK (row_count > 0),
    PRIMARY KEY (partition, customer_id, account_no, currency, period_end)
);
