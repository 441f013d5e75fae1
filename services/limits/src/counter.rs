//! From a descriptor to the counter it names: identity (Redis key), cap, amount and window.

use crate::proto::RateLimitDescriptor;
use crate::window::Window;

/// Counter values, caps and amounts are exact up to 2^53 − 1 (Redis Lua numbers are doubles);
/// larger caps and amounts saturate there (about 9×10^15: $9 billion in micro-USD).
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// What one descriptor asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No cap (neither a `cap` entry nor a `limit` override): answered OK, counts nothing.
    Uncounted,
    Counted(Counter),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The Redis key without its window id: prefix, domain and every entry but `cap`.
    pub key_base: String,
    /// The cap as sent (u64); `cap_exact` is what Redis compares against.
    pub cap: u64,
    pub window: Window,
    /// The `limit` entry's value, reported as `current_limit.name`.
    pub name: String,
}

impl Counter {
    pub fn cap_exact(&self) -> u64 {
        self.cap.min(MAX_EXACT)
    }

    /// The key of the window with this id.
    pub fn key(&self, window_id: &str) -> String {
        format!("{}@{}", self.key_base, window_id)
    }
}

/// The amount a descriptor adds: its own `hits_addend` when set (0 allowed: a query), else the
/// request's `hits_addend` when non-zero, else 1.
pub fn amount(d: &RateLimitDescriptor, request_hits_addend: u32) -> u64 {
    match &d.hits_addend {
        Some(v) => v.value,
        None if request_hits_addend > 0 => u64::from(request_hits_addend),
        None => 1,
    }
}

/// Reads a descriptor. Errors are the caller's (INVALID_ARGUMENT).
pub fn plan(prefix: &str, domain: &str, d: &RateLimitDescriptor) -> Result<Plan, String> {
    let entry = |k: &str| d.entries.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let cap = match (entry("cap"), &d.limit) {
        (Some(v), _) => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("cap {v:?} is not a u64 in decimal"));
            }
            v.parse::<u64>().map_err(|_| format!("cap {v:?} is not a u64 in decimal"))?
        }
        (None, Some(o)) => u64::from(o.requests_per_unit),
        (None, None) => return Ok(Plan::Uncounted),
    };
    let (window, implicit_window) = match (entry("window"), &d.limit) {
        (Some(w), _) => (Window::parse(w)?, false),
        (None, Some(o)) => match Window::from_override_unit(o.unit) {
            Some(w) => (w, true),
            None => return Err(format!("no window entry and no usable limit.unit ({})", o.unit)),
        },
        (None, None) => return Err("a cap without a window entry".to_string()),
    };
    let mut key_base = String::with_capacity(64);
    key_base.push_str(prefix);
    escape_into(&mut key_base, domain);
    for e in d.entries.iter().filter(|e| e.key != "cap") {
        key_base.push('|');
        escape_into(&mut key_base, &e.key);
        key_base.push('=');
        escape_into(&mut key_base, &e.value);
    }
    if implicit_window {
        key_base.push_str("|window=");
        key_base.push_str(&window.canonical());
    }
    Ok(Plan::Counted(Counter { key_base, cap, window, name: entry("limit").unwrap_or_default().to_string() }))
}

