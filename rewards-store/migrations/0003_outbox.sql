-- rewards-store PostgreSQL schema, version 3: the transactional outbox.
--
-- One row per applied request (transaction, redemption, adjustment),
-- inserted in the same database transaction as its postings, so a row
-- exists exactly when its entry is committed. `body` is the JSON of
-- rewards_core::store::OutboxEvent (field names: docs/storage.md) with
-- "seq": 0; the real position is the `seq` column. A relay reads the
-- oldest rows, publishes them and deletes them (LedgerStore::outbox_fetch
-- and outbox_ack). A member's rows are inserted in version order under the
-- member's row lock, so their seqs increase with the version.
CREATE TABLE outbox (
    seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text NOT NULL
);
