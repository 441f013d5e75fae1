//! Response headers that let a client find the gateway's record of its request: the
//! gateway's request id (`x-request-id`, the id in the audit record) and the gateway's span
//! (`traceparent`: the trace id and the span id the audit record and the exported span carry).
//!
//! Both come from the request headers as the filter left them: Envoy's `x-request-id` and the
//! `traceparent` the filter sends upstream (the gateway's span as the parent). An upstream's
//! own `x-request-id` (an LLM provider's, say) is kept as `x-upstream-request-id`.

use crate::host::{HeaderMap, Host, HostExt};
use crate::observe::audit::REQUEST_ID_HEADER;

/// The provider's request id, when it differs from the gateway's.
pub const UPSTREAM_REQUEST_ID_HEADER: &str = "x-upstream-request-id";
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The correlation headers of the current request: `(name, value)` pairs.
pub fn headers(host: &dyn Host) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(2);
    if let Some(id) = host.request_header(REQUEST_ID_HEADER).filter(|v| !v.is_empty()) {
        out.push((REQUEST_ID_HEADER, id));
    }
    if let Some(tp) = host
        .request_header(TRACEPARENT_HEADER)
        .filter(|v| crate::wire::trace::TraceParent::parse(v).is_some())
    {
        out.push((TRACEPARENT_HEADER, tp));
    }
    out
}

/// The upstream's own request id to keep as `x-upstream-request-id`: one that differs from
/// the gateway's.
pub fn upstream_id_to_keep<'a>(gateway_id: Option<&str>, theirs: Option<&'a str>) -> Option<&'a str> {
    theirs.filter(|t| !t.is_empty() && gateway_id.is_some_and(|g| g != *t))
}

/// Stamps the upstream's response headers with `ours` (kept by the stream from the request
/// phase: Envoy lets a filter read request headers only in request callbacks), moving a
/// different upstream `x-request-id` to `x-upstream-request-id`.
pub fn stamp_response(host: &dyn Host, ours: &[(&'static str, String)]) {
    let gateway_id = ours.iter().find(|(k, _)| *k == REQUEST_ID_HEADER).map(|(_, v)| v.as_str());
    let theirs = host.response_header(REQUEST_ID_HEADER);
    if let Some(theirs) = upstream_id_to_keep(gateway_id, theirs.as_deref()) {
        host.try_set_header(HeaderMap::Response, UPSTREAM_REQUEST_ID_HEADER, Some(theirs));
    }
    for (name, value) in ours {
        host.try_set_header(HeaderMap::Response, name, Some(value));
    }
}

/// The headers of a local reply with the correlation headers added (unless the reply sets
/// them itself).
pub fn local_reply_headers<'a>(given: &[(&'a str, &'a str)], ours: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = given.to_vec();
    for (name, value) in ours {
        if !given.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            out.push((name, value.as_str()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn upstream_id_is_kept_aside_and_ours_set() {
        let host = MemoryHost::with_request_headers(&[("x-request-id", "gw-1"), ("traceparent", TP)]);
        host.set_header(HeaderMap::Response, "x-request-id", Some("prov-9")).unwrap();
        stamp_response(&host, &headers(&host));
        assert_eq!(host.response_header("x-request-id").as_deref(), Some("gw-1"));
        assert_eq!(host.response_header("x-upstream-request-id").as_deref(), Some("prov-9"));
        assert_eq!(host.response_header("traceparent").as_deref(), Some(TP));
    }

    #[test]
    fn same_or_no_upstream_id_adds_no_upstream_header() {
        assert_eq!(upstream_id_to_keep(Some("gw-1"), Some("prov")), Some("prov"));
        assert_eq!(upstream_id_to_keep(Some("gw-1"), Some("gw-1")), None);
        assert_eq!(upstream_id_to_keep(Some("gw-1"), None), None);
        assert_eq!(upstream_id_to_keep(None, Some("prov")), None);
    }

    #[test]
    fn invalid_traceparent_is_not_echoed() {
        let host = MemoryHost::with_request_headers(&[("x-request-id", "gw-1"), ("traceparent", "00-bad")]);
        assert_eq!(headers(&host), vec![(REQUEST_ID_HEADER, "gw-1".to_string())]);
    }

    #[test]
    fn local_reply_keeps_its_own_headers_first() {
        let ours = vec![(REQUEST_ID_HEADER, "gw-1".to_string()), (TRACEPARENT_HEADER, TP.to_string())];
        let given = [("content-type", "application/json"), ("X-Request-Id", "mine")];
        let out = local_reply_headers(&given, &ours);
        assert_eq!(out, vec![("content-type", "application/json"), ("X-Request-Id", "mine"), ("traceparent", TP)]);
    }
}
