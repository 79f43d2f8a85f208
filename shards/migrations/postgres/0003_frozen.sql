-- A partition frozen in a cup is being moved out of (or, before the flip, into) it, or
-- has left it: its state row refuses every update that keeps it frozen, so no worker can
-- claim it (the claim bumps the epoch) whatever shard map the worker holds. Commits of
-- the earlier owner already fail the epoch compare-and-set and never reach the trigger.
-- Only the mover thaws a row (abort, or the flip on the target side). After a move the
-- source keeps the frozen row as a tombstone: without it, a claim from a worker on an
-- old map would insert a fresh row and write the partition from offset 0 in a cup that
-- no longer holds it.

ALTER TABLE partition_state ADD COLUMN frozen boolean NOT NULL DEFAULT false;

CREATE FUNCTION refuse_frozen_partition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'partition % is frozen: it is moving or has moved to another cup',
        OLD.partition
        USING ERRCODE = 'object_not_in_prerequisite_state';
END;
$$;

CREATE TRIGGER partition_state_frozen BEFORE UPDATE ON partition_state
    FOR EACH ROW WHEN (OLD.frozen AND NEW.frozen) EXECUTE FUNCTION refuse_frozen_partition();
