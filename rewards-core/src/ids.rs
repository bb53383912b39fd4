//! Identifiers: validated, cheap-to-clone string ids.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

use crate::limits::MAX_ID_LEN;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds the id, checking it is 1 to 128 characters long, with
            /// no control character and no space at either end.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value: String = value.into();
                check_id(&value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

/// The rules every id follows. Control characters (U+0000 cannot even be
/// stored by PostgreSQL) and surrounding spaces make ids that look equal
/// but are not, in logs, in support tools and between systems.
fn check_id(value: &str) -> Result<(), IdError> {
    let chars = value.chars().count();
    if chars == 0 {
        return Err(IdError::Empty);
    }
    if chars > MAX_ID_LEN {
        return Err(IdError::TooLong { chars });
    }
    if let Some((at, c)) = value.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(IdError::ControlCharacter {
            at,
            code: u32::from(c),
        });
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(IdError::SurroundingSpace);
    }
    Ok(())
}

string_id!(
    /// A transaction id: globally unique, the idempotency key.
    TxId
);
string_id!(
    /// A loyalty member id (also the Kafka partition key).
    MemberId
);

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than the limit.
    #[error("is {chars} characters long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// The id contains a control character.
    #[error("contains the control character U+{code:04X} at character {at}")]
    ControlCharacter {
        /// Its position, in characters from 0.
        at: usize,
        /// Its code point.
        code: u32,
    },
    /// The id begins or ends with white space.
    #[error("must not begin or end with white space")]
    SurroundingSpace,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded() {
        assert_eq!(TxId::new(""), Err(IdError::Empty));
        assert!(TxId::new("a".repeat(128)).is_ok());
        assert_eq!(
            MemberId::new("é".repeat(129)),
            Err(IdError::TooLong { chars: 129 })
        );
        assert_eq!(TxId::new("tx-1").unwrap().as_str(), "tx-1");
        assert_eq!(TxId::new("tx 1").unwrap().as_str(), "tx 1");
        assert_eq!(
            MemberId::new("m\u{0}1"),
            Err(IdError::ControlCharacter { at: 1, code: 0 })
        );
        assert_eq!(
            MemberId::new("m\u{85}"),
            Err(IdError::ControlCharacter { at: 1, code: 0x85 })
        );
        assert_eq!(TxId::new("  "), Err(IdError::SurroundingSpace));
        assert_eq!(TxId::new("tx-1\u{a0}"), Err(IdError::SurroundingSpace));
        assert_eq!(
            TxId::new("tx-1\n"),
            Err(IdError::ControlCharacter { at: 4, code: 10 })
        );
    }
}
