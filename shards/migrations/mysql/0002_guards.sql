-- The guards of a Postgres cup (0003 and 0004 there), as row triggers: MySQL has no
-- statement triggers and no transition tables. Each refusal carries its own error
-- number (shards.mysql.errors): 45100 is a passing fault (a frozen partition), 45101 a
-- refused change of the books.

-- A partition frozen in a cup is being moved out of (or, before the flip, into) it, or
-- has left it: its state row refuses every update that keeps it frozen (claims too: an
-- upsert's update fires this trigger). Only the mover thaws a row.
CREATE TRIGGER partition_state_frozen BEFORE UPDATE ON partition_state FOR EACH ROW
BEGIN
    IF OLD.frozen AND NEW.frozen THEN
        SIGNAL SQLSTATE '55000'
            SET MESSAGE_TEXT = 'the partition is frozen: it is moving or has moved to another cup',
                MYSQL_ERRNO = 45100;
    END IF;
END;

-- The journal is append-only: never updated, and deleted only together with a
-- partition that is frozen in this cup (moved away, or a move's copy rolled back).
-- TRUNCATE fires no trigger in MySQL: the cup's user must not hold DROP on it in
-- production (docs/operations.md).
CREATE TRIGGER journal_never_updated BEFORE UPDATE ON journal FOR EACH ROW
    SIGNAL SQLSTATE '23000'
        SET MESSAGE_TEXT = 'journal rows are never changed (UPDATE refused)',
            MYSQL_ERRNO = 45101;

CREATE TRIGGER journal_deleted_only_when_frozen BEFORE DELETE ON journal FOR EACH ROW
BEGIN
    IF NOT EXISTS (SELECT 1 FROM partition_state AS s
                   WHERE s.`partition` = OLD.`partition` AND s.frozen) THEN
        SIGNAL SQLSTATE '23000'
            SET MESSAGE_TEXT = 'journal rows are deleted only with a partition frozen in this cup',
                MYSQL_ERRNO = 45101;
    END IF;
END;
