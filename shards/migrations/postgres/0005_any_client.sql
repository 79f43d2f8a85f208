-- Any Kafka client: a transfer remembers how its command came, so that its final result,
-- published when the settle leg returns, goes back the same way: in JSON if the command
-- was JSON, and naming the partition a worker forwarded it from (-1: none).

ALTER TABLE transfers_in_flight
    ADD COLUMN answer_json    boolean NOT NULL DEFAULT false,
    ADD COLUMN forwarded_from integer NOT NULL DEFAULT -1;
