//! The store's messages: Envoy's rate-limit service API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) and Tollgate's settlement
//! extension (`tollgate.limits.v1.Settlement/Settle`). Field numbers and the meaning of each
//! descriptor entry: `docs/limits-protocol.md`.

use crate::shared_data::window::{Calendar, Window};
use crate::wire::protobuf::{Malformed, Reader, Value, Writer};

pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const RLS_METHOD: &str = "ShouldRateLimit";
pub const SETTLE_SERVICE: &str = "tollgate.limits.v1.Settlement";
pub const SETTLE_METHOD: &str = "Settle";

/// The response header carrying the store's clock (Unix ms) the windows were computed with;
/// a settlement names it so it lands in the window its reservation was made in.
pub const RESERVED_AT_HEADER: &str = "x-tollgate-reserved-at";

/// One counter: a limit, who is counted, its window and cap, and the amount of this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor<'a> {
    pub limit: &'a str,
    pub subject: &'a str,
    pub window: Window,
    pub cap: u64,
    pub amount: u64,
}

/// `RateLimitResponse.RateLimit.Unit` of a window, where one fits exactly.
fn unit(window: Window) -> u64 {
    match window {
        Window::Fixed { secs: 1 } => 1,
        Window::Fixed { secs: 60 } => 2,
        Window::Fixed { secs: 3600 } => 3,
        Window::Fixed { secs: 86_400 } | Window::Calendar { unit: Calendar::Day, offset_secs: 0 } => 4,
        Window::Calendar { unit: Calendar::Month, offset_secs: 0 } => 5,
        _ => 0,
    }
}

fn descriptor(d: &Descriptor<'_>) -> Writer {
    let mut message = Writer::new();
    let window = d.window.descriptor();
    let cap = d.cap.to_string();
    for (key, value) in [("limit", d.limit), ("subject", d.subject), ("window", window.as_str()), ("cap", cap.as_str())] {
        let mut entry = Writer::new();
        entry.string(1, key).string(2, value);
        message.message(1, &entry);
    }
    // The override plain servers understand (`requests_per_unit` is 32-bit).
    let mut limit = Writer::new();
    limit.uint(1, d.cap.min(u64::from(u32::MAX))).uint(2, unit(d.window));
    message.message(2, &limit);
    // Descriptor-level hits (a `UInt64Value`, present even when 0: a query).
    let mut hits = Writer::new();
    hits.uint(1, d.amount);
    message.message(3, &hits);
    message
}

/// A `RateLimitRequest` reserving each descriptor's amount.
pub fn should_rate_limit(domain: &str, descriptors: &[Descriptor<'_>]) -> Vec<u8> {
    let mut request = Writer::new();
    request.string(1, domain);
    for d in descriptors {
        request.message(2, &descriptor(d));
    }
    // Servers without descriptor-level hits use the request's: exact when all amounts agree.
    if let Some(first) = descriptors.first() {
        if descriptors.iter().all(|d| d.amount == first.amount) {
            request.uint(3, first.amount.min(u64::from(u32::MAX)));
        }
    }
    request.finish()
}

/// One counter to settle: what was reserved and what was really taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement<'a> {
    pub descriptor: Descriptor<'a>,
    pub reserved: u64,
    pub actual: u64,
}

/// A `SettleRequest` (Tollgate's extension).
pub fn settle(domain: &str, settlements: &[Settlement<'_>], reserved_at_ms: u64) -> Vec<u8> {
    let mut request = Writer::new();
    request.string(1, domain);
    for s in settlements {
        let mut item = Writer::new();
        item.message(1, &descriptor(&s.descriptor)).uint(2, s.reserved).uint(3, s.actual);
        request.message(2, &item);
    }
    request.uint(3, reserved_at_ms);
    request.finish()
}

/// One descriptor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub over_limit: bool,
    /// What is left of the cap after this call (as the server reports it, 32-bit).
    pub remaining: u64,
    /// Seconds until the window resets, when the server says.
    pub reset_secs: Option<u64>,
}

