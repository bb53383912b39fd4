//! Every statement the store runs, written once per schema. The schema name
//! is the only interpolated text (validated as a plain identifier by
//! [`validate_schema`](super::config::validate_schema)); every value is a
//! bind parameter, and multi-row writes bind whole columns as arrays
//! (`unnest($1::bigint[], ...)`) so that one prepared statement writes a
//! whole batch in one round trip.

/// The statement texts of one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    // ---- load (inside the unit's transaction) ----
    pub insert_members: String,
    pub drop_new_members: String,
    pub lock_members: String,
    pub inbox_rows: String,
    pub original_rows: String,
    pub lapsed_records: String,
    pub lots: String,
    pub lots_bounded: String,
    pub ensure_budgets: String,
    pub lock_budgets: String,
    pub ruleset_find: String,
    pub ruleset_insert: String,
    // ---- write ----
    pub insert_inbox: String,
    pub update_records: String,
    pub insert_postings: String,
    pub insert_lots: String,
    pub update_lots: String,
    pub add_counters: String,
    pub update_members: String,
    pub update_budgets: String,
    pub insert_events: String,
    pub insert_outbox: String,
    // ---- sweeps: who has something due ----
    pub due_expiry: String,
    pub due_release: String,
    pub due_authorizations: String,
    pub due_tiers: String,
    // ---- reads ----
    pub view_member: String,
    pub view_counters: String,
    pub view_members: String,
    pub members_first: String,
    pub members_after: String,
    pub outbox_fetch: String,
    pub outbox_postings: String,
    pub outbox_ack: String,
    pub view_counters_many: String,
    pub balance: String,
    pub recent: String,
    pub history: String,
    pub audit: String,
    pub put_profile: String,
    pub profile: String,
    pub budget_used: String,
    pub reconcile_totals: String,
    pub reconcile_drift: String,
}

