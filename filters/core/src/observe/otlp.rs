//! OTLP/HTTP (JSON) export of the gateway's spans, one per audit record.
//!
//! Every filter already takes part in the caller's W3C trace: its span id is the parent in
//! the `traceparent` it sends upstream, and the audit record carries trace, span and parent
//! span ids, start, duration, decision, rule id, identity and the layer's detail. So the span
//! is made from the record as it is emitted ([`crate::observe::audit::emit_json`]):
//! [`span_json`] maps the record onto the OpenTelemetry semantic conventions (GenAI, MCP;
//! A2A where no convention exists yet under `a2a.*`) plus `tollgate.*` attributes.
//!
//! Spans wait in a queue per VM (each Envoy worker has its own, single-threaded), bounded by
//! `max_queued`: when full, the oldest is dropped and counted (`tollgate.otlp.dropped`). The
//! plugin's root context sends them on its timer ([`crate::plugin`]) with
//! `dispatch_http_call`: a batch as soon as `max_batch` are waiting, else whatever waits
//! every `flush_ms`; at most `max_in_flight` batches at once, so a slow collector only fills
//! the queue (and drops). A request never waits for the exporter, nor fails because of it.
//!
//! The encoding is OTLP/HTTP JSON (`application/json`): trace and span ids as hex strings,
//! 64-bit integers as decimal strings, enums as integers, as the OTLP specification wants.

use crate::host::{Host, HttpCall};
use serde::Deserialize;
use crate::wire::raw_object::RawMembers;
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::VecDeque;

/// `audit.otlp`: where and how spans are exported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawOtlpConfig")]
pub struct OtlpConfig {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub service_name: String,
    pub max_batch: usize,
    pub max_queued: usize,
    pub max_in_flight: u32,
    pub flush_ms: u64,
    pub timeout_ms: u64,
}

/// `audit.otlp` as written in the plugin configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpConfig {
    /// Envoy cluster of the OTLP/HTTP collector (required).
    cluster: String,
    /// `:authority` of the export requests. Default: the cluster name.
    #[serde(default)]
    authority: Option<String>,
    /// Path of the traces endpoint. Default `/v1/traces`.
    #[serde(default = "default_path")]
    path: String,
    /// `service.name` of the exported resource. Default `tollgate`.
    #[serde(default = "default_service")]
    service_name: String,
    /// Spans per export request; a full batch goes out at the next tick (100 ms). Default 64.
    #[serde(default = "default_batch")]
    max_batch: usize,
    /// Spans a worker holds at most; beyond, the oldest is dropped and counted. Default 2048.
    #[serde(default = "default_queued")]
    max_queued: usize,
    /// Export requests in flight at once per worker. Default 2.
    #[serde(default = "default_in_flight")]
    max_in_flight: u32,
    /// A partial batch goes out after this long. Default 1000 ms.
    #[serde(default = "default_flush")]
    flush_ms: u64,
    /// Timeout of one export request. Default 2000 ms.
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_path() -> String {
    "/v1/traces".into()
}
fn default_service() -> String {
    "tollgate".into()
}
fn default_batch() -> usize {
    64
}
fn default_queued() -> usize {
    2048
}
fn default_in_flight() -> u32 {
    2
}
fn default_flush() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    2000
}

impl TryFrom<RawOtlpConfig> for OtlpConfig {
    type Error = &'static str;
    fn try_from(raw: RawOtlpConfig) -> Result<Self, &'static str> {
        if raw.cluster.trim().is_empty() {
            return Err("otlp.cluster must not be empty");
        }
        if !raw.path.starts_with('/') {
            return Err("otlp.path must start with `/`");
        }
        if raw.max_queued == 0 || raw.max_queued > 65_536 {
            return Err("otlp.max_queued must be 1..=65536");
        }
        if raw.max_batch == 0 || raw.max_batch > raw.max_queued {
            return Err("otlp.max_batch must be 1..=max_queued");
        }
        if raw.max_in_flight == 0 || raw.max_in_flight > 64 {
            return Err("otlp.max_in_flight must be 1..=64");
        }
        if !(100..=60_000).contains(&raw.flush_ms) {
            return Err("otlp.flush_ms must be 100..=60000");
        }
        if !(1..=60_000).contains(&raw.timeout_ms) {
            return Err("otlp.timeout_ms must be 1..=60000");
        }
        Ok(OtlpConfig {
            authority: raw.authority.filter(|a| !a.is_empty()).unwrap_or_else(|| raw.cluster.clone()),
            cluster: raw.cluster,
            path: raw.path,
            service_name: raw.service_name,
            max_batch: raw.max_batch,
            max_queued: raw.max_queued,
            max_in_flight: raw.max_in_flight,
            flush_ms: raw.flush_ms,
            timeout_ms: raw.timeout_ms,
        })
    }
}