/// A `RateLimitResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub over_limit: bool,
    pub statuses: Vec<Status>,
    /// The store's clock for the windows (Tollgate's extension header), Unix ms.
    pub reserved_at_ms: Option<u64>,
}

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("malformed RateLimitResponse")]
    Malformed,
    /// `overall_code` neither OK nor OVER_LIMIT.
    #[error("RateLimitResponse with overall_code {0}")]
    UnknownCode(u64),
    /// Statuses for other than the descriptors asked (when the server sends any).
    #[error("RateLimitResponse with {got} statuses for {expected} descriptors")]
    Statuses { expected: usize, got: usize },
}

impl From<Malformed> for BadAnswer {
    fn from(_: Malformed) -> Self {
        BadAnswer::Malformed
    }
}

const OK: u64 = 1;
const OVER_LIMIT: u64 = 2;

fn status(bytes: &[u8]) -> Result<Status, BadAnswer> {
    let mut status = Status::default();
    for field in Reader::new(bytes) {
        match field? {
            (1, Value::Varint(code)) => status.over_limit = code == OVER_LIMIT,
            (3, value) => status.remaining = value.as_u64().unwrap_or(0),
            (4, Value::Bytes(duration)) => {
                let mut seconds = 0u64;
                let mut nanos = 0u64;
                for field in Reader::new(duration) {
                    match field? {
                        (1, Value::Varint(s)) => seconds = i64::from_ne_bytes(s.to_ne_bytes()).max(0).unsigned_abs(),
                        (2, Value::Varint(n)) => nanos = n,
                        _ => {}
                    }
                }
                status.reset_secs = Some(seconds + u64::from(nanos > 0));
            }
            _ => {}
        }
    }
    Ok(status)
}

