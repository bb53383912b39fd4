//! Strict JSON parsing for messages that carry money: a duplicated key is
//! refused, at any depth.
//!
//! `serde_json` keeps the *last* of two equal keys. A gateway or fraud check
//! in front of the engine may read the *first* one, so
//! `{"amount":"1.00",...,"amount":"900.00"}` would mean two different
//! purchases to two systems. The wire contract therefore refuses such a
//! message, naming the duplicated key's path.
//!
//! The check is a second pass over the text with a visitor that only looks
//! at object keys (the first pass builds the `serde_json::Value`, which
//! cannot tell that a key was overwritten); it allocates only the key list
//! of each object (keys are borrowed unless they contain escapes), and a
//! path is built only when a duplicate is found.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// Where a duplicated key was found: the dotted path of the key (`$` parts
/// are not included: `amount`, `attributes.tier`, `line_items[2].sku`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Dotted path of the second occurrence of the key.
    pub path: String,
}

/// Why [`parse`] refused a text.
#[derive(Debug)]
pub enum StrictError {
    /// The text is not JSON.
    Syntax(serde_json::Error),
    /// The text is JSON, but an object in it has a key twice.
    Duplicate(DuplicateKey),
}

/// Parses `text` as JSON and refuses duplicated object keys at any depth.
pub fn parse(text: &str) -> Result<Value, StrictError> {
    let value: Value = serde_json::from_str(text).map_err(StrictError::Syntax)?;
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    match (Check { found: &found }).deserialize(&mut de) {
        Ok(()) => Ok(value),
        Err(e) => Err(match found.into_inner() {
            Some(parts) => StrictError::Duplicate(DuplicateKey {
                path: join_path(parts),
            }),
            // The first pass accepted the text, so the second cannot fail
            // for another reason; report it as a syntax error all the same.
            None => StrictError::Syntax(e),
        }),
    }
}

/// Path parts innermost first (they are pushed while the error unwinds).
fn join_path(mut parts: Vec<Part>) -> String {
    parts.reverse();
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&k);
            }
            Part::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

enum Part {
    Key(String),
    Index(usize),
}

/// Walks one JSON value, checking the keys of every object in it.
#[derive(Clone, Copy)]
struct Check<'a> {
    /// Set to the path (innermost first) when a duplicate is found.
    found: &'a RefCell<Option<Vec<Part>>>,
}

impl Check<'_> {
    /// Adds `part` to the path of a duplicate found below it.
    fn unwind(self, part: impl FnOnce() -> Part) {
        if let Some(parts) = self.found.borrow_mut().as_mut() {
            parts.push(part());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.unwind(|| Part::Index(index));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Messages have few keys per object (the contract's fields, at most
        // 64 attributes): a linear scan beats hashing at this size.
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if keys.contains(&key) {
                *self.found.borrow_mut() = Some(vec![Part::Key(key.into_owned())]);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            // A scalar value needs no walk, but the visitor handles every
            // kind, so there is nothing to gain from peeking.
            if let Err(e) = map.next_value_seed(self) {
                self.unwind(|| Part::Key(key.to_string()));
                return Err(e);
            }
            keys.push(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> Option<String> {
        match parse(text) {
            Ok(_) => None,
            Err(StrictError::Duplicate(d)) => Some(d.path),
            Err(StrictError::Syntax(e)) => panic!("not JSON: {e}"),
        }
    }

    #[test]
    fn duplicates_are_found_with_their_path() {
        assert_eq!(dup(r#"{"a":1,"b":2,"a":3}"#).as_deref(), Some("a"));
        assert_eq!(
            dup(r#"{"a":1,"attributes":{"x":true,"x":false}}"#).as_deref(),
            Some("attributes.x")
        );
        assert_eq!(
            dup(r#"{"line_items":[{"sku":"a"},{"sku":"b","sku":"c"}]}"#).as_deref(),
            Some("line_items[1].sku")
        );
        // Escapes spell the same key in two ways.
        assert_eq!(
            dup(r#"{"amount":"1","\u0061mount":"2"}"#).as_deref(),
            Some("amount")
        );
    }

    #[test]
    fn distinct_keys_and_numbers_pass() {
        assert_eq!(dup(r#"{"a":1e27,"b":{"a":1.5,"c":[1,{"a":2}]}}"#), None);
        assert_eq!(dup(r#"[{"a":1},{"a":2}]"#), None);
        assert_eq!(dup("3"), None);
        let v = parse(r#"{"n":12345678901234567890.123}"#).unwrap();
        assert_eq!(v["n"].to_string(), "12345678901234567890.123");
    }

    #[test]
    fn not_json_is_a_parse_error() {
        assert!(matches!(parse("{"), Err(StrictError::Syntax(_))));
    }
}
