//! Exact money: micro-credits in an `i64`, checked arithmetic, no floats.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

pub(crate) use crate::limits::{MAX_AMOUNT_CREDITS, MAX_AMOUNT_MICROS, MICROS_PER_CREDIT};

/// An exact amount of credits, stored as micro-credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    pub const fn from_micros(micros: i64) -> Credits {
        Credits(micros)
    }

    /// Whole credits; `InvalidArgument` when the result does not fit.
    pub fn from_credits(credits: i64) -> Result<Credits> {
        credits
            .checked_mul(MICROS_PER_CREDIT)
            .map(Credits)
            .ok_or_else(|| Error::invalid(format!("amount {credits} credits overflows")))
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Credits) -> Result<Credits> {
        self.0.checked_add(other.0).map(Credits).ok_or_else(|| Error::invalid(format!("{self} + {other} overflows")))
    }

    pub fn checked_sub(self, other: Credits) -> Result<Credits> {
        self.0.checked_sub(other.0).map(Credits).ok_or_else(|| Error::invalid(format!("{self} - {other} overflows")))
    }

    pub fn checked_neg(self) -> Result<Credits> {
        self.0.checked_neg().map(Credits).ok_or_else(|| Error::invalid(format!("-({self}) overflows")))
    }

    /// A sum taken in i128 (the report's and the analytics' totals), or
    /// `Internal` naming `what` when it does not fit the 64-bit range.
    pub(crate) fn from_total(total: i128, what: &str) -> Result<Credits> {
        i64::try_from(total).map(Credits).map_err(|_| Error::Internal(format!("{what} exceeds the 64-bit range")))
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// An amount in (0, 10^12] credits.
    pub(crate) fn validate_positive(self, what: &str) -> Result<Credits> {
        if self.0 <= 0 || self.0 > MAX_AMOUNT_MICROS {
            return Err(Error::invalid(format!("{what} must be in (0, {MAX_AMOUNT_CREDITS}] credits, got {self}")));
        }
        Ok(self)
    }

    /// A signed amount (an adjustment): non-zero, at most 10^12 credits in size.
    pub(crate) fn validate_nonzero(self, what: &str) -> Result<Credits> {
        if self.0 == 0 || self.0.unsigned_abs() > MAX_AMOUNT_MICROS as u64 {
            return Err(Error::invalid(format!(
                "{what} must be non-zero and at most {MAX_AMOUNT_CREDITS} credits in size, got {self}"
            )));
        }
        Ok(self)
    }

    /// A threshold in [0, 10^12] credits.
    pub(crate) fn validate_threshold(self, what: &str) -> Result<Credits> {
        if self.0 < 0 || self.0 > MAX_AMOUNT_MICROS {
            return Err(Error::invalid(format!("{what} must be in [0, {MAX_AMOUNT_CREDITS}] credits, got {self}")));
        }
        Ok(self)
    }
}

impl fmt::Display for Credits {
    /// `5000`, `1.5`, `-0.000001`: plain decimal, no exponent, no trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_CREDIT as u64;
        let frac = abs % MICROS_PER_CREDIT as u64;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Longest decimal string accepted; anything longer cannot be a valid amount.
const MAX_DECIMAL_LEN: usize = 64;

impl FromStr for Credits {
    type Err = Error;

    /// Parses `5000`, `-2`, `1.5`, `0.000001`. Rejects exponents, more than
    /// six decimals (never rounds), empty strings and overflow.
    fn from_str(s: &str) -> Result<Credits> {
        let bad = || Error::invalid(format!("not a decimal amount of credits: {:?}", truncate(s)));
        if s.is_empty() || s.len() > MAX_DECIMAL_LEN {
            return Err(bad());
        }
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
            return Err(bad());
        }
        if body.ends_with('.') && frac.is_empty() && whole.is_empty() {
            return Err(bad());
        }
        let frac_trimmed = frac.trim_end_matches('0');
        if frac_trimmed.len() > 6 {
            return Err(Error::invalid(format!("amount {:?} is finer than one micro-credit", truncate(s))));
        }
        let overflow = || Error::invalid(format!("amount {:?} is out of range", truncate(s)));
        let whole_trimmed = whole.trim_start_matches('0');
        if whole_trimmed.len() > 18 {
            return Err(overflow());
        }
        // i128: 18 digits times 10^6 cannot overflow, and the sign is applied
        // before the range check, so i64::MIN (which Display prints) parses.
        let whole_value: i128 =
            if whole_trimmed.is_empty() { 0 } else { whole_trimmed.parse().map_err(|_| overflow())? };
        let frac_value: i128 = format!("{frac_trimmed:0<6}").parse().map_err(|_| bad())?;
        let micros = whole_value * i128::from(MICROS_PER_CREDIT) + frac_value;
        i64::try_from(if negative { -micros } else { micros }).map(Credits).map_err(|_| overflow())
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_plain_decimal() {
        assert_eq!(Credits::from_credits(5000).unwrap().to_string(), "5000");
        assert_eq!(Credits::from_micros(1_500_000).to_string(), "1.5");
        assert_eq!(Credits::from_micros(-1).to_string(), "-0.000001");
        assert_eq!(Credits::from_micros(i64::MIN).to_string(), "-9223372036854.775808");
    }

    #[test]
    fn parse_roundtrip_and_rejects() {
        for s in ["0", "1", "1.5", "-2.25", "0.000001", "9223372036854.775807", "-9223372036854.775808"] {
            let c: Credits = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert_eq!("1.500000".parse::<Credits>().unwrap().micros(), 1_500_000);
        assert_eq!(".5".parse::<Credits>().unwrap().micros(), 500_000);
        for s in [
            "",
            "-",
            ".",
            "1e3",
            "abc",
            "1.0000001",
            "9223372036854.775808",
            "-9223372036854.775809",
            "1 ",
            "--1",
            "0x10",
        ] {
            assert!(s.parse::<Credits>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn checked_arithmetic() {
        let max = Credits::from_micros(i64::MAX);
        assert!(max.checked_add(Credits::from_micros(1)).is_err());
        assert!(Credits::from_micros(i64::MIN).checked_neg().is_err());
        assert!(Credits::from_credits(i64::MAX / 1000).is_err());
        assert!(Credits::from_micros(MAX_AMOUNT_MICROS + 1).validate_positive("x").is_err());
        assert!(Credits::ZERO.validate_positive("x").is_err());
        assert!(Credits::ZERO.validate_threshold("x").is_ok());
    }
}
