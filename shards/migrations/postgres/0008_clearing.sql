-- Joint lending (engine.core.credit): every movement with a partner bank is a clearing
-- entry, a line of that partner's clearing statement, appended by the fenced commit
-- (shards/postgres/store.py) and never changed. src_offset and entry are the entry's
-- seq and its rank among the entries of its command; business_day is a day number
-- (date.toordinal); kind: 1 = the partner's share of a draw, 2 = of principal repaid,
-- 3 = of interest paid, 4 = the day's net (loan_id '' and customer_id 0). amount is what
-- the originator owes the partner by it (negative: what the partner owes).
--
-- The credit book also holds the partners now (kind 5 of credit_book).

ALTER TABLE credit_book DROP CONSTRAINT credit_book_kind_check,
    ADD CONSTRAINT credit_book_kind_check CHECK (kind BETWEEN 1 AND 5);

CREATE TABLE clearing_entries (
    partition    integer  NOT NULL,
    src_offset   bigint   NOT NULL,
    entry        integer  NOT NULL,
    business_day integer  NOT NULL,
    partner      integer  NOT NULL,
    currency     text     NOT NULL,
    loan_id      text     NOT NULL,
    customer_id  bigint   NOT NULL,
    kind         smallint NOT NULL CHECK (kind BETWEEN 1 AND 4),
    amount       bigint   NOT NULL,
    command_id   text     NOT NULL,
    PRIMARY KEY (partition, src_offset, entry)
);
CREATE INDEX clearing_by_partner_day
    ON clearing_entries (partner, business_day, loan_id, kind, command_id);
