//! Explicit limits on every input, so that no payload or program can make
//! the engine use unbounded time or memory. Units are in the names.

/// Longest id (transaction, member), in characters.
pub const MAX_ID_LEN: usize = 128;
/// Largest encoded transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Most line items on one transaction.
pub const MAX_LINE_ITEMS: usize = 256;
/// Most attributes on one transaction or member profile.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute key (transactions and member profiles), in bytes.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 128;
/// Longest free-text field (merchant, channel, attribute strings), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Largest amount accepted on a transaction, in major units.
pub const MAX_AMOUNT_MAJOR: i64 = 1_000_000_000_000;
/// Largest absolute points value of one adjustment.
pub const MAX_ADJUSTMENT_POINTS: i64 = 1_000_000_000_000;
