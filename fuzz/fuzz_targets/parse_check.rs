//! Parse, check and format arbitrary UTF-8: none of them may panic, hang or
//! overflow the stack, and formatting must be idempotent and keep the tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rewards_dsl::check::diagnose(source);
    if let Ok(formatted) = rewards_dsl::fmt(source) {
        let again = rewards_dsl::fmt(&formatted);
        assert_eq!(again.as_deref(), Ok(formatted.as_str()), "fmt is not idempotent");
        let (a, _) = rewards_dsl::parse(source);
        let (b, _) = rewards_dsl::parse(&formatted);
        assert_eq!(a.items.len(), b.items.len(), "fmt changed the items");
    }
});
