-- Cross-partition transfers: legs are outbox rows addressed to another partition of the
-- command topic, and the payer's side keeps each transfer in flight until it settles.

ALTER TABLE outbox ADD COLUMN target_partition integer NOT NULL DEFAULT 0;

CREATE TABLE transfers_in_flight (
    partition   integer NOT NULL,
    transfer_id text    NOT NULL,
    to_customer bigint  NOT NULL,
    to_account  bigint  NOT NULL,
    amount      bigint  NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    src_offset  bigint  NOT NULL,
    PRIMARY KEY (partition, transfer_id)
);
