//! Money: an exact decimal amount in an ISO 4217 currency.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Active ISO 4217 codes with two minor units (the common case).
const TWO_DECIMALS: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB \
BRL BSD BTN BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP \
GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP \
LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB \
PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL \
THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL";
/// Active ISO 4217 codes with no minor units.
const ZERO_DECIMALS: &str = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF";
/// Active ISO 4217 codes with three minor units.
const THREE_DECIMALS: &str = "BHD IQD JOD KWD LYD OMR TND";

/// An ISO 4217 currency code, known to the engine, with its minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollar, the most common currency in examples and tests.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");

    /// Parses an upper-case ISO 4217 code (`"USD"`); unknown codes are errors.
    pub fn parse(code: &str) -> Result<Currency, CurrencyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(CurrencyError::NotACode(code.chars().take(16).collect()));
        }
        let currency = Currency([bytes[0], bytes[1], bytes[2]]);
        if currency.table_minor_units().is_none() {
            return Err(CurrencyError::Unknown(code.to_string()));
        }
        Ok(currency)
    }

    fn table_minor_units(self) -> Option<u32> {
        let code = self.code();
        let listed = |table: &str| table.split_ascii_whitespace().any(|c| c == code);
        if listed(TWO_DECIMALS) {
            Some(2)
        } else if listed(ZERO_DECIMALS) {
            Some(0)
        } else if listed(THREE_DECIMALS) {
            Some(3)
        } else {
            None
        }
    }

    /// The code as text.
    pub fn code(&self) -> &str {
        // The bytes were checked to be ASCII upper-case letters on construction.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of digits after the decimal point (2 for USD, 0 for JPY).
    pub fn minor_units(self) -> u32 {
        self.table_minor_units().unwrap_or(2)
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(value: String) -> Result<Self, CurrencyError> {
        Currency::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not three upper-case letters.
    #[error("`{0}` is not an ISO 4217 code (three upper-case letters)")]
    NotACode(String),
    /// Three letters, but not an active ISO 4217 currency.
    #[error("`{0}` is not a known ISO 4217 currency")]
    Unknown(String),
}

/// An exact amount of money in one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in major units (dollars), exact.
    pub amount: Decimal,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount; callers validate scale with [`Money::fits_minor_units`].
    pub fn new(amount: Decimal, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// True when the amount has no more decimals than the currency allows.
    pub fn fits_minor_units(&self) -> bool {
        self.amount.normalize().scale() <= self.currency.minor_units()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("USD"), Ok(Currency::USD));
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert!(matches!(
            Currency::parse("usd"),
            Err(CurrencyError::NotACode(_))
        ));
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(CurrencyError::Unknown(_))
        ));
        assert!(matches!(
            Currency::parse("US"),
            Err(CurrencyError::NotACode(_))
        ));
    }

    #[test]
    fn minor_units_are_checked() {
        assert!(Money::new(dec!(10.50), Currency::USD).fits_minor_units());
        assert!(Money::new(dec!(10.500), Currency::USD).fits_minor_units());
        assert!(!Money::new(dec!(10.505), Currency::USD).fits_minor_units());
        let jpy = Currency::parse("JPY").unwrap();
        assert!(!Money::new(dec!(10.5), jpy).fits_minor_units());
    }
}