/// Reads a `RateLimitResponse` for `asked` descriptors.
pub fn answer(bytes: &[u8], asked: usize) -> Result<Answer, BadAnswer> {
    let mut answer = Answer::default();
    let mut code = 0;
    for field in Reader::new(bytes) {
        match field? {
            (1, Value::Varint(c)) => code = c,
            (2, Value::Bytes(s)) => answer.statuses.push(status(s)?),
            (3, Value::Bytes(header)) => {
                let (mut key, mut value) = (&b""[..], &b""[..]);
                for field in Reader::new(header) {
                    match field? {
                        (1, Value::Bytes(k)) => key = k,
                        (2, Value::Bytes(v)) => value = v,
                        _ => {}
                    }
                }
                if key.eq_ignore_ascii_case(RESERVED_AT_HEADER.as_bytes()) {
                    answer.reserved_at_ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
            }
            _ => {}
        }
    }
    answer.over_limit = match code {
        OK => false,
        OVER_LIMIT => true,
        other => return Err(BadAnswer::UnknownCode(other)),
    };
    if !answer.statuses.is_empty() && answer.statuses.len() != asked {
        return Err(BadAnswer::Statuses { expected: asked, got: answer.statuses.len() });
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Vec<(u32, Value<'_>)> {
        Reader::new(bytes).collect::<Result<_, _>>().unwrap()
    }

    fn entries(descriptor: &[u8]) -> Vec<(String, String)> {
        fields(descriptor)
            .into_iter()
            .filter(|(n, _)| *n == 1)
            .map(|(_, v)| {
                let kv = fields(v.as_bytes().unwrap());
                let text = |i: usize| String::from_utf8(kv[i].1.as_bytes().unwrap().to_vec()).unwrap();
                (text(0), text(1))
            })
            .collect()
    }

    #[test]
    fn a_reservation_names_limit_subject_window_and_cap() {
        let month = Window::parse("month").unwrap();
        let bytes = should_rate_limit(
            "tollgate",
            &[
                Descriptor { limit: "team-budget", subject: "payments", window: month, cap: 500_000_000_000, amount: 1200 },
                Descriptor { limit: "per-key", subject: "alice", window: Window::fixed(60), cap: 10, amount: 1 },
            ],
        );
        let top = fields(&bytes);
        assert_eq!(top[0], (1, Value::Bytes(b"tollgate")));
        assert_eq!(top.len(), 3, "amounts differ: no request-level hits");
        let first = top[1].1.as_bytes().unwrap();
        assert_eq!(
            entries(first),
            [("limit", "team-budget"), ("subject", "payments"), ("window", "month"), ("cap", "500000000000")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let first = fields(first);
        let limit = fields(first[4].1.as_bytes().unwrap());
        assert_eq!(limit, vec![(1, Value::Varint(u64::from(u32::MAX))), (2, Value::Varint(5))], "cap clamped, unit MONTH");
        assert_eq!(fields(first[5].1.as_bytes().unwrap()), vec![(1, Value::Varint(1200))]);
        let second = fields(top[2].1.as_bytes().unwrap());
        assert_eq!(fields(second[4].1.as_bytes().unwrap()), vec![(1, Value::Varint(10)), (2, Value::Varint(2))]);

        let same = should_rate_limit("d", &[Descriptor { limit: "l", subject: "s", window: Window::fixed(7), cap: 3, amount: 0 }]);
        let top = fields(&same);
        assert_eq!(top.len(), 2, "amount 0: request-level hits left out (proto3 zero)");
        let hits = fields(top[1].1.as_bytes().unwrap())[5].1.as_bytes().unwrap();
        assert!(hits.is_empty(), "a present, empty UInt64Value: a query");
    }

    fn response(code: u64, statuses: &[(u64, u64, Option<i64>)], reserved_at: Option<&str>) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(1, code);
        for (c, remaining, reset) in statuses {
            let mut s = Writer::new();
            s.uint(1, *c).uint(3, *remaining);
            if let Some(secs) = reset {
                let mut d = Writer::new();
                d.uint(1, *secs as u64).uint(2, 5);
                s.message(4, &d);
            }
            w.message(2, &s);
        }
        if let Some(at) = reserved_at {
            let mut h = Writer::new();
            h.string(1, RESERVED_AT_HEADER).string(2, at);
            w.message(3, &h);
        }
        w.finish()
    }

    #[test]
    fn answers_are_read_with_their_statuses_and_clock() {
        let bytes = response(2, &[(1, 40, Some(59)), (2, 0, Some(3))], Some("1767225599000"));
        let a = answer(&bytes, 2).unwrap();
        assert!(a.over_limit);
        assert_eq!(a.statuses[0], Status { over_limit: false, remaining: 40, reset_secs: Some(60) });
        assert_eq!(a.statuses[1], Status { over_limit: true, remaining: 0, reset_secs: Some(4) });
        assert_eq!(a.reserved_at_ms, Some(1_767_225_599_000));
        // A plain server: no statuses, no clock.
        assert_eq!(answer(&response(1, &[], None), 3).unwrap(), Answer::default());
    }

    #[test]
    fn unusable_answers_are_errors_never_an_admission() {
        assert_eq!(answer(&response(0, &[], None), 1), Err(BadAnswer::UnknownCode(0)));
        assert_eq!(answer(&[], 1), Err(BadAnswer::UnknownCode(0)), "an empty message is UNKNOWN");
        assert_eq!(answer(&response(1, &[(1, 1, None)], None), 2), Err(BadAnswer::Statuses { expected: 2, got: 1 }));
        assert_eq!(answer(&[0x0a, 9], 1), Err(BadAnswer::Malformed));
        assert_eq!(answer(&response(1, &[(1, 1, Some(-5))], None), 1).unwrap().statuses[0].reset_secs, Some(1));
    }

    #[test]
    fn settlements_carry_both_amounts_and_the_clock() {
        let d = Descriptor { limit: "t", subject: "alice", window: Window::fixed(60), cap: 1000, amount: 900 };
        let bytes = settle("tollgate", &[Settlement { descriptor: d, reserved: 900, actual: 30 }], 1_000_123);
        let top = fields(&bytes);
        assert_eq!(top[2], (3, Value::Varint(1_000_123)));
        let item = fields(top[1].1.as_bytes().unwrap());
        assert_eq!((item[1], item[2]), ((2, Value::Varint(900)), (3, Value::Varint(30))));
        assert_eq!(entries(item[0].1.as_bytes().unwrap())[0], ("limit".to_string(), "t".to_string()));
    }
}
