-- rewards-store PostgreSQL schema, version 5: fewer bytes per outcome.
--
-- Each outcome wrote its ruleset stamp (id, version and a 64-hex content
-- hash) into three JSON documents, and its outbox row was a full copy of
-- the event (~0.6 KB). From this version:
--   * a transaction record and an audit event name their ruleset by
--     `ruleset_key` (the interned key postings already use) and their JSON
--     leaves the stamp out; readers join `rulesets` for it;
--   * an outbox row is a pointer to its audit event (`member_key`,
--     `event_seq`); the relay rebuilds the published event from the event
--     row, its postings (the `posting_count` postings from `posting_seq`)
--     and the member's tier after it (`events.tier`).
-- Rows written before keep their documents (`body`, a stamp in the JSON),
-- and readers take those as they are: nothing is rewritten, so the
-- migration is instant and an outbox not yet relayed is published intact.
ALTER TABLE inbox ADD COLUMN ruleset_key integer;
ALTER TABLE events
    ADD COLUMN ruleset_key integer,
    ADD COLUMN tier text,
    ADD COLUMN posting_seq bigint,
    ADD COLUMN posting_count integer;
ALTER TABLE outbox
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN member_key bigint,
    ADD COLUMN event_seq bigint;
