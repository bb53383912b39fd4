//! The wire decoder on arbitrary bytes: it never panics, and whatever it
//! accepts survives the canonical encoding unchanged (an invariant the
//! idempotency fingerprint relies on), and the canonical form is a fixed
//! point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewards_core::Transaction;

fuzz_target!(|data: &[u8]| {
    let Ok(tx) = Transaction::from_json_bytes(data) else {
        return;
    };
    let canonical = tx.to_json_string();
    let again = match Transaction::from_json_str(&canonical) {
        Ok(again) => again,
        Err(e) => panic!("the canonical form {canonical} does not decode: {e}"),
    };
    assert_eq!(again, tx, "the canonical form {canonical} decodes to another transaction");
    assert_eq!(again.to_json_string(), canonical, "the canonical form is not a fixed point");
    assert_eq!(again.fingerprint(), tx.fingerprint());
});
