-- rewards-store PostgreSQL schema, version 1.
--
-- Runs with search_path set to the target schema (see migrate.rs), so names
-- are unqualified. Designed for write throughput:
--   * members are addressed by a bigint surrogate key everywhere but in
--     their own row;
--   * the hot append-only tables (postings, events) are keyed by
--     (member_key, seq): one index, which is also the history/audit index;
--   * the inbox and the transaction records share one row per request id
--     (one text primary key, the idempotency key);
--   * partial indexes only on rare states (open authorizations, pending
--     lots, scheduled tiers) and on lots that can still expire;
--   * mutable rows (members, lots, counters, budgets) keep free space for
--     HOT updates.
-- Complex values the ledger owns (receipts, records, audit events) are
-- stored as jsonb next to the columns that queries filter or sum on.

-- Ruleset stamps, interned: postings name a small key instead of repeating
-- the id, version and 64-character content hash.
CREATE TABLE rulesets (
    ruleset_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text    NOT NULL,
    version     bigint  NOT NULL,
    hash        text    NOT NULL,
    UNIQUE (id, version, hash)
);

-- One row per member: the ledger's MemberRecord plus the profile. Its row
-- lock (SELECT ... FOR UPDATE) serialises every writer of one member.
-- version = 0 means "profile only, no entry yet".
CREATE TABLE members (
    member_key          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id           text   NOT NULL UNIQUE,
    version             bigint NOT NULL DEFAULT 0,
    posting_seq         bigint NOT NULL DEFAULT 0,
    available           bigint NOT NULL DEFAULT 0,
    pending             bigint NOT NULL DEFAULT 0,
    tier                text,
    tier_since          timestamptz,
    scheduled_tier      jsonb,
    scheduled_effective timestamptz,
    attributes          jsonb  NOT NULL DEFAULT '{}'
) WITH (fillfactor = 70);
CREATE INDEX members_scheduled ON members (scheduled_effective)
    WHERE scheduled_effective IS NOT NULL;

-- The inbox: one row per request id (transactions, redemptions,
-- adjustments share the namespace). The same id with another fingerprint
-- is a conflict. For transactions `record` holds the ledger's TxRecord
-- (what refunds, settlements and reversals need later); `status` and
-- `lapse_at` are copied out of it for the authorization-lapse sweep.
CREATE TABLE inbox (
    id          text   PRIMARY KEY,
    member_key  bigint NOT NULL,
    fingerprint bytea,
    receipt     jsonb,
    record      jsonb,
    status      text,
    lapse_at    timestamptz
) WITH (fillfactor = 90);
CREATE INDEX inbox_open_authorizations ON inbox (lapse_at)
    WHERE status = 'authorized';

-- Append-only ledger postings. Balances are their sum; `ruleset_key`
-- names the ruleset behind the points.
CREATE TABLE postings (
    member_key  bigint   NOT NULL,
    seq         bigint   NOT NULL,
    posting_id  bytea    NOT NULL,
    source      text     NOT NULL,
    rule        text     NOT NULL,
    rule_seq    integer  NOT NULL,
    kind        text     NOT NULL,
    d_available bigint   NOT NULL,
    d_pending   bigint   NOT NULL,
    available   bigint   NOT NULL,
    pending     bigint   NOT NULL,
    lot         text,
    ruleset_key integer,
    at          timestamptz NOT NULL,
    PRIMARY KEY (member_key, seq)
);

-- Point lots, consumed first-expiring-first by the ledger.
CREATE TABLE lots (
    member_key       bigint NOT NULL,
    id               text   NOT NULL,
    earned_at        timestamptz NOT NULL,
    available_at     timestamptz,
    expires_at       timestamptz,
    status           text   NOT NULL,
    granted          bigint NOT NULL,
    remaining        bigint NOT NULL CHECK (remaining >= 0),
    expired          bigint NOT NULL,
    expired_forgiven bigint NOT NULL,
    PRIMARY KEY (member_key, id)
) WITH (fillfactor = 80);
CREATE INDEX lots_expiring ON lots (expires_at)
    WHERE remaining > 0 AND expires_at IS NOT NULL;
CREATE INDEX lots_pending ON lots (available_at)
    WHERE status = 'pending';

-- Window counters the plans declare (caps, aggregates).
CREATE TABLE counters (
    member_key bigint  NOT NULL,
    name       text    NOT NULL,
    window_key text    NOT NULL,
    value      numeric NOT NULL,
    PRIMARY KEY (member_key, name, window_key)
) WITH (fillfactor = 80);

-- Global campaign budgets. Draws lock the row (in name order) and are
-- trimmed by the ledger to the room left; the write re-checks the limit.
CREATE TABLE budgets (
    name text   PRIMARY KEY,
    lim  bigint,
    used bigint NOT NULL DEFAULT 0 CHECK (used >= 0)
) WITH (fillfactor = 50);

-- The audit trail: one event per applied entry, append-only; seq is the
-- member's version after it.
CREATE TABLE events (
    member_key  bigint NOT NULL,
    seq         bigint NOT NULL,
    source      text   NOT NULL,
    kind        text   NOT NULL,
    at          timestamptz NOT NULL,
    d_available bigint NOT NULL,
    d_pending   bigint NOT NULL,
    body        jsonb  NOT NULL,
    PRIMARY KEY (member_key, seq)
);
