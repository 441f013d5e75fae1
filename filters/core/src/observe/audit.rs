//! One audit-record schema for all three filters.
//!
//! Every record has the same envelope (schema, layer, time, request and trace ids, identity,
//! decision, status, timings) and a layer-specific `detail` flattened beside it. Records go
//! to filter state `wasm.<filter_state_key>` (for `%FILTER_STATE(wasm.tollgate.audit:PLAIN)%`
//! in access logs) and, when configured, to Envoy's log as one JSON line.

use crate::host::{Host, LogLevel};
use crate::identity::Identity;
use crate::wire::trace::TraceStep;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "tollgate.audit/v1";
/// Prefix of the JSON log line, so log shippers can pick audit lines out.
pub const LOG_PREFIX: &str = "tollgate.audit ";
/// Envoy's request id (`request.id`): the header it set or kept, read by every filter for
/// its records.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Llm,
    Mcp,
    A2a,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    /// The request failed before a policy decision (bad input, unknown key, ...).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Record<'a, D: Serialize> {
    pub schema: &'static str,
    pub layer: Layer,
    /// Start of the request, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<&'a str>,
    pub identity: Option<&'a Identity>,
    /// From a gateway credential (identity source `gateway`): the agent acting, on whose
    /// behalf, through which delegation chain — as the A2A filter's records name them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<&'a [String]>,
    pub decision: Decision,
    /// False when the decision was recorded but not enforced (dry run).
    pub enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(flatten)]
    pub detail: D,
}

impl<'a, D: Serialize> Record<'a, D> {
    pub fn new(layer: Layer, timestamp_ms: u64, detail: D) -> Self {
        Record {
            schema: SCHEMA,
            layer,
            timestamp_ms,
            request_id: None,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            identity: None,
            agent: None,
            on_behalf_of: None,
            chain: None,
            decision: Decision::Allow,
            enforced: true,
            rule_id: None,
            status: None,
            duration_ms: None,
            error: None,
            detail,
        }
    }
}

/// What every record of one request carries whatever the filter: the request id, the trace
/// step the filter took part in (trace, span and parent span ids) and the caller's identity.
/// Each filter keeps these from its request preamble and lends them here; its records add
/// only their decision and their own detail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    pub request_id: Option<&'a str>,
    pub trace: Option<&'a TraceStep>,
    pub identity: Option<&'a Identity>,
}

impl<'a, D: Serialize> Record<'a, D> {
    /// A record of one request: `envelope` fills its request id, trace ids and identity.
    pub fn of_request(layer: Layer, timestamp_ms: u64, envelope: Envelope<'a>, detail: D) -> Self {
        let mut record = Record::new(layer, timestamp_ms, detail);
        record.request_id = envelope.request_id;
        if let Some(step) = envelope.trace {
            record.trace_id = Some(&step.trace_id);
            record.span_id = Some(&step.span_id);
            record.parent_span_id = step.parent_span_id.as_deref();
        }
        record.identity = envelope.identity;
        if let Some(delegation) = envelope.identity.and_then(|i| i.delegation.as_ref()) {
            record.agent = Some(&delegation.agent);
            record.on_behalf_of = delegation.on_behalf_of.as_deref();
            record.chain = Some(&delegation.chain);
        }
        record
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Also write each record to Envoy's log (component `wasm`, level info) as one JSON line.
    #[serde(default)]
    pub log: bool,
    /// Filter-state name; the access log reads `%FILTER_STATE(wasm.<name>:PLAIN)%`.
    #[serde(default = "default_key")]
    pub filter_state_key: String,
    /// Also export each record as a span of the caller's trace, over OTLP/HTTP JSON
    /// ([`crate::observe::otlp`]). Absent: no export.
    #[serde(default)]
    pub otlp: Option<crate::observe::otlp::OtlpConfig>,
}

fn default_key() -> String {
    "tollgate.audit".into()
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { log: false, filter_state_key: default_key(), otlp: None }
    }
}

/// Serializes a record into a buffer sized for a typical record: growing a small buffer
/// step by step costs more than the serialization itself.
pub fn to_json<D: Serialize>(host: &dyn Host, record: &Record<'_, D>) -> Option<Vec<u8>> {
    let mut json = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut json, record) {
        Ok(()) => Some(json),
        Err(e) => {
            host.log(LogLevel::Error, &format!("tollgate: audit record not serializable: {e}"));
            None
        }
    }
}

/// Serializes and emits one record. Emitting again in the same request replaces the filter
/// state (callers emitting several records per request pass them as one JSON array instead).
pub fn emit<D: Serialize>(host: &dyn Host, config: &AuditConfig, record: &Record<'_, D>) {
    if let Some(json) = to_json(host, record) {
        emit_json(host, config, &json);
    }
}

/// Emits already-serialized JSON (one record or an array of records).
pub fn emit_json(host: &dyn Host, config: &AuditConfig, json: &[u8]) {
    if let Err(e) = host.set_property(&[&config.filter_state_key], json) {
        host.log(LogLevel::Warn, &format!("tollgate: cannot set audit filter state: {e}"));
    }
    if config.log {
        host.log(LogLevel::Info, &format!("{LOG_PREFIX}{}", String::from_utf8_lossy(json)));
    }
    if let Some(otlp) = &config.otlp {
        crate::observe::otlp::enqueue(host, otlp, json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryHost;

    #[derive(Serialize)]
    struct Detail {
        model: &'static str,
    }

    #[test]
    fn envelope_and_detail_are_flat() {
        let host = MemoryHost::new();
        let mut record = Record::new(Layer::Llm, 1700, Detail { model: "gpt-4o" });
        record.trace_id = Some("abc");
        record.status = Some(200);
        emit(&host, &AuditConfig { log: true, ..Default::default() }, &record);
        let json = host.prop(&["tollgate.audit"]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["layer"], "llm");
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["enforced"], true);
        assert!(v["identity"].is_null());
        assert!(host.logs.borrow()[0].1.starts_with(LOG_PREFIX));
    }
}