impl Sql {
    /// The statements of `s` (a validated schema name).
    pub(crate) fn new(s: &str) -> Sql {
        Sql {
            // The members the lock found missing, as `lock_members` returns
            // rows; one created meanwhile by another unit is not returned
            // (the unit then runs again and locks it).
            insert_members: format!(
                "INSERT INTO {s}.members (member_id) \
                 SELECT id FROM unnest($1::text[]) AS u(id) ORDER BY id \
                 ON CONFLICT (member_id) DO NOTHING \
                 RETURNING member_key, member_id, version, posting_seq, available, pending, \
                           tier, tier_since, scheduled_tier"
            ),
            drop_new_members: format!(
                "DELETE FROM {s}.members WHERE member_key = ANY($1::bigint[]) AND version = 0"
            ),
            lock_members: format!(
                "SELECT member_key, member_id, version, posting_seq, available, pending, \
                        tier, tier_since, scheduled_tier \
                 FROM {s}.members WHERE member_id = ANY($1::text[]) \
                 ORDER BY member_id FOR UPDATE"
            ),
            inbox_rows: format!(
                "SELECT id, fingerprint, receipt FROM {s}.inbox \
                 WHERE id = ANY($1::text[]) AND fingerprint IS NOT NULL"
            ),
            // A record's stamp is its row's `ruleset_key` (migration 5);
            // records written before carry it in the JSON and have none.
            original_rows: format!(
                "SELECT i.id, m.member_id, i.record, r.id, r.version, r.hash FROM {s}.inbox i \
                 JOIN {s}.members m ON m.member_key = i.member_key \
                 LEFT JOIN {s}.rulesets r ON r.ruleset_key = i.ruleset_key \
                 WHERE i.id = ANY($1::text[])"
            ),
            lapsed_records: format!(
                "SELECT i.id, m.member_id, i.record, r.id, r.version, r.hash FROM {s}.inbox i \
                 JOIN {s}.members m ON m.member_key = i.member_key \
                 LEFT JOIN {s}.rulesets r ON r.ruleset_key = i.ruleset_key \
                 WHERE m.member_id = ANY($1::text[]) AND i.status = 'authorized' \
                   AND i.lapse_at <= $2"
            ),
            // The spendable lots of each member in spend order
            // (`Lot::spend_order`: expiring first, oldest, id bytewise)
            // until the points before a lot reach the member's bound: what
            // a clawback of at most that many points can take. Per member
            // in a LATERAL (a window cannot be pulled up into a join): as a
            // join the planner scanned the whole lots table once the day
            // had grown it (50-75 ms a call at 360k lots, growing). The
            // first `bound` lots always suffice (each holds at least one
            // point), read in order from the partial index
            // `lots_spend_order` (migration 4).
            lots_bounded: format!(
                "SELECT x.member_key, x.id, x.earned_at, x.available_at, x.expires_at, x.status, \
                        x.granted, x.remaining, x.expired, x.expired_forgiven \
                 FROM unnest($1::bigint[], $2::bigint[]) AS b(member_key, bound) \
                 CROSS JOIN LATERAL ( \
                     SELECT l.*, \
                            COALESCE(sum(l.remaining) OVER ( \
                                ORDER BY l.expires_at IS NULL, l.expires_at, l.earned_at, \
                                         l.id COLLATE \"C\" \
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before \
                     FROM (SELECT * FROM {s}.lots l \
                           WHERE l.member_key = b.member_key AND l.remaining > 0 \
                             AND l.status = 'available' \
                           ORDER BY (l.expires_at IS NULL), l.expires_at, l.earned_at, \
                                    l.id COLLATE \"C\" \
                           LIMIT b.bound) l) x \
                 WHERE x.before < b.bound"
            ),
            lots: format!(
                "SELECT member_key, id, earned_at, available_at, expires_at, status, granted, \
                        remaining, expired, expired_forgiven \
                 FROM {s}.lots \
                 WHERE (member_key = ANY($1::bigint[]) AND remaining > 0) \
                    OR (member_key = ANY($2::bigint[]) AND id = ANY($3::text[]))"
            ),
            ensure_budgets: format!(
                "INSERT INTO {s}.budgets (name) \
                 SELECT name FROM unnest($1::text[]) AS u(name) ORDER BY name \
                 ON CONFLICT (name) DO NOTHING"
            ),
            lock_budgets: format!(
                "SELECT name, used FROM {s}.budgets WHERE name = ANY($1::text[]) \
                 ORDER BY name FOR UPDATE"
            ),
            ruleset_find: format!(
                "SELECT ruleset_key FROM {s}.rulesets WHERE id = $1 AND version = $2 AND hash = $3"
            ),
            ruleset_insert: format!(
                "INSERT INTO {s}.rulesets (id, version, hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (id, version, hash) DO NOTHING RETURNING ruleset_key"
            ),
            insert_inbox: format!(
                "INSERT INTO {s}.inbox (id, member_key, fingerprint, receipt, record, status, \
                        lapse_at, ruleset_key) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], \
                                      $5::text[], $6::text[], $7::timestamptz[], $8::int[])"
            ),
            update_records: format!(
                "UPDATE {s}.inbox i SET record = u.record, status = u.status, lapse_at = u.lapse_at, \
                        ruleset_key = u.ruleset_key \
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], \
                             $6::int[]) \
                      AS u(id, member_key, record, status, lapse_at, ruleset_key) \
                 WHERE i.id = u.id AND i.member_key = u.member_key"
            ),
            insert_postings: format!(
                "INSERT INTO {s}.postings (member_key, seq, posting_id, source, rule, rule_seq, kind, \
                        d_available, d_pending, available, pending, lot, ruleset_key, at) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::text[], \
                        $5::text[], $6::int[], $7::text[], $8::bigint[], $9::bigint[], \
                        $10::bigint[], $11::bigint[], $12::text[], $13::int[], $14::timestamptz[])"
            ),
            // New lots (created by the unit) by a plain insert, lots that
            // were loaded and changed by an update: the speculative
            // insertion of an upsert cost an index probe and an extra WAL
            // record per row.
            insert_lots: format!(
                "INSERT INTO {s}.lots (member_key, id, earned_at, available_at, expires_at, status, \
                        granted, remaining, expired, expired_forgiven) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], \
                        $4::timestamptz[], $5::timestamptz[], $6::text[], $7::bigint[], \
                        $8::bigint[], $9::bigint[], $10::bigint[])"
            ),
            update_lots: format!(
                "UPDATE {s}.lots l SET earned_at = u.earned_at, available_at = u.available_at, \
                        expires_at = u.expires_at, status = u.status, granted = u.granted, \
                        remaining = u.remaining, expired = u.expired, \
                        expired_forgiven = u.expired_forgiven \
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
                        $5::timestamptz[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], \
                        $10::bigint[]) \
                      AS u(member_key, id, earned_at, available_at, expires_at, status, granted, \
                           remaining, expired, expired_forgiven) \
                 WHERE l.member_key = u.member_key AND l.id = u.id"
            ),
            add_counters: format!(
                "INSERT INTO {s}.counters AS c (member_key, name, window_key, value) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::numeric[]) \
                 ON CONFLICT (member_key, name, window_key) \
                 DO UPDATE SET value = c.value + EXCLUDED.value"
            ),
            update_members: format!(
                "UPDATE {s}.members m SET version = u.version, posting_seq = u.posting_seq, \
                        available = u.available, pending = u.pending, tier = u.tier, \
                        tier_since = u.tier_since, scheduled_tier = u.scheduled_tier, \
                        scheduled_effective = u.scheduled_effective \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                        $6::bigint[], $7::text[], $8::timestamptz[], $9::jsonb[], \
                        $10::timestamptz[]) \
                      AS u(member_key, expected, version, posting_seq, available, pending, tier, \
                           tier_since, scheduled_tier, scheduled_effective) \
                 WHERE m.member_key = u.member_key AND m.version = u.expected"
            ),
            update_budgets: format!(
                "UPDATE {s}.budgets b SET used = b.used + u.delta, lim = COALESCE(u.lim, b.lim) \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(name, delta, lim) \
                 WHERE b.name = u.name \
                   AND (u.delta <= 0 OR u.lim IS NULL OR b.used + u.delta <= u.lim) \
                 RETURNING b.name"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events (member_key, seq, source, kind, at, d_available, d_pending, \
                        body, ruleset_key, tier, posting_seq, posting_count) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
                        $5::timestamptz[], $6::bigint[], $7::bigint[], $8::text[], $9::int[], \
                        $10::text[], $11::bigint[], $12::int[])"
            ),
            // An outbox row points at its audit event (migration 5).
            insert_outbox: format!(
                "INSERT INTO {s}.outbox (member_key, event_seq) \
                 SELECT member_key, event_seq \
                 FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(member_key, event_seq, n) \
                 ORDER BY n"
            ),
            // The oldest outbox rows with their events (a row written
            // before migration 5 has its `body` and no pointer).
            outbox_fetch: format!(
                "SELECT o.seq, o.body, e.body, r.id, r.version, r.hash, e.tier, o.member_key, \
                        e.posting_seq, e.posting_count \
                 FROM (SELECT * FROM {s}.outbox ORDER BY seq LIMIT $1) o \
                 LEFT JOIN {s}.events e ON e.member_key = o.member_key AND e.seq = o.event_seq \
                 LEFT JOIN {s}.rulesets r ON r.ruleset_key = e.ruleset_key \
                 ORDER BY o.seq"
            ),
            // The postings of outbox events: per event, `count` postings
            // from `first` (an entry's postings have consecutive seqs).
            outbox_postings: format!(
                "SELECT u.n, p.rule, p.kind, p.d_available, p.d_pending, p.lot \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY \
                      AS u(member_key, first, count, n) \
                 JOIN LATERAL (SELECT * FROM {s}.postings p \
                               WHERE p.member_key = u.member_key AND p.seq >= u.first \
                                 AND p.seq < u.first + u.count) p ON true \
                 ORDER BY u.n, p.seq"
            ),
            outbox_ack: format!("DELETE FROM {s}.outbox WHERE seq = ANY($1::bigint[])"),
            due_expiry: format!(
                "SELECT DISTINCT m.member_id FROM {s}.lots l \
                 JOIN {s}.members m ON m.member_key = l.member_key \
                 WHERE l.remaining > 0 AND l.expires_at IS NOT NULL AND l.expires_at <= $1 \
                 ORDER BY 1"
            ),
            due_release: format!(
                "SELECT DISTINCT m.member_id FROM {s}.lots l \
                 JOIN {s}.members m ON m.member_key = l.member_key \
                 WHERE l.status = 'pending' AND l.available_at <= $1 ORDER BY 1"
            ),
            due_authorizations: format!(
                "SELECT DISTINCT m.member_id FROM {s}.inbox i \
                 JOIN {s}.members m ON m.member_key = i.member_key \
                 WHERE i.status = 'authorized' AND i.lapse_at <= $1 ORDER BY 1"
            ),
            due_tiers: format!(
                "SELECT member_id FROM {s}.members \
                 WHERE scheduled_effective IS NOT NULL AND scheduled_effective <= $1 ORDER BY 1"
            ),
            view_member: format!(
                "SELECT member_key, member_id, version, posting_seq, available, pending, \
                        tier, tier_since, scheduled_tier, attributes \
                 FROM {s}.members WHERE member_id = $1"
            ),
            // Counter reads probe the primary key once per wanted key, and
            // the members by their unique id (LATERAL ... LIMIT 1 cannot be
            // flattened into a join; as a join the members table was
            // hash-joined whole, 150 ms a call at 100k members): a
            // generic plan made while the table was small (a fresh schema)
            // would otherwise hash-join every member's counters on
            // (name, window), which took seconds per call as the table grew.
            view_counters: format!(
                "SELECT c.name, c.window_key, c.value \
                 FROM {s}.members m \
                 CROSS JOIN unnest($2::text[], $3::text[]) AS u(name, window_key) \
                 JOIN LATERAL (SELECT c.name, c.window_key, c.value FROM {s}.counters c \
                               WHERE c.member_key = m.member_key AND c.name = u.name \
                                 AND c.window_key = u.window_key LIMIT 1) c ON true \
                 WHERE m.member_id = $1"
            ),
            view_members: format!(
                "SELECT member_key, member_id, version, posting_seq, available, pending, \
                        tier, tier_since, scheduled_tier, attributes \
                 FROM {s}.members WHERE member_id = ANY($1::text[])"
            ),
            // The member walk of the tier review: keyset pagination on the
            // members' unique id (its index gives the order), so a cursor
            // stays valid whatever happens to its row.
            members_first: format!(
                "SELECT member_id FROM {s}.members ORDER BY member_id LIMIT $1"
            ),
            members_after: format!(
                "SELECT member_id FROM {s}.members WHERE member_id > $1 \
                 ORDER BY member_id LIMIT $2"
            ),
            // Each member once (by the unique id, into a small hash
            // table), then one primary-key probe per wanted counter: the
            // member lookup per wanted key was the run's busiest statement.
            view_counters_many: format!(
                "WITH m AS MATERIALIZED (SELECT member_key, member_id FROM {s}.members \
                                         WHERE member_id = ANY($4::text[])) \
                 SELECT m.member_id, c.name, c.window_key, c.value \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(member_id, name, window_key) \
                 JOIN m ON m.member_id = u.member_id \
                 JOIN LATERAL (SELECT c.name, c.window_key, c.value FROM {s}.counters c \
                               WHERE c.member_key = m.member_key AND c.name = u.name \
                                 AND c.window_key = u.window_key LIMIT 1) c ON true"
            ),
            balance: format!(
                "SELECT version, available, pending, tier FROM {s}.members \
                 WHERE member_id = $1 AND version > 0"
            ),
            recent: format!(
                "SELECT e.source, e.kind, e.at, e.d_available, e.d_pending, e.seq \
                 FROM {s}.members m \
                 LEFT JOIN LATERAL (SELECT * FROM {s}.events ev \
                                    WHERE ev.member_key = m.member_key \
                                    ORDER BY ev.seq DESC LIMIT $2) e ON true \
                 WHERE m.member_id = $1 AND m.version > 0 \
                 ORDER BY e.seq DESC"
            ),
            history: format!(
                "SELECT p.seq, p.posting_id, p.source, p.rule, p.rule_seq, p.kind, \
                        p.d_available, p.d_pending, p.available, p.pending, p.lot, \
                        r.id, r.version, r.hash, p.at \
                 FROM {s}.members m \
                 LEFT JOIN LATERAL (SELECT * FROM {s}.postings po \
                                    WHERE po.member_key = m.member_key AND po.seq > $2 \
                                    ORDER BY po.seq LIMIT $3) p ON true \
                 LEFT JOIN {s}.rulesets r ON r.ruleset_key = p.ruleset_key \
                 WHERE m.member_id = $1 AND m.version > 0 \
                 ORDER BY p.seq"
            ),
            audit: format!(
                "SELECT e.body, r.id, r.version, r.hash FROM {s}.members m \
                 LEFT JOIN LATERAL (SELECT * FROM {s}.events ev \
                                    WHERE ev.member_key = m.member_key AND ev.seq > $2 \
                                    ORDER BY ev.seq LIMIT $3) e ON true \
                 LEFT JOIN {s}.rulesets r ON r.ruleset_key = e.ruleset_key \
                 WHERE m.member_id = $1 AND m.version > 0 \
                 ORDER BY e.seq"
            ),
            put_profile: format!(
                "INSERT INTO {s}.members (member_id, attributes) VALUES ($1, $2) \
                 ON CONFLICT (member_id) DO UPDATE SET attributes = EXCLUDED.attributes"
            ),
            profile: format!("SELECT attributes FROM {s}.members WHERE member_id = $1"),
            budget_used: format!("SELECT used FROM {s}.budgets WHERE name = $1"),
            reconcile_totals: format!(
                "SELECT (SELECT count(*) FROM {s}.members WHERE version > 0), \
                        (SELECT count(*) FROM {s}.postings)"
            ),
            reconcile_drift: format!(
                "WITH p AS (SELECT member_key, sum(d_available)::bigint AS a, \
                                   sum(d_pending)::bigint AS pe \
                            FROM {s}.postings GROUP BY member_key), \
                      l AS (SELECT member_key, \
                                   (sum(remaining) FILTER (WHERE status = 'available'))::bigint AS a, \
                                   (sum(remaining) FILTER (WHERE status IN ('pending', 'held')))::bigint AS pe \
                            FROM {s}.lots GROUP BY member_key), \
                      r AS (SELECT m.member_id, m.available, m.pending, \
                                   coalesce(p.a, 0) AS pa, coalesce(p.pe, 0) AS ppe, \
                                   least(m.available, 0) + coalesce(l.a, 0) AS la, \
                                   coalesce(l.pe, 0) AS lpe \
                            FROM {s}.members m \
                            LEFT JOIN p ON p.member_key = m.member_key \
                            LEFT JOIN l ON l.member_key = m.member_key \
                            WHERE m.version > 0) \
                 SELECT member_id, available, pending, pa, ppe, la, lpe FROM r \
                 WHERE (available, pending) IS DISTINCT FROM (pa, ppe) \
                    OR (available, pending) IS DISTINCT FROM (la, lpe) \
                 ORDER BY member_id"
            ),
        }
    }
}
