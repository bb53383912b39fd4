//! The Lua scripts of the cache. Each touches only the two keys of one
//! member (same hash tag, so same cluster slot) and runs atomically on the
//! server, so every compare-and-set costs one round trip.
//!
//! Entry hash fields (`<prefix>:{m:<member>}:bal`):
//!
//! | field  | meaning |
//! |--------|---------|
//! | `v`    | version of the last applied entry, 20 zero-padded digits (string order is number order, exact for every u64) |
//! | `av`   | available points, decimal i64 |
//! | `pe`   | pending points, decimal i64 |
//! | `tier` | tier name; absent when the member has none |
//! | `x`    | `1` on a tombstone (a guard left by an eviction): reads miss, and only a write at version `v` or newer replaces it |
//!
//! The recent list (`<prefix>:{m:<member>}:recent`) holds JSON-encoded
//! recent entries, newest first, at most the configured bound. An entry is
//! always complete: its list holds the member's latest entries up to the
//! bound, as of `v`.
//!
//! No script ever lowers `v`: a stale or out-of-order write is refused,
//! whatever order the network delivers writes in.

use ::redis::Script;

/// `BalanceCache::put`: stores a complete snapshot unless a newer version
/// is held or guarded.
///
/// KEYS: balance hash, recent list. ARGV: 1 version, 2 available,
/// 3 pending, 4 tier flag (`1` has a tier, `0` none), 5 tier, 6 TTL in ms
/// (`0`: none), 7.. recent items, newest first (already bounded).
///
/// Returns `{1, version}` when written, `{0, current}` when refused.
pub(crate) const PUT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and cur > ARGV[1] then
  return {0, cur}
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'av', ARGV[2], 'pe', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'tier', ARGV[5])
end
if #ARGV >= 7 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 7))
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if #ARGV >= 7 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
return {1, ARGV[1]}
"#;

/// Write-through of one commit: LPUSH its new recent entries and LTRIM the
/// list, and set balances and tier, in one step.
///
/// KEYS: balance hash, recent list. ARGV: 1 version, 2 available,
/// 3 pending, 4 tier flag, 5 tier, 6 TTL in ms, 7 recent bound, 8 base
/// version (the member's version before the commit), 9 tombstone TTL in
/// ms, 10.. the new recent items, oldest first.
///
/// - cached version `>=` this one: refused, `{0, current}`;
/// - cached entry complete at exactly the base version (or no entry and
///   base version 0: the member's first entries): extended, `{1, version}`;
/// - anything else (a miss, a tombstone, a gap): the entry cannot be
///   extended without a read of the store, so it becomes a tombstone at
///   this version, `{2, version}`; the next read fills it from the store.
pub(crate) const APPLY: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and cur >= ARGV[1] then
  return {0, cur}
end
local zero = '00000000000000000000'
local extend = false
if cur then
  extend = cur == ARGV[8] and redis.call('HEXISTS', KEYS[1], 'x') == 0
else
  extend = ARGV[8] == zero
end
if not extend then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'x', '1')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[9]))
  return {2, ARGV[1]}
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'av', ARGV[2], 'pe', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'tier', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'tier')
end
if #ARGV >= 10 then
  redis.call('LPUSH', KEYS[2], unpack(ARGV, 10))
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return {1, ARGV[1]}
"#;

/// `BalanceCache::evict`: drops the entry and leaves a tombstone at
/// `max(min_version, cached version)`, so no put of an older snapshot can
/// bring stale data back.
///
/// KEYS: balance hash, recent list. ARGV: 1 minimum version, 2 tombstone
/// TTL in ms. Returns the guarded version (`0`: nothing guarded).
pub(crate) const EVICT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'v')
local v = ARGV[1]
if cur and cur > v then
  v = cur
end
redis.call('DEL', KEYS[1], KEYS[2])
if v ~= '00000000000000000000' then
  redis.call('HSET', KEYS[1], 'v', v, 'x', '1')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return v
"#;

/// Reads an entry atomically: the hash's fields as a flat array, then the
/// recent list, newest first.
pub(crate) const READ: &str = r#"
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"#;

/// The scripts, hashed once (`EVALSHA`, loaded on first `NOSCRIPT`).
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) apply: Script,
    pub(crate) evict: Script,
    pub(crate) read: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            put: Script::new(PUT),
            apply: Script::new(APPLY),
            evict: Script::new(EVICT),
            read: Script::new(READ),
        }
    }
}

/// A version as the scripts compare it: 20 zero-padded digits, so string
/// order is numeric order for every u64.
pub(crate) fn encode_version(version: u64) -> String {
    format!("{version:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_versions_sort_like_numbers() {
        let samples = [0u64, 1, 9, 10, 99, 100, 1 << 53, (1 << 53) + 1, u64::MAX];
        for pair in samples.windows(2) {
            let (a, b) = (encode_version(pair[0]), encode_version(pair[1]));
            assert_eq!(a.len(), 20);
            assert!(a < b, "{a} < {b}");
        }
        assert_eq!(encode_version(42), "00000000000000000042");
        assert_eq!(encode_version(0), "00000000000000000000");
    }
}
