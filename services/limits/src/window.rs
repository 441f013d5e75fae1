//! Window arithmetic: pure functions of a `Window` and an injected clock (Unix milliseconds).
//!
//! * `<N>s`: a fixed window of N seconds aligned to the Unix epoch; window id = floor(now / N).
//! * `day`, `month`: the calendar day / month in UTC; `day+02:00`, `month-05:30` in that UTC
//!   offset (proleptic Gregorian calendar, leap years included).

use crate::proto::unit;

const DAY_MS: i64 = 86_400_000;
/// Longest fixed window accepted: about 317 years, far from any overflow.
const MAX_FIXED_SECONDS: u64 = 10_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// A fixed window of this many seconds (>= 1), aligned to the Unix epoch.
    Fixed { seconds: u64 },
    /// The calendar day at this UTC offset (seconds east of UTC).
    Day { offset_s: i32 },
    /// The calendar month at this UTC offset (seconds east of UTC).
    Month { offset_s: i32 },
}

/// The window that contains one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Identifies the window among the windows of the same spec: the fixed window's index, or the
    /// local date `YYYY-MM-DD` / month `YYYY-MM`.
    pub id: String,
    /// First millisecond of the window (Unix ms).
    pub start_ms: i64,
    /// First millisecond after the window (Unix ms): when the counter resets.
    pub end_ms: i64,
}

impl Window {
    /// Parses the value of a `window` descriptor entry.
    pub fn parse(spec: &str) -> Result<Window, String> {
        if let Some(rest) = spec.strip_prefix("month") {
            return Ok(Window::Month { offset_s: parse_offset(rest, spec)? });
        }
        if let Some(rest) = spec.strip_prefix("day") {
            return Ok(Window::Day { offset_s: parse_offset(rest, spec)? });
        }
        let digits = spec
            .strip_suffix('s')
            .ok_or_else(|| format!("window {spec:?}: expected <N>s, day or month"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("window {spec:?}: expected <N>s, day or month"));
        }
        let seconds: u64 = digits.parse().map_err(|_| format!("window {spec:?}: N out of range"))?;
        if seconds == 0 || seconds > MAX_FIXED_SECONDS {
            return Err(format!("window {spec:?}: N must be 1..={MAX_FIXED_SECONDS}"));
        }
        Ok(Window::Fixed { seconds })
    }

    /// The window for an override unit (`envoy.type.v3.RateLimitUnit`) when the descriptor has no
    /// `window` entry: SECOND, MINUTE, HOUR as fixed windows, DAY and MONTH as UTC calendar ones.
    pub fn from_override_unit(u: i32) -> Option<Window> {
        match u {
            1 => Some(Window::Fixed { seconds: 1 }),
            2 => Some(Window::Fixed { seconds: 60 }),
            3 => Some(Window::Fixed { seconds: 3600 }),
            4 => Some(Window::Day { offset_s: 0 }),
            5 => Some(Window::Month { offset_s: 0 }),
            _ => None,
        }
    }

    /// The spelling `parse` reads back to this window.
    pub fn canonical(&self) -> String {
        match *self {
            Window::Fixed { seconds } => format!("{seconds}s"),
            Window::Day { offset_s: 0 } => "day".to_string(),
            Window::Month { offset_s: 0 } => "month".to_string(),
            Window::Day { offset_s } => format!("day{}", format_offset(offset_s)),
            Window::Month { offset_s } => format!("month{}", format_offset(offset_s)),
        }
    }

    /// `RateLimitResponse.RateLimit.Unit` reported for this window.
    pub fn unit(&self) -> i32 {
        match *self {
            Window::Fixed { seconds: 1 } => unit::SECOND,
            Window::Fixed { seconds: 60 } => unit::MINUTE,
            Window::Fixed { seconds: 3600 } => unit::HOUR,
            Window::Fixed { seconds: 86_400 } | Window::Day { .. } => unit::DAY,
            Window::Month { .. } => unit::MONTH,
            Window::Fixed { .. } => unit::UNKNOWN,
        }
    }