/// Percent-escapes the key's separators (`|`, `=`, `@`), `%` itself and control bytes, so two
/// different descriptors never share a key.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' | '|' | '=' | '@' => out.push_str(&format!("%{:02X}", u32::from(c))),
            c if c.is_control() && u32::from(c) < 0x80 => out.push_str(&format!("%{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Entry, RateLimitOverride, UInt64Value};

    fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries.iter().map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() }).collect(),
            limit: None,
            hits_addend: None,
        }
    }

    fn counted(p: Result<Plan, String>) -> Counter {
        match p {
            Ok(Plan::Counted(c)) => c,
            other => panic!("expected a counter, got {other:?}"),
        }
    }

    #[test]
    fn identity_is_every_entry_but_cap() {
        let a = counted(plan("t:", "tollgate", &desc(&[("limit", "rpm"), ("subject", "k1"), ("window", "60s"), ("cap", "10")])));
        let b = counted(plan("t:", "tollgate", &desc(&[("limit", "rpm"), ("subject", "k1"), ("window", "60s"), ("cap", "99")])));
        assert_eq!(a.key_base, "t:tollgate|limit=rpm|subject=k1|window=60s");
        assert_eq!(a.key_base, b.key_base, "a new cap keeps the counter");
        assert_eq!(a.name, "rpm");
        assert_eq!(a.key("123"), "t:tollgate|limit=rpm|subject=k1|window=60s@123");
        let extra = counted(plan("t:", "tollgate", &desc(&[("limit", "rpm"), ("subject", "k1"), ("window", "60s"), ("cap", "10"), ("tier", "gold")])));
        assert_ne!(extra.key_base, a.key_base, "unknown entries are identity");
        let other_domain = counted(plan("t:", "other", &desc(&[("limit", "rpm"), ("subject", "k1"), ("window", "60s"), ("cap", "10")])));
        assert_ne!(other_domain.key_base, a.key_base);
        // Separators inside values cannot forge another key.
        let tricky = counted(plan("t:", "tollgate", &desc(&[("subject", "a|window=60s"), ("window", "60s"), ("cap", "1")])));
        assert_eq!(tricky.key_base, "t:tollgate|subject=a%7Cwindow%3D60s|window=60s");
    }

    #[test]
    fn caps_windows_and_errors() {
        assert_eq!(plan("t:", "d", &desc(&[("limit", "x"), ("window", "60s")])), Ok(Plan::Uncounted));
        assert!(plan("t:", "d", &desc(&[("cap", "10")])).is_err(), "cap without a window");
        assert!(plan("t:", "d", &desc(&[("cap", "-1"), ("window", "60s")])).is_err());
        assert!(plan("t:", "d", &desc(&[("cap", "1e3"), ("window", "60s")])).is_err());
        assert!(plan("t:", "d", &desc(&[("cap", "18446744073709551616"), ("window", "60s")])).is_err());
        assert!(plan("t:", "d", &desc(&[("cap", "5"), ("window", "week")])).is_err());
        let max = counted(plan("t:", "d", &desc(&[("cap", "18446744073709551615"), ("window", "month")])));
        assert_eq!(max.cap, u64::MAX);
        assert_eq!(max.cap_exact(), MAX_EXACT);
        // A plain RLS override: the cap is requests_per_unit, the window its unit.
        let mut o = desc(&[("generic_key", "x")]);
        o.limit = Some(RateLimitOverride { requests_per_unit: 7, unit: 2 });
        let c = counted(plan("t:", "d", &o));
        assert_eq!((c.cap, c.window), (7, Window::Fixed { seconds: 60 }));
        assert_eq!(c.key_base, "t:d|generic_key=x|window=60s");
        // The cap entry wins over the override; the window entry over its unit.
        let mut both = desc(&[("window", "day"), ("cap", "1000000")]);
        both.limit = Some(RateLimitOverride { requests_per_unit: 5, unit: 1 });
        let c = counted(plan("t:", "d", &both));
        assert_eq!((c.cap, c.window), (1_000_000, Window::Day { offset_s: 0 }));
        let mut year = desc(&[("generic_key", "x")]);
        year.limit = Some(RateLimitOverride { requests_per_unit: 5, unit: 6 });
        assert!(plan("t:", "d", &year).is_err(), "YEAR has no window here");
    }

    #[test]
    fn amounts() {
        let mut d = desc(&[("cap", "1"), ("window", "1s")]);
        assert_eq!(amount(&d, 0), 1);
        assert_eq!(amount(&d, 7), 7);
        d.hits_addend = Some(UInt64Value { value: 0 });
        assert_eq!(amount(&d, 7), 0, "descriptor-level 0 is a query");
        d.hits_addend = Some(UInt64Value { value: 1 << 40 });
        assert_eq!(amount(&d, 7), 1 << 40);
    }
}