// OTLP `SpanKind` 3 (`CLIENT`): the gateway's span is its call to the upstream on the
// caller's behalf (the GenAI inference span is `CLIENT`); the upstream's server span nests
// under it. `StatusCode` 2: `ERROR`.

/// The attributes of a span, written as OTLP/JSON `KeyValue`s as they come.
struct Attrs(Vec<u8>);

impl Attrs {
    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.extend_from_slice(br#"{"key":""#);
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(br#"","value":{"#);
    }
    fn str(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        self.key(key);
        self.0.extend_from_slice(br#""stringValue":"#);
        write_str(&mut self.0, value);
        self.0.extend_from_slice(b"}}");
    }
    fn value(&mut self, key: &str, value: Option<Scalar>) {
        match value {
            Some(Scalar::Str(s)) => self.str(key, &s),
            Some(Scalar::Bool(b)) => {
                self.key(key);
                self.0.extend_from_slice(if b { br#""boolValue":true}}"#.as_slice() } else { br#""boolValue":false}}"#.as_slice() });
            }
            // OTLP JSON: int64 as a decimal string.
            Some(Scalar::Int(n)) => {
                self.key(key);
                self.0.extend_from_slice(br#""intValue":""#);
                self.0.extend_from_slice(n.as_bytes());
                self.0.extend_from_slice(br#""}}"#);
            }
            None => {}
        }
    }
}

/// A JSON string (escaped as serde_json escapes it).
fn write_str(out: &mut Vec<u8>, value: &str) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// A scalar member of a record: a string (unescaped), an integer (its digits) or a boolean.
/// Anything else (a float, an object, an array, null) is not an attribute.
enum Scalar {
    Str(String),
    Int(String),
    Bool(bool),
}

impl Scalar {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::Int(n) => n.parse().ok(),
            _ => None,
        }
    }
}

fn scalar(raw: &RawValue) -> Option<Scalar> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok().map(Scalar::Str),
        b't' => Some(Scalar::Bool(true)),
        b'f' => Some(Scalar::Bool(false)),
        b'-' | b'0'..=b'9' if text.bytes().all(|b| b == b'-' || b.is_ascii_digit()) => Some(Scalar::Int(text.to_string())),
        _ => None,
    }
}

/// The scalar at `path` (one key, or a key in an object member).
/// The members of a JSON object (one instance of the parser for every caller).
#[inline(never)]
fn members(text: &str) -> Option<RawMembers<'_>> {
    serde_json::from_str(text).ok()
}

fn get(record: &RawMembers<'_>, path: &[&str]) -> Option<Scalar> {
    match path {
        [key] => scalar(record.get(key)?),
        [outer, key] => scalar(members(record.get(outer)?.get())?.get(key)?),
        _ => None,
    }
}

fn get_str(record: &RawMembers<'_>, path: &[&str]) -> Option<String> {
    match get(record, path)? {
        Scalar::Str(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) && !s.bytes().all(|b| b == b'0')
}

/// The span of one audit record (a JSON object; a JSON array, as the MCP filter writes for a
/// JSON-RPC batch, gives the span of its first record, `tollgate.mcp.batch_index: 0`), as an
/// OTLP/JSON `Span` object. `None` when the record has no valid trace and span ids.
/// `now_nanos` ends the span when the record has no duration.
pub fn span_json(record_json: &[u8], now_nanos: u64) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(record_json).ok()?;
    // A batch's array: its first record (the parser reads one value and stops there).
    let record = match text.trim_start().strip_prefix('[') {
        Some(rest) => RawMembers::deserialize(&mut serde_json::Deserializer::from_str(rest)).ok()?,
        None => members(text)?,
    };
    let trace_id = get_str(&record, &["trace_id"]).filter(|s| is_hex_id(s, 32))?;
    let span_id = get_str(&record, &["span_id"]).filter(|s| is_hex_id(s, 16))?;
    let start_ms = get(&record, &["timestamp_ms"]).and_then(|v| v.as_u64()).unwrap_or(now_nanos / 1_000_000);
    let start = start_ms.saturating_mul(1_000_000);
    let end = match get(&record, &["duration_ms"]).and_then(|v| v.as_u64()) {
        Some(d) => start.saturating_add(d.saturating_mul(1_000_000)),
        None => now_nanos.max(start),
    };
    let layer = get_str(&record, &["layer"]).unwrap_or_else(|| "unknown".into());
    let layer = layer.as_str();
    let mut attrs = Attrs(Vec::with_capacity(1024));
    attrs.0.push(b'[');
    let name = attributes(layer, &record, &mut attrs);
    attrs.0.push(b']');

    let mut span = Vec::with_capacity(attrs.0.len() + 256);
    span.extend_from_slice(br#"{"traceId":""#);
    span.extend_from_slice(trace_id.as_bytes());
    span.extend_from_slice(br#"","spanId":""#);
    span.extend_from_slice(span_id.as_bytes());
    span.push(b'"');
    if let Some(parent) = get_str(&record, &["parent_span_id"]).filter(|s| is_hex_id(s, 16)) {
        span.extend_from_slice(br#","parentSpanId":""#);
        span.extend_from_slice(parent.as_bytes());
        span.push(b'"');
    }
    span.extend_from_slice(br#","name":"#);
    write_str(&mut span, &name);
    span.extend_from_slice(br#","kind":3,"startTimeUnixNano":""#);
    span.extend_from_slice(start.to_string().as_bytes());
    span.extend_from_slice(br#"","endTimeUnixNano":""#);
    span.extend_from_slice(end.to_string().as_bytes());
    span.extend_from_slice(br#"","attributes":"#);
    span.extend_from_slice(&attrs.0);
    let decision = get_str(&record, &["decision"]).unwrap_or_else(|| "allow".into());
    let status = get(&record, &["status"]).and_then(|v| v.as_u64()).unwrap_or(0);
    if decision != "allow" || status >= 500 {
        let decision = decision.as_str();
        let message = get_str(&record, &["reason"])
            .or_else(|| get_str(&record, &["error"]))
            .or_else(|| get_str(&record, &["error_type"]))
            .unwrap_or_else(|| decision.to_string());
        span.extend_from_slice(br#","status":{"code":2,"message":"#);
        write_str(&mut span, &message);
        span.push(b'}');
    }
    span.push(b'}');
    Some(span)
}

/// Attributes copied as they are from a record member: (layer, attribute, member, inner
/// member). Layer `*`: every layer (Tollgate's own: decision, rule, request id, identity).
const COPIED: &[(&str, &str, &str, &str)] = &[
    ("llm", "gen_ai.provider.name", "provider", ""),
    ("llm", "gen_ai.request.model", "model", ""),
    ("llm", "gen_ai.response.model", "upstream_model", ""),
    ("llm", "gen_ai.request.max_tokens", "max_output_tokens", ""),
    ("llm", "gen_ai.usage.input_tokens", "tokens", "input"),
    ("llm", "gen_ai.usage.output_tokens", "tokens", "output"),
    ("llm", "error.type", "error_type", ""),
    ("llm", "tollgate.cost_micro_usd", "cost_micro_usd", ""),
    ("llm", "tollgate.llm.stream", "stream", ""),
    ("mcp", "gen_ai.tool.name", "tool", ""),
    ("mcp", "gen_ai.prompt.name", "prompt", ""),
    ("mcp", "mcp.resource.uri", "resource_uri", ""),
    ("mcp", "mcp.session.id", "session_id", ""),
    ("mcp", "tollgate.mcp.server", "server", ""),
    ("mcp", "tollgate.mcp.batch_index", "batch_index", ""),
    ("a2a", "gen_ai.agent.name", "target", ""),
    ("a2a", "gen_ai.conversation.id", "context_id", ""),
    ("a2a", "a2a.task.id", "task_id", ""),
    ("a2a", "a2a.task.state", "task_state", ""),
    ("a2a", "a2a.message.id", "message_id", ""),
    ("a2a", "tollgate.a2a.caller", "caller", ""),
    ("a2a", "tollgate.a2a.hop", "hop", ""),
    ("*", "tollgate.decision", "decision", ""),
    ("*", "tollgate.enforced", "enforced", ""),
    ("*", "tollgate.rule_id", "rule_id", ""),
    ("*", "tollgate.reason", "reason", ""),
    ("*", "tollgate.request_id", "request_id", ""),
    ("*", "http.response.status_code", "status", ""),
    ("*", "tollgate.principal", "identity", "principal"),
    ("*", "tollgate.team", "identity", "team"),
    ("*", "tollgate.identity.source", "identity", "source"),
    ("*", "tollgate.key_name", "identity", "key_name"),
    ("*", "tollgate.agent", "agent", ""),
    ("*", "tollgate.on_behalf_of", "on_behalf_of", ""),
];

/// The span's attributes; returns the span name: `{operation} {model}` (LLM),
/// `{mcp.method.name} {target}` (MCP), `{a2a.method.name} {agent}` (A2A).
fn attributes(layer: &str, r: &RawMembers<'_>, attrs: &mut Attrs) -> String {
    // (what the span does, the attribute naming it, and its target)
    let (what, target) = match layer {
        "llm" => {
            let operation = get_str(r, &["operation"]).unwrap_or_else(|| "chat".into());
            attrs.str("gen_ai.operation.name", &operation);
            (operation, get_str(r, &["model"]))
        }
        "mcp" => {
            let method = get_str(r, &["method"]).unwrap_or_else(|| "mcp".into());
            attrs.str("mcp.method.name", &method);
            if method == "tools/call" {
                attrs.str("gen_ai.operation.name", "execute_tool");
            }
            // `jsonrpc.request.id` is a string attribute whatever the id's JSON type.
            if let Some(Scalar::Str(id) | Scalar::Int(id)) = get(r, &["jsonrpc_id"]) {
                attrs.str("jsonrpc.request.id", &id);
            }
            if let Some(Scalar::Int(code)) = get(r, &["rpc_error_code"]) {
                attrs.str("error.type", &code);
            }
            let target = get_str(r, &["tool"]).or_else(|| get_str(r, &["prompt"])).or_else(|| get_str(r, &["resource_uri"]));
            (method, target)
        }
        "a2a" => {
            let method = get_str(r, &["jsonrpc_method"]).or_else(|| get_str(r, &["method"])).unwrap_or_else(|| "a2a".into());
            attrs.str("gen_ai.operation.name", "invoke_agent");
            attrs.str("a2a.method.name", &method);
            (method, get_str(r, &["target"]))
        }
        other => (other.to_string(), None),
    };
    if layer != "llm" {
        if let Some(Scalar::Int(code)) = get(r, &["rpc_error_code"]) {
            attrs.str("rpc.response.status_code", &code);
        }
    }
    attrs.str("tollgate.layer", layer);
    for (of, key, member, inner) in COPIED {
        if *of == layer || *of == "*" {
            let value = if inner.is_empty() { get(r, &[member]) } else { get(r, &[member, inner]) };
            attrs.value(key, value);
        }
    }
    match target {
        Some(target) => format!("{what} {target}"),
        None => what,
    }
}

/// The body of one export request: `spans` (OTLP/JSON `Span` objects, already serialized)
/// under one resource (`service.name`) and one scope (the filter's name).
pub fn export_body(service_name: &str, scope: &str, spans: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(256 + spans.iter().map(Vec::len).sum::<usize>());
    body.extend_from_slice(br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"#);
    write_str(&mut body, service_name);
    body.extend_from_slice(br#"}}]},"scopeSpans":[{"scope":{"name":"#);
    write_str(&mut body, scope);
    body.extend_from_slice(concat!(r#","version":""#, env!("CARGO_PKG_VERSION"), r#""},"spans":["#).as_bytes());
    crate::wire::push_json_elements(&mut body, spans);
    body.extend_from_slice(b"]}]}]}");
    body
}

/// How many spans to send now (0: none): a full batch whenever one is waiting, a partial one
/// once `flush_ms` passed since the last send, nothing while `max_in_flight` are out.
pub fn to_send(config: &OtlpConfig, queued: usize, in_flight: u32, since_last_ms: u64) -> usize {
    if queued == 0 || in_flight >= config.max_in_flight {
        return 0;
    }
    if queued >= config.max_batch || since_last_ms >= config.flush_ms {
        queued.min(config.max_batch)
    } else {
        0
    }
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<Vec<u8>>,
    dropped: u64,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Queues the span of `record_json` (see [`span_json`]); drops the oldest when full.
pub fn enqueue(host: &dyn Host, config: &OtlpConfig, record_json: &[u8]) {
    let Some(bytes) = span_json(record_json, host.now_nanos()) else { return };
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        while q.spans.len() >= config.max_queued {
            q.spans.pop_front();
            q.dropped = q.dropped.saturating_add(1);
        }
        q.spans.push_back(bytes);
    });
}

/// Takes up to `n` spans, oldest first.
pub fn take(n: usize) -> Vec<Vec<u8>> {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let n = n.min(q.spans.len());
        q.spans.drain(..n).collect()
    })
}

/// How many spans wait.
pub fn queued() -> usize {
    QUEUE.with(|q| q.borrow().spans.len())
}

/// Spans dropped since the last call.
pub fn take_dropped() -> u64 {
    QUEUE.with(|q| std::mem::take(&mut q.borrow_mut().dropped))
}

/// Sends one export request of `spans`; the token of the call, or the host's refusal.
pub fn dispatch(host: &dyn Host, config: &OtlpConfig, scope: &str, spans: &[Vec<u8>]) -> crate::host::HostResult<u32> {
    let body = export_body(&config.service_name, scope, spans);
    let headers = [
        (":method", "POST"),
        (":path", config.path.as_str()),
        (":authority", config.authority.as_str()),
        ("content-type", "application/json"),
    ];
    host.dispatch_http(&HttpCall { cluster: &config.cluster, headers: &headers, body: &body, timeout_ms: config.timeout_ms })
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
