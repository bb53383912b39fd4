//! The Redis key layout of the cache.
//!
//! Every key of one member carries the same hash tag, `{m:<member>}`, so a
//! member's keys live in one slot of a Redis Cluster and one Lua script can
//! touch all of them atomically:
//!
//! ```text
//! <prefix>:{m:<member>}:bal      hash: v (version, 20 digits), bal, tier, rc, x
//! <prefix>:{m:<member>}:recent   list: recent transactions, newest first
//! ```
//!
//! The prefix may contain no brace (it would move the hash tag), no glob
//! character (it is matched by `SCAN ... MATCH <prefix>:*`) and no white
//! space, so that tests and deployments sharing one server never see each
//! other's keys.

use std::fmt;

/// The longest key prefix accepted.
pub const MAX_PREFIX_LEN: usize = 64;

/// Why a key prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The prefix is empty.
    #[error("the Redis key prefix must not be empty")]
    Empty,
    /// The prefix is longer than [`MAX_PREFIX_LEN`].
    #[error("the Redis key prefix is {len} bytes long; at most {MAX_PREFIX_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The prefix holds a character that would change the hash tag or the
    /// `SCAN` pattern.
    #[error("the Redis key prefix must not contain {found:?} (braces, glob characters and white space are refused)")]
    BadChar {
        /// The refused character.
        found: char,
    },
}

/// Builds the keys of the cache under one prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// A layout under `prefix` (e.g. `"rewards"`), checked.
    pub fn new(prefix: impl Into<String>) -> Result<KeyLayout, PrefixError> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(PrefixError::Empty);
        }
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(PrefixError::TooLong { len: prefix.len() });
        }
        if let Some(found) = prefix
            .chars()
            .find(|c| matches!(c, '{' | '}' | '*' | '?' | '[' | ']' | '\\') || c.is_whitespace())
        {
            return Err(PrefixError::BadChar { found });
        }
        Ok(KeyLayout { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash holding a member's version, balance and tier.
    pub fn balance(&self, member: &str) -> String {
        format!("{}:{{m:{member}}}:bal", self.prefix)
    }

    /// The list holding a member's recent transactions, newest first.
    pub fn recent(&self, member: &str) -> String {
        format!("{}:{{m:{member}}}:recent", self.prefix)
    }

    /// The `SCAN` pattern matching every key under the prefix (the prefix
    /// holds no glob character, so it needs no escaping).
    pub fn scan_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The member a balance key belongs to, if `key` is one of this layout's
    /// balance keys.
    pub fn member_of_balance_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{m:")?
            .strip_suffix("}:bal")
    }
}

impl fmt::Debug for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLayout({:?})", self.prefix)
    }
}

/// The hash slot (0..16384) Redis Cluster assigns to `key`: CRC16 (XMODEM)
/// of the hash tag when there is a non-empty one, of the whole key otherwise.
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_keys_share_one_slot() {
        let layout = KeyLayout::new("rw-test").unwrap();
        for member in ["m-1", "m-0190", "é", "a}b", "x{y", "}", "{}"] {
            let bal = layout.balance(member);
            let recent = layout.recent(member);
            assert_eq!(
                hash_slot(bal.as_bytes()),
                hash_slot(recent.as_bytes()),
                "{bal} / {recent}"
            );
        }
        assert_eq!(layout.balance("m-1"), "rw-test:{m:m-1}:bal");
        assert_eq!(layout.recent("m-1"), "rw-test:{m:m-1}:recent");
    }

    #[test]
    fn slot_matches_redis_reference_values() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag `{}` does not count: the whole key is hashed.
        assert_eq!(
            hash_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16384
        );
        assert_ne!(hash_slot(b"foo{}{bar}"), hash_slot(b"bar"));
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(KeyLayout::new(""), Err(PrefixError::Empty));
        assert_eq!(
            KeyLayout::new("a{b"),
            Err(PrefixError::BadChar { found: '{' })
        );
        assert_eq!(
            KeyLayout::new("a*"),
            Err(PrefixError::BadChar { found: '*' })
        );
        assert_eq!(
            KeyLayout::new("a b"),
            Err(PrefixError::BadChar { found: ' ' })
        );
        assert!(matches!(
            KeyLayout::new("p".repeat(65)),
            Err(PrefixError::TooLong { len: 65 })
        ));
        assert_eq!(
            KeyLayout::new("rewards").unwrap().scan_pattern(),
            "rewards:*"
        );
    }

    #[test]
    fn balance_keys_name_their_member() {
        let layout = KeyLayout::new("p").unwrap();
        assert_eq!(layout.member_of_balance_key("p:{m:a}b}:bal"), Some("a}b"));
        assert_eq!(layout.member_of_balance_key("p:{m:a}:recent"), None);
        assert_eq!(layout.member_of_balance_key("q:{m:a}:bal"), None);
    }
}
