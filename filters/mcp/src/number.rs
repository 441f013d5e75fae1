//! Numbers as argument rules read them: the decimal value the JSON text says, exactly
//! (`1234567890123456789` is not `1234567890123456800`, `1e3` is `1000`, `-0` is `0`,
//! whatever the size), and beside it the IEEE-754 double nearest to it (what JavaScript, and
//! Python for numbers written with a fraction or an exponent, act on). Never through an f64
//! alone: near 1.2e18 one double covers 256 integers.

use std::cmp::Ordering;

/// A decimal number `(-1)^negative × digits × 10^exponent`, normalized: `digits` has no
/// leading or trailing zeros (empty for zero, which is never negative), so two numbers are
/// equal exactly when their fields are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Exponents beyond this (in absolute value) are not read: such numbers are not compared
/// at all (rules treat them as values they cannot read).
const MAX_EXPONENT: i64 = 1 << 48;

impl Decimal {
    /// Reads a decimal number: `[+-]? digits [. digits] [(e|E) [+-]? digits]`, at least one
    /// mantissa digit, where either side of the point may be empty (`5.`, `.5`; JSON numbers
    /// are a subset). `None` for anything else (`NaN`, `inf`, `1_000`, `0x10`, blanks).
    pub fn parse(text: &str) -> Option<Decimal> {
        let b = text.as_bytes();
        let mut at = 0;
        let negative = match b.first() {
            Some(b'-') => {
                at = 1;
                true
            }
            Some(b'+') => {
                at = 1;
                false
            }
            _ => false,
        };
        let mut digits: Vec<u8> = Vec::new();
        let mut exponent: i64 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while let Some(&c) = b.get(at) {
            match c {
                b'0'..=b'9' => {
                    seen_digit = true;
                    if !(digits.is_empty() && c == b'0') {
                        digits.push(c);
                    }
                    if seen_point {
                        exponent -= 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            at += 1;
            // A mantissa this long is not a number anyone meant (bodies are bounded anyway).
            if exponent < -MAX_EXPONENT {
                return None;
            }
        }
        if !seen_digit {
            return None;
        }
        if let Some(b'e' | b'E') = b.get(at) {
            at += 1;
            let exp_negative = match b.get(at) {
                Some(b'-') => {
                    at += 1;
                    true
                }
                Some(b'+') => {
                    at += 1;
                    false
                }
                _ => false,
            };
            let start = at;
            let mut e: i64 = 0;
            while let Some(&c @ b'0'..=b'9') = b.get(at) {
                e = e.saturating_mul(10).saturating_add(i64::from(c - b'0'));
                at += 1;
            }
            if at == start || e > MAX_EXPONENT {
                return None;
            }
            exponent = if exp_negative { exponent - e } else { exponent + e };
        }
        if at != b.len() {
            return None;
        }
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Some(Decimal { negative: false, digits, exponent: 0 });
        }
        if exponent.abs() > MAX_EXPONENT {
            return None;
        }
        Some(Decimal { negative, digits, exponent })
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The magnitude's order: the position of the leading digit, then the digits.
    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let lead = |d: &Decimal| d.exponent + d.digits.len() as i64;
        // Digit strings without trailing zeros: lexicographic order is numeric order once
        // the leading positions agree (a proper prefix is the smaller number).
        lead(self).cmp(&lead(other)).then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Both readings of one number: its exact value and the nearest double (`None` when that
/// double is not finite).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub exact: Decimal,
    pub double: Option<f64>,
}

impl Reading {
    /// `None` when `text` is not a decimal number [`Decimal::parse`] reads.
    pub fn parse(text: &str) -> Option<Reading> {
        let exact = Decimal::parse(text)?;
        // Rust's parse rounds correctly (to nearest, ties to even), whatever the length.
        let double = text.parse::<f64>().ok().filter(|d| d.is_finite());
        Some(Reading { exact, double })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn equal_values_whatever_the_spelling() {
        for (a, b) in [
            ("1", "1.0"),
            ("1000", "1e3"),
            ("1000", "1E+3"),
            ("1000", "10000e-1"),
            ("0", "-0"),
            ("0", "-0.0e-7"),
            ("0.5", ".5"),
            ("5", "5."),
            ("5", "+5"),
            ("007", "7"),
            ("123456789012345678901234567890", "1.23456789012345678901234567890e29"),
        ] {
            assert_eq!(d(a), d(b), "{a} {b}");
            assert_eq!(d(a).cmp(&d(b)), Ordering::Equal);
        }
    }

    #[test]
    fn integers_and_decimals_compare_exactly() {
        assert_ne!(d("9007199254740993"), d("9007199254740992"));
        assert_ne!(d("1234567890123456789"), d("1234567890123456800"));
        assert_eq!(9007199254740993_f64, 9007199254740992_f64, "the doubles are one value");
        assert!(d("1000.0000000000001") > d("1000"));
        assert!(d("999.99999999999999999999") < d("1000"));
        assert!(d("-1000.0000000000001") < d("-1000"));
        assert!(d("18446744073709551616") > d("18446744073709551615"));
        assert!(d("-1e-400") < d("0"));
        assert!(d("1e-400") > d("-0"));
        assert!(d("12") < d("123"));
        assert!(d("0.12") < d("0.123"));
        assert!(d("99") < d("1e2"));
        assert!(d("-99") > d("-1e2"));
        let mut sorted = vec![d("3"), d("-2.5"), d("1e1"), d("0"), d("-1e10"), d("2.999999999999999999999")];
        sorted.sort();
        let expect = vec![d("-1e10"), d("-2.5"), d("0"), d("2.999999999999999999999"), d("3"), d("10")];
        assert_eq!(sorted, expect);
    }

    #[test]
    fn what_is_not_a_number() {
        for bad in ["", "-", "+", ".", "e5", "1e", "1e+", "NaN", "inf", "-Infinity", "1_000", "0x10", " 1", "1 ", "1.2.3", "--1", "1e99999999999999999999"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn readings() {
        let r = Reading::parse("1000.0000000000001").unwrap();
        assert!(r.double.unwrap() > 1000.0, "rounded correctly, not to 1000");
        let r = Reading::parse("1e400").unwrap();
        assert_eq!(r.double, None);
        assert_eq!(Reading::parse("9007199254740993").unwrap().double, Some(9007199254740992.0));
    }
}
