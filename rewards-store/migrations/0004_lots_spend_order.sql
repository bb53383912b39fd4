-- rewards-store PostgreSQL schema, version 4: spendable lots in spend order.
--
-- A refund or chargeback claws back from a member's spendable lots in
-- spend order (`Lot::spend_order`: expiring first, then oldest, then id
-- bytewise) up to a bound known before the load. With this index the load
-- reads only that prefix (at most `bound` lots, each holding at least one
-- point) instead of reading every lot of the member: a member with a long
-- history (the generated day's hottest had 61,000 lots a tenth of the way
-- through the day, nearly all spent) made each of its refunds read them
-- all. IF NOT EXISTS: an operator
-- may build it beforehand with CREATE INDEX CONCURRENTLY (docs/storage.md).
CREATE INDEX IF NOT EXISTS lots_spend_order ON lots
    (member_key, (expires_at IS NULL), expires_at, earned_at, id COLLATE "C")
    WHERE remaining > 0 AND status = 'available';
