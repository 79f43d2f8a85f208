"""``smallcups bench``: the engine beside its baselines, measured in one run.

Modes (one module each), every one on fresh databases and topics:

- ``raw_pipe``: produce the encoded commands, consume and decode them; no database;
- ``db_ceiling``: the store's fenced batch commit fed with batches the pure ledger
  decided in memory beforehand; no Kafka;
- ``engine_1w`` / ``engine_2w``: the real pipeline with 1 or 2 worker processes, from the
  first publish until every result is read back, then the publish-to-result latency of
  an open-loop load at half the rate just measured;
- ``naive``: one process, one database transaction per command;
- ``pgbench``: TPC-B on the same Postgres, default durability.

``loadtest.bench.run`` runs the modes and ``loadtest.bench.report`` prints the table.
"""