    /// The window containing `now_ms` (Unix milliseconds).
    pub fn span(&self, now_ms: i64) -> Span {
        match *self {
            Window::Fixed { seconds } => {
                // seconds <= MAX_FIXED_SECONDS, so the product fits easily.
                let len = i64::try_from(seconds).unwrap_or(i64::MAX / 4_000).saturating_mul(1000);
                let index = now_ms.div_euclid(len);
                let start_ms = index.saturating_mul(len);
                Span { id: index.to_string(), start_ms, end_ms: start_ms.saturating_add(len) }
            }
            Window::Day { offset_s } => {
                let off = i64::from(offset_s) * 1000;
                let day = now_ms.saturating_add(off).div_euclid(DAY_MS);
                let (y, m, d) = civil_from_days(day);
                Span {
                    id: format!("{y:04}-{m:02}-{d:02}"),
                    start_ms: day * DAY_MS - off,
                    end_ms: (day + 1) * DAY_MS - off,
                }
            }
            Window::Month { offset_s } => {
                let off = i64::from(offset_s) * 1000;
                let day = now_ms.saturating_add(off).div_euclid(DAY_MS);
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Span {
                    id: format!("{y:04}-{m:02}"),
                    start_ms: days_from_civil(y, m, 1) * DAY_MS - off,
                    end_ms: days_from_civil(ny, nm, 1) * DAY_MS - off,
                }
            }
        }
    }
}

