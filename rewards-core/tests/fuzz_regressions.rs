//! Inputs that broke the invariant of the `decode_tx` fuzz target (`fuzz/`,
//! `scripts/fuzz.sh`): whatever the decoder accepts must decode again from
//! its canonical form. Found while writing that invariant; kept as tests.

use rewards_core::Transaction;

fn purchase_at(time: &str) -> String {
    format!(
        r#"{{"id":"t","member":"m","kind":"purchase","amount":"1.00","currency":"USD","mcc":1,"time":"{time}"}}"#
    )
}

/// Whatever the decoder accepts must decode again, to the same
/// transaction, from its canonical form.
fn assert_round_trip_or_refused(message: &str, field: &str) {
    match Transaction::from_json_str(message) {
        Ok(tx) => {
            let canonical = tx.to_json_string();
            let again = Transaction::from_json_str(&canonical);
            assert_eq!(again.as_ref(), Ok(&tx), "canonical form {canonical}");
        }
        Err(e) => assert_eq!(e.field, field, "{e}"),
    }
}

/// decode_tx: a local time in year 9999 with a negative offset is in year
/// 10000 in UTC, which RFC 3339 cannot write: the canonical form was
/// `+10000-01-01T00:00:59Z` and did not decode.
#[test]
fn a_time_past_year_9999_in_utc_is_refused() {
    let message = purchase_at("9999-12-31T23:59:59-00:01");
    assert_round_trip_or_refused(&message, "time");
    let err = Transaction::from_json_str(&message).unwrap_err();
    assert!(err.reason.contains("9999"), "{err}");
}

/// decode_tx: the same at the other end, year 0 with a positive offset.
#[test]
fn a_time_before_year_0_in_utc_is_refused() {
    let message = purchase_at("0000-01-01T00:00:00+00:01");
    assert_round_trip_or_refused(&message, "time");
    assert!(Transaction::from_json_str(&message).is_err());
}

/// The extremes that stay inside years 0000..=9999 in UTC still round-trip.
#[test]
fn times_at_the_edges_of_the_calendar_round_trip() {
    for time in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59+23:59",
        "0000-01-01T00:00:00Z",
        "0000-01-01T00:00:00-23:59",
        "2016-12-31T23:59:60.5+01:00",
    ] {
        let message = purchase_at(time);
        assert_round_trip_or_refused(&message, "time");
        assert!(Transaction::from_json_str(&message).is_ok(), "{time}");
    }
}
