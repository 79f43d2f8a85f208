-- A cup: the accounts, journal, idempotency records and outbox of the partitions it owns.
-- Every table leads with the partition so a partition's rows can be copied or dropped as one.

CREATE TABLE partition_state (
    partition   integer PRIMARY KEY,
    epoch       bigint  NOT NULL DEFAULT 0,
    next_offset bigint  NOT NULL DEFAULT 0,
    owner       text    NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    partition    integer  NOT NULL,
    customer_id  bigint   NOT NULL,
    account_no   bigint   NOT NULL,
    currency     char(3)  NOT NULL,
    balance      bigint   NOT NULL,
    credit_limit bigint   NOT NULL CHECK (credit_limit >= 0),
    status       smallint NOT NULL,
    PRIMARY KEY (partition, customer_id, account_no)
);

CREATE TABLE journal (
    partition   integer NOT NULL,
    src_offset  bigint  NOT NULL,
    command_id  text    NOT NULL,
    customer_id bigint  NOT NULL,
    account_no  bigint  NOT NULL,
    currency    char(3) NOT NULL,
    amount      bigint  NOT NULL CHECK (amount <> 0)
);
CREATE INDEX journal_by_account ON journal (partition, customer_id, account_no);

CREATE TABLE command_results (
    partition   integer NOT NULL,
    command_id  text    NOT NULL,
    fingerprint bigint  NOT NULL,
    src_offset  bigint  NOT NULL,
    result      bytea   NOT NULL,
    PRIMARY KEY (partition, command_id)
);

-- kind: 1 = result, 2 = dead letter.
CREATE TABLE outbox (
    partition  integer  NOT NULL,
    src_offset bigint   NOT NULL,
    seq        integer  NOT NULL,
    kind       smallint NOT NULL,
    key        bytea,
    value      bytea    NOT NULL,
    PRIMARY KEY (partition, src_offset, seq)
);
