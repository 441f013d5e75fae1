//! W3C Trace Context: `traceparent` parsing, validation, generation, and `tracestate`.

use crate::hash::hex;
use std::sync::atomic::{AtomicU64, Ordering};
use crate::host::{HeaderMap, Host, HostExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex chars, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex chars, not all zero: the span of the sender.
    pub parent_id: String,
    pub flags: u8,
}

pub const FLAG_SAMPLED: u8 = 0x01;
pub const FLAG_RANDOM: u8 = 0x02;

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl TraceParent {
    /// Parses a `traceparent` value per W3C Trace Context level 1/2. Returns `None` for any
    /// invalid value, which the caller must then treat as absent.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        if value.len() < 55 {
            return None;
        }
        let version = value.get(0..2)?;
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        // Version 00 is exactly 55 chars; higher versions may append `-...` fields.
        if version == "00" && value.len() != 55 {
            return None;
        }
        if value.len() > 55 && value.as_bytes().get(55) != Some(&b'-') {
            return None;
        }
        let bytes = value.as_bytes();
        if [2, 35, 52].iter().any(|&at| bytes.get(at) != Some(&b'-')) {
            return None;
        }
        let trace_id = value.get(3..35)?;
        let parent_id = value.get(36..52)?;
        let flags = value.get(53..55)?;
        if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
            return None;
        }
        if all_zero(trace_id) || all_zero(parent_id) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags,
        })
    }

    /// Always emits version `00`, as a participant must.
    pub fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }

    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// A new trace with a random trace id, sampled, and the random-trace-id flag set.
    pub fn new_root(host: &dyn Host) -> Self {
        TraceParent {
            trace_id: random_hex(host, 16),
            parent_id: new_span_id(host),
            flags: FLAG_SAMPLED | FLAG_RANDOM,
        }
    }

    /// The same trace, with `span_id` (the gateway's span) as the new parent.
    pub fn child(&self, span_id: String) -> Self {
        TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: span_id,
            flags: self.flags,
        }
    }
}

/// A new random 8-byte span id, never all zero.
pub fn new_span_id(host: &dyn Host) -> String {
    random_hex(host, 8)
}

fn random_hex(host: &dyn Host, len: usize) -> String {
    let mut buf = [0u8; 16];
    let (buf, _) = buf.split_at_mut(len.min(16));
    if host.random_bytes(buf).is_err() || buf.iter().all(|b| *b == 0) {
        // The host's random source failed: fall back to clock bits mixed with a counter (the
        // clock is read once per callback, and ids made in one callback must still differ),
        // still never zero.
        static FALLBACKS: AtomicU64 = AtomicU64::new(0);
        let n = FALLBACKS.fetch_add(1, Ordering::Relaxed);
        let t = (host.now_nanos() ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t.rotate_left((i as u32) * 8) & 0xff) as u8 ^ (i as u8).wrapping_mul(151);
        }
        if buf.iter().all(|b| *b == 0) {
            if let Some(first) = buf.first_mut() {
                *first = 1;
            }
        }
    }
    hex(buf)
}

/// The result of taking part in a trace: what to send upstream and what to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub trace_id: String,
    /// The gateway's own span id.
    pub span_id: String,
    /// The caller's span (the inbound parent id), if the trace was continued.
    pub parent_span_id: Option<String>,
    /// The outgoing `traceparent`.
    pub traceparent: String,
    /// The outgoing `tracestate`: unchanged when continued, dropped for a new trace.
    pub tracestate: Option<String>,
    /// True when no valid inbound trace existed and this started one.
    pub started: bool,
}