/// `""` (UTC) or `+HH:MM` / `-HH:MM` (hours 0..=23, minutes 0..=59) as seconds east of UTC.
fn parse_offset(rest: &str, spec: &str) -> Result<i32, String> {
    if rest.is_empty() {
        return Ok(0);
    }
    let bad = || format!("window {spec:?}: the offset must look like +02:00 or -05:30");
    let (sign, hhmm) = match rest.as_bytes().first() {
        Some(b'+') => (1, rest.get(1..).ok_or_else(bad)?),
        Some(b'-') => (-1, rest.get(1..).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let (hh, mm) = hhmm.split_once(':').ok_or_else(bad)?;
    if hh.len() != 2 || mm.len() != 2 || !hh.bytes().chain(mm.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i32 = hh.parse().map_err(|_| bad())?;
    let m: i32 = mm.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

fn format_offset(offset_s: i32) -> String {
    let sign = if offset_s < 0 { '-' } else { '+' };
    let a = offset_s.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are in range by construction; the fallbacks are unreachable.
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date-time.
    fn ms(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in [-800_000, -1, 0, 59, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        // Known instant: 2026-01-31T23:59:59Z.
        assert_eq!(ms(2026, 1, 31, 23, 59, 59), 1_769_903_999_000);
    }

    #[test]
    fn parse_specs() {
        assert_eq!(Window::parse("30s"), Ok(Window::Fixed { seconds: 30 }));
        assert_eq!(Window::parse("day"), Ok(Window::Day { offset_s: 0 }));
        assert_eq!(Window::parse("month"), Ok(Window::Month { offset_s: 0 }));
        assert_eq!(Window::parse("day+02:00"), Ok(Window::Day { offset_s: 7200 }));
        assert_eq!(Window::parse("month-05:30"), Ok(Window::Month { offset_s: -19_800 }));
        for bad in ["", "s", "0s", "-5s", "5", "5m", "1.5s", "day+2", "day+02:60", "day+24:00", "dayz", "month+", "weeks", "99999999999s"] {
            assert!(Window::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for spec in ["1s", "86400s", "day", "day+02:00", "month-05:30", "month+14:00"] {
            assert_eq!(Window::parse(spec).map(|w| w.canonical()), Ok(spec.to_string()));
        }
    }

    #[test]
    fn units() {
        let u = |s: &str| Window::parse(s).map(|w| w.unit());
        assert_eq!(u("1s"), Ok(unit::SECOND));
        assert_eq!(u("60s"), Ok(unit::MINUTE));
        assert_eq!(u("3600s"), Ok(unit::HOUR));
        assert_eq!(u("86400s"), Ok(unit::DAY));
        assert_eq!(u("day-03:00"), Ok(unit::DAY));
        assert_eq!(u("month"), Ok(unit::MONTH));
        assert_eq!(u("30s"), Ok(unit::UNKNOWN));
        assert_eq!(Window::from_override_unit(2), Some(Window::Fixed { seconds: 60 }));
        assert_eq!(Window::from_override_unit(6), None);
    }

    #[test]
    fn fixed_windows_align_to_the_epoch() {
        let w = Window::Fixed { seconds: 30 };
        let s = w.span(1_000_000_029_999);
        assert_eq!(s.id, (1_000_000_029_999i64 / 30_000).to_string());
        assert_eq!(s.start_ms, 1_000_000_020_000);
        assert_eq!(s.end_ms, 1_000_000_050_000);
        // The first millisecond of a window belongs to it.
        assert_eq!(w.span(1_000_000_050_000).start_ms, 1_000_000_050_000);
        // Before the epoch, floor (not truncation).
        assert_eq!(w.span(-1).id, "-1");
        assert_eq!(w.span(-1).end_ms, 0);
    }

    #[test]
    fn month_end_utc() {
        let m = Window::Month { offset_s: 0 };
        let s = m.span(ms(2026, 1, 31, 23, 59, 59));
        assert_eq!(s.id, "2026-01");
        assert_eq!(s.start_ms, ms(2026, 1, 1, 0, 0, 0));
        assert_eq!(s.end_ms, ms(2026, 2, 1, 0, 0, 0));
        assert_eq!(s.end_ms - ms(2026, 1, 31, 23, 59, 59), 1000);
        // The first second of the month is the new window.
        assert_eq!(m.span(ms(2026, 2, 1, 0, 0, 0)).id, "2026-02");
        // December rolls the year.
        assert_eq!(m.span(ms(2026, 12, 31, 12, 0, 0)).end_ms, ms(2027, 1, 1, 0, 0, 0));
    }

    #[test]
    fn february_and_leap_years() {
        let m = Window::Month { offset_s: 0 };
        // 2028 is a leap year: February has 29 days.
        assert_eq!(m.span(ms(2028, 2, 10, 0, 0, 0)).end_ms, ms(2028, 2, 29, 0, 0, 0) + 86_400_000);
        assert_eq!(m.span(ms(2028, 2, 29, 23, 59, 59)).id, "2028-02");
        // 2026 is not; 2100 is not (century); 2000 was (400 years).
        assert_eq!(m.span(ms(2026, 2, 28, 23, 59, 59)).end_ms, ms(2026, 3, 1, 0, 0, 0));
        assert_eq!(m.span(ms(2100, 2, 28, 12, 0, 0)).end_ms, ms(2100, 3, 1, 0, 0, 0));
        assert_eq!(m.span(ms(2000, 2, 29, 12, 0, 0)).id, "2000-02");
        let d = Window::Day { offset_s: 0 };
        assert_eq!(d.span(ms(2028, 2, 28, 23, 0, 0)).end_ms, ms(2028, 2, 29, 0, 0, 0));
        assert_eq!(d.span(ms(2028, 2, 29, 1, 0, 0)).id, "2028-02-29");
        // Month lengths through a year.
        let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for (i, len) in lengths.iter().enumerate() {
            let mo = u32::try_from(i + 1).unwrap();
            let s = m.span(ms(2027, mo, 15, 0, 0, 0));
            assert_eq!((s.end_ms - s.start_ms) / 86_400_000, *len, "month {mo}");
        }
    }

    #[test]
    fn offsets() {
        // 2026-01-31T23:30Z is already 2026-02-01 01:30 at +02:00: February, ending at
        // 2026-02-28T22:00Z (March 1st, 00:00 at +02:00).
        let east = Window::Month { offset_s: 7200 };
        let s = east.span(ms(2026, 1, 31, 23, 30, 0));
        assert_eq!(s.id, "2026-02");
        assert_eq!(s.start_ms, ms(2026, 1, 31, 22, 0, 0));
        assert_eq!(s.end_ms, ms(2026, 2, 28, 22, 0, 0));
        // 2026-02-01T03:00Z is still January 31st, 21:30 at -05:30.
        let west = Window::Month { offset_s: -19_800 };
        let s = west.span(ms(2026, 2, 1, 3, 0, 0));
        assert_eq!(s.id, "2026-01");
        assert_eq!(s.end_ms, ms(2026, 2, 1, 5, 30, 0));
        let day = Window::Day { offset_s: 7200 };
        let s = day.span(ms(2026, 3, 10, 21, 59, 59));
        assert_eq!(s.id, "2026-03-10");
        assert_eq!(s.end_ms, ms(2026, 3, 10, 22, 0, 0));
        assert_eq!(day.span(ms(2026, 3, 10, 22, 0, 0)).id, "2026-03-11");
    }
}
