//! Counting windows: fixed ones of N seconds aligned to the Unix epoch, and calendar days and
//! months in UTC or at a fixed UTC offset (a "$500 per month" budget resets at the first
//! second of the month, not 30 days after the epoch's multiple).
//!
//! The same windows are computed by the fleet-wide store (`services/limits`), which gets them
//! as the descriptor entry `window` = [`Window::descriptor`]; both sides must agree, so the
//! arithmetic is plain integer code with unit tests at the edges (month ends, leap years,
//! offsets).

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Calendar unit of a calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Day,
    Month,
}

/// One window rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `secs` seconds, aligned to the Unix epoch (`60` resets at every whole minute).
    Fixed { secs: u64 },
    /// A calendar day or month at `offset_secs` east of UTC.
    Calendar { unit: Calendar, offset_secs: i32 },
}

const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Window {
    pub fn fixed(secs: u64) -> Self {
        Window::Fixed { secs: secs.max(1) }
    }

    /// The window holding `now` (Unix seconds): `[start, end)` in Unix seconds.
    pub fn bounds(self, now: u64) -> (u64, u64) {
        match self {
            Window::Fixed { secs } => {
                let secs = secs.max(1);
                let start = now - now % secs;
                (start, start.saturating_add(secs))
            }
            Window::Calendar { unit, offset_secs } => {
                let offset = i64::from(offset_secs);
                let local = i64::try_from(now).unwrap_or(i64::MAX) + offset;
                let day = local.div_euclid(DAY);
                let (start_day, end_day) = match unit {
                    Calendar::Day => (day, day + 1),
                    Calendar::Month => {
                        let (year, month, _) = civil_from_days(day);
                        let next = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                        (days_from_civil(year, month, 1), days_from_civil(next.0, next.1, 1))
                    }
                };
                let to_unix = |d: i64| u64::try_from(d * DAY - offset).unwrap_or(0);
                (to_unix(start_day), to_unix(end_day))
            }
        }
    }

    /// Seconds from `now` to the window's end (at least 1: a `Retry-After` of 0 invites a
    /// busy loop).
    pub fn reset_secs(self, now: u64) -> u64 {
        self.bounds(now).1.saturating_sub(now).max(1)
    }

    /// The window's length in seconds, for messages (a month's varies: the current one).
    pub fn length_secs(self, now: u64) -> u64 {
        let (start, end) = self.bounds(now);
        end - start
    }

    /// The descriptor entry value the store computes the same window from:
    /// `60s`, `day`, `month`, `month+02:00`, `day-05:30`.
    pub fn descriptor(self) -> String {
        match self {
            Window::Fixed { secs } => format!("{secs}s"),
            Window::Calendar { unit, offset_secs } => {
                let name = match unit {
                    Calendar::Day => "day",
                    Calendar::Month => "month",
                };
                if offset_secs == 0 {
                    return name.to_string();
                }
                let sign = if offset_secs < 0 { '-' } else { '+' };
                let minutes = offset_secs.unsigned_abs() / 60;
                format!("{name}{sign}{:02}:{:02}", minutes / 60, minutes % 60)
            }
        }
    }

    /// Parses what [`Window::descriptor`] writes (also the config's `window` field).
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("`{text}` is not a window: use `<seconds>s`, `day` or `month`, optionally with a UTC offset like `month+02:00`");
        if let Some(secs) = text.strip_suffix('s').filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) {
            let secs: u64 = secs.parse().map_err(|_| bad())?;
            if secs == 0 {
                return Err(bad());
            }
            return Ok(Window::Fixed { secs });
        }
        let (unit, rest) = if let Some(rest) = text.strip_prefix("month") {
            (Calendar::Month, rest)
        } else if let Some(rest) = text.strip_prefix("day") {
            (Calendar::Day, rest)
        } else {
            return Err(bad());
        };
        if rest.is_empty() {
            return Ok(Window::Calendar { unit, offset_secs: 0 });
        }
        let (sign, hhmm) = match rest.split_at_checked(1) {
            Some(("+", hhmm)) => (1, hhmm),
            Some(("-", hhmm)) => (-1, hhmm),
            _ => return Err(bad()),
        };
        let (hours, minutes) = hhmm.split_once(':').ok_or_else(bad)?;
        let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(hours) || !digits(minutes) {
            return Err(bad());
        }
        let (hours, minutes): (i32, i32) = (hours.parse().map_err(|_| bad())?, minutes.parse().map_err(|_| bad())?);
        if hours > 14 || minutes > 59 || (hours == 14 && minutes > 0) {
            return Err(bad());
        }
        Ok(Window::Calendar { unit, offset_secs: sign * (hours * 3600 + minutes * 60) })
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Window::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> u64 {
        (days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + s) as u64
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1_000_000, -1, 0, 59, 60, 10_956, 11_016, 11_017, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    }

    #[test]
    fn fixed_windows_align_to_the_epoch() {
        assert_eq!(Window::fixed(60).bounds(125), (120, 180));
        assert_eq!(Window::fixed(60).reset_secs(120), 60);
        assert_eq!(Window::fixed(60).reset_secs(179), 1);
        assert_eq!(Window::fixed(0).bounds(5), (5, 6));
    }

    #[test]
    fn months_reset_at_their_first_second() {
        let month = Window::Calendar { unit: Calendar::Month, offset_secs: 0 };
        let last = utc(2026, 1, 31, 23, 59, 59);
        assert_eq!(month.bounds(last), (utc(2026, 1, 1, 0, 0, 0), utc(2026, 2, 1, 0, 0, 0)));
        assert_eq!(month.reset_secs(last), 1);
        assert_eq!(month.bounds(last + 1).0, utc(2026, 2, 1, 0, 0, 0));
        // February: 28 days, 29 in leap years; December rolls the year.
        assert_eq!(month.length_secs(utc(2026, 2, 10, 0, 0, 0)), 28 * 86_400);
        assert_eq!(month.length_secs(utc(2028, 2, 10, 0, 0, 0)), 29 * 86_400);
        assert_eq!(month.length_secs(utc(2100, 2, 10, 0, 0, 0)), 28 * 86_400);
        assert_eq!(month.bounds(utc(2026, 12, 31, 12, 0, 0)).1, utc(2027, 1, 1, 0, 0, 0));
    }

    #[test]
    fn offsets_move_the_calendar() {
        // 22:30 UTC on Jan 31 is already Feb 1 at +02:00, still Jan 31 at -05:30.
        let now = utc(2026, 1, 31, 22, 30, 0);
        let east = Window::parse("month+02:00").unwrap();
        assert_eq!(east.bounds(now).0, utc(2026, 1, 31, 22, 0, 0), "Feb 1 00:00 at +02:00");
        let west = Window::parse("day-05:30").unwrap();
        assert_eq!(west.bounds(now), (utc(2026, 1, 31, 5, 30, 0), utc(2026, 2, 1, 5, 30, 0)));
        assert_eq!(Window::parse("day").unwrap().bounds(now), (utc(2026, 1, 31, 0, 0, 0), utc(2026, 2, 1, 0, 0, 0)));
    }

    #[test]
    fn descriptors_round_trip_and_bad_ones_are_named() {
        for text in ["60s", "1s", "day", "month", "month+02:00", "day-05:30", "month+14:00"] {
            assert_eq!(Window::parse(text).unwrap().descriptor(), text);
        }
        for bad in ["", "0s", "s", "60", "week", "month+2", "month+02:60", "month+15:00", "day*01:00", "monthly", "-5s"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        assert!(Window::parse("week").unwrap_err().contains("`week`"));
    }
}