/// Continues the inbound trace, or, if `inbound` is missing or invalid, the fallback trace
/// (e.g. a conversation's earlier trace), or else starts a new one.
pub fn participate(
    host: &dyn Host,
    inbound: Option<&str>,
    inbound_state: Option<&str>,
    fallback: Option<TraceParent>,
) -> TraceStep {
    let span_id = new_span_id(host);
    if let Some(parent) = inbound.and_then(TraceParent::parse) {
        let out = parent.child(span_id.clone());
        return TraceStep {
            trace_id: out.trace_id.clone(),
            span_id,
            parent_span_id: Some(parent.parent_id),
            traceparent: out.to_header(),
            tracestate: inbound_state.map(|s| s.to_string()).filter(|s| !s.trim().is_empty()),
            started: false,
        };
    }
    if let Some(parent) = fallback {
        let out = parent.child(span_id.clone());
        return TraceStep {
            trace_id: out.trace_id.clone(),
            span_id,
            parent_span_id: Some(parent.parent_id),
            traceparent: out.to_header(),
            tracestate: None,
            started: false,
        };
    }
    let root = TraceParent::new_root(host);
    let out = root.child(span_id.clone());
    TraceStep {
        trace_id: root.trace_id,
        span_id,
        parent_span_id: None,
        traceparent: out.to_header(),
        tracestate: None,
        started: true,
    }
}

/// Takes part in the request's trace: continues the inbound `traceparent` (else `fallback`,
/// else a new trace) and sends the gateway's span upstream as the new parent.
pub fn join_request(host: &dyn Host, fallback: Option<TraceParent>) -> TraceStep {
    let step = participate(
        host,
        host.request_header("traceparent").as_deref(),
        host.request_header("tracestate").as_deref(),
        fallback,
    );
    host.try_set_header(HeaderMap::Request, "traceparent", Some(&step.traceparent));
    host.try_set_header(HeaderMap::Request, "tracestate", step.tracestate.as_deref());
    step
}

/// Adds or updates `key=value` in a `tracestate`, moving it leftmost and keeping at most
/// 32 members (dropping from the right), per W3C.
pub fn tracestate_upsert(state: Option<&str>, key: &str, value: &str) -> String {
    let mut members: Vec<&str> = state
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .filter(|m| m.split('=').next().map(str::trim) != Some(key))
        .collect();
    members.truncate(31);
    let first = format!("{key}={value}");
    let mut out = first;
    for m in members {
        out.push(',');
        out.push_str(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id, "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_header(), VALID);
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
            "garbage",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn higher_version_parses_first_fields_and_reemits_00() {
        let tp = TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future").unwrap();
        assert!(tp.to_header().starts_with("00-4bf92f35"));
        assert!(TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }

    #[test]
    fn participate_continues_valid_trace() {
        let host = MemoryHost::new();
        let step = participate(&host, Some(VALID), Some("vendor=1"), None);
        assert_eq!(step.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(step.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(step.span_id, "00f067aa0ba902b7");
        assert!(step.traceparent.contains(&step.span_id));
        assert!(step.traceparent.ends_with("-01"));
        assert_eq!(step.tracestate.as_deref(), Some("vendor=1"));
        assert!(!step.started);
    }

    #[test]
    fn participate_starts_new_trace_and_drops_tracestate_when_invalid() {
        let host = MemoryHost::new();
        let step = participate(&host, Some("00-bad"), Some("vendor=1"), None);
        assert!(step.started);
        assert_eq!(step.tracestate, None);
        assert_eq!(step.trace_id.len(), 32);
        assert!(TraceParent::parse(&step.traceparent).is_some());
    }

    #[test]
    fn participate_uses_fallback() {
        let host = MemoryHost::new();
        let earlier = TraceParent::parse(VALID).unwrap();
        let step = participate(&host, None, None, Some(earlier));
        assert_eq!(step.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!step.started);
    }

    #[test]
    fn join_request_rewrites_the_upstream_headers() {
        let host = MemoryHost::with_request_headers(&[("traceparent", VALID), ("tracestate", "v=1")]);
        let step = join_request(&host, None);
        assert_eq!(host.request_header("traceparent"), Some(step.traceparent.clone()));
        assert_ne!(step.traceparent, VALID);
        assert_eq!(host.request_header("tracestate").as_deref(), Some("v=1"));
        let host = MemoryHost::with_request_headers(&[("tracestate", "v=1")]);
        let step = join_request(&host, None);
        assert!(step.started);
        assert_eq!(host.request_header("tracestate"), None);
    }

    #[test]
    fn tracestate_upsert_moves_key_left_and_caps() {
        assert_eq!(tracestate_upsert(Some("a=1,tg=old,b=2"), "tg", "new"), "tg=new,a=1,b=2");
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let out = tracestate_upsert(Some(&many.join(",")), "tg", "x");
        assert_eq!(out.split(',').count(), 32);
    }
}
