-- Money integrity: guards below the ledger, and what a settle leg is checked against.
-- The ledger never writes what these refuse; they stop a bug (or a hand on the database)
-- from writing it.

-- A customer's balance never sits below -credit_limit. System accounts (customer 0) are
-- the other side of every movement and go below zero by design.
ALTER TABLE accounts ADD CONSTRAINT balance_within_credit_limit
    CHECK (customer_id = 0 OR balance >= -credit_limit);

-- The payer of each transfer in flight (a settle leg must name it) and when it left.
-- Rows from before this migration take their payer from the transfer's debit row.
ALTER TABLE transfers_in_flight
    ADD COLUMN from_customer bigint,
    ADD COLUMN from_account  bigint,
    ADD COLUMN opened_at     timestamptz NOT NULL DEFAULT now();
UPDATE transfers_in_flight AS t
SET from_customer = j.customer_id, from_account = j.account_no
FROM journal AS j
WHERE j.partition = t.partition AND j.command_id = t.transfer_id
  AND j.amount < 0 AND j.customer_id <> 0;
ALTER TABLE transfers_in_flight
    ALTER COLUMN from_customer SET NOT NULL,
    ALTER COLUMN from_account  SET NOT NULL;
CREATE INDEX transfers_in_flight_by_age ON transfers_in_flight (opened_at);

-- The journal is append-only: never updated or truncated, and deleted only together
-- with a partition that is frozen in this cup (moved away, or a move's copy rolled
-- back: shards/moves.py). One check per statement, not per row.
CREATE FUNCTION refuse_journal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journal rows are never changed (% refused)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER journal_never_updated BEFORE UPDATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_change();
CREATE TRIGGER journal_never_truncated BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_change();

CREATE FUNCTION refuse_journal_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM removed AS r
               WHERE NOT EXISTS (SELECT 1 FROM partition_state AS s
                                 WHERE s.partition = r.partition AND s.frozen)) THEN
        RAISE EXCEPTION 'journal rows are deleted only with a partition frozen in this cup'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER journal_deleted_only_when_frozen AFTER DELETE ON journal
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_journal_delete();
