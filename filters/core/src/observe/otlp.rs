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
use serde_json::{json, Map, Value};
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
    type Error = String;
    fn try_from(raw: RawOtlpConfig) -> Result<Self, String> {
        if raw.cluster.trim().is_empty() {
            return Err("otlp.cluster must not be empty".into());
        }
        if !raw.path.starts_with('/') {
            return Err(format!("otlp.path `{}` must start with `/`", raw.path));
        }
        if raw.max_queued == 0 || raw.max_queued > 65_536 {
            return Err("otlp.max_queued must be 1..=65536".into());
        }
        if raw.max_batch == 0 || raw.max_batch > raw.max_queued {
            return Err("otlp.max_batch must be 1..=max_queued".into());
        }
        if raw.max_in_flight == 0 || raw.max_in_flight > 64 {
            return Err("otlp.max_in_flight must be 1..=64".into());
        }
        if !(100..=60_000).contains(&raw.flush_ms) {
            return Err("otlp.flush_ms must be 100..=60000".into());
        }
        if !(1..=60_000).contains(&raw.timeout_ms) {
            return Err("otlp.timeout_ms must be 1..=60000".into());
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

/// OTLP `SpanKind`: the gateway's span is its call to the upstream on the caller's behalf
/// (the GenAI inference span is `CLIENT`); the upstream's server span nests under it.
const SPAN_KIND_CLIENT: u64 = 3;
/// OTLP `StatusCode`.
const STATUS_ERROR: u64 = 2;

fn push_attr(attrs: &mut Vec<Value>, key: &str, value: Option<&Value>) {
    let Some(value) = value else { return };
    let any = match value {
        Value::String(s) if !s.is_empty() => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        // OTLP JSON: int64 as a decimal string.
        Value::Number(n) if n.is_u64() || n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n }),
        _ => return,
    };
    attrs.push(json!({ "key": key, "value": any }));
}

fn push_str(attrs: &mut Vec<Value>, key: &str, value: &str) {
    push_attr(attrs, key, Some(&Value::String(value.to_string())));
}

fn get<'a>(record: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = record.get(*first)?;
    for key in rest {
        value = value.get(*key)?;
    }
    Some(value).filter(|v| !v.is_null())
}

fn get_str<'a>(record: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    get(record, path).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && !s.bytes().all(|b| b == b'0')
}

/// The span of one audit record (a JSON object; a JSON array, as the MCP filter writes for a
/// JSON-RPC batch, gives the span of its first record with `tollgate.batch.size`), as an
/// OTLP/JSON `Span` object. `None` when the record has no valid trace and span ids.
/// `now_nanos` ends the span when the record has no duration.
pub fn span_json(record_json: &[u8], now_nanos: u64) -> Option<Value> {
    let parsed: Value = serde_json::from_slice(record_json).ok()?;
    let (record, batch) = match parsed {
        Value::Object(map) => (map, None),
        Value::Array(items) => {
            let size = items.len();
            match items.into_iter().next() {
                Some(Value::Object(map)) => (map, Some(size)),
                _ => return None,
            }
        }
        _ => return None,
    };
    let trace_id = get_str(&record, &["trace_id"]).filter(|s| is_hex_id(s, 32))?;
    let span_id = get_str(&record, &["span_id"]).filter(|s| is_hex_id(s, 16))?;
    let start_ms = get(&record, &["timestamp_ms"]).and_then(Value::as_u64).unwrap_or(now_nanos / 1_000_000);
    let start = start_ms.saturating_mul(1_000_000);
    let end = match get(&record, &["duration_ms"]).and_then(Value::as_u64) {
        Some(d) => start.saturating_add(d.saturating_mul(1_000_000)),
        None => now_nanos.max(start),
    };
    let layer = get_str(&record, &["layer"]).unwrap_or("unknown");
    let mut attrs = Vec::with_capacity(24);
    let name = layer_attributes(layer, &record, &mut attrs);
    common_attributes(layer, &record, batch, &mut attrs);

    let mut span = Map::new();
    span.insert("traceId".into(), Value::String(trace_id.to_ascii_lowercase()));
    span.insert("spanId".into(), Value::String(span_id.to_ascii_lowercase()));
    if let Some(parent) = get_str(&record, &["parent_span_id"]).filter(|s| is_hex_id(s, 16)) {
        span.insert("parentSpanId".into(), Value::String(parent.to_ascii_lowercase()));
    }
    span.insert("name".into(), Value::String(name));
    span.insert("kind".into(), json!(SPAN_KIND_CLIENT));
    span.insert("startTimeUnixNano".into(), Value::String(start.to_string()));
    span.insert("endTimeUnixNano".into(), Value::String(end.to_string()));
    span.insert("attributes".into(), Value::Array(attrs));
    let decision = get_str(&record, &["decision"]).unwrap_or("allow");
    let status = get(&record, &["status"]).and_then(Value::as_u64).unwrap_or(0);
    if decision != "allow" || status >= 500 {
        let message = get_str(&record, &["reason"])
            .or_else(|| get_str(&record, &["error"]))
            .or_else(|| get_str(&record, &["error_type"]))
            .unwrap_or(decision);
        span.insert("status".into(), json!({ "code": STATUS_ERROR, "message": message }));
    }
    Some(Value::Object(span))
}

/// The layer's convention attributes; returns the span name.
fn layer_attributes(layer: &str, r: &Map<String, Value>, attrs: &mut Vec<Value>) -> String {
    match layer {
        "llm" => {
            let operation = get_str(r, &["operation"]).unwrap_or("chat");
            push_str(attrs, "gen_ai.operation.name", operation);
            push_attr(attrs, "gen_ai.provider.name", get(r, &["provider"]));
            push_attr(attrs, "gen_ai.request.model", get(r, &["model"]));
            push_attr(attrs, "gen_ai.response.model", get(r, &["upstream_model"]));
            push_attr(attrs, "gen_ai.request.max_tokens", get(r, &["max_output_tokens"]));
            push_attr(attrs, "gen_ai.usage.input_tokens", get(r, &["tokens", "input"]));
            push_attr(attrs, "gen_ai.usage.output_tokens", get(r, &["tokens", "output"]));
            push_attr(attrs, "error.type", get(r, &["error_type"]));
            push_attr(attrs, "tollgate.cost_micro_usd", get(r, &["cost_micro_usd"]));
            push_attr(attrs, "tollgate.llm.stream", get(r, &["stream"]));
            match get_str(r, &["model"]) {
                Some(model) => format!("{operation} {model}"),
                None => operation.to_string(),
            }
        }
        "mcp" => {
            let method = get_str(r, &["method"]).unwrap_or("mcp");
            push_str(attrs, "mcp.method.name", method);
            if method == "tools/call" {
                push_str(attrs, "gen_ai.operation.name", "execute_tool");
            }
            push_attr(attrs, "gen_ai.tool.name", get(r, &["tool"]));
            push_attr(attrs, "gen_ai.prompt.name", get(r, &["prompt"]));
            push_attr(attrs, "mcp.resource.uri", get(r, &["resource_uri"]));
            push_attr(attrs, "mcp.session.id", get(r, &["session_id"]));
            // `jsonrpc.request.id` is a string attribute whatever the id's JSON type.
            match get(r, &["jsonrpc_id"]) {
                Some(Value::String(s)) => push_str(attrs, "jsonrpc.request.id", s),
                Some(Value::Number(n)) => push_str(attrs, "jsonrpc.request.id", &n.to_string()),
                _ => {}
            }
            if let Some(code) = get(r, &["rpc_error_code"]).and_then(Value::as_i64) {
                push_str(attrs, "rpc.response.status_code", &code.to_string());
                push_str(attrs, "error.type", &code.to_string());
            }
            push_attr(attrs, "tollgate.mcp.server", get(r, &["server"]));
            let target = get_str(r, &["tool"]).or_else(|| get_str(r, &["prompt"])).or_else(|| get_str(r, &["resource_uri"]));
            match target {
                Some(target) => format!("{method} {target}"),
                None => method.to_string(),
            }
        }
        "a2a" => {
            let method = get_str(r, &["jsonrpc_method"]).or_else(|| get_str(r, &["method"])).unwrap_or("a2a");
            push_str(attrs, "gen_ai.operation.name", "invoke_agent");
            push_str(attrs, "a2a.method.name", method);
            push_attr(attrs, "gen_ai.agent.name", get(r, &["target"]));
            push_attr(attrs, "gen_ai.conversation.id", get(r, &["context_id"]));
            push_attr(attrs, "a2a.task.id", get(r, &["task_id"]));
            push_attr(attrs, "a2a.task.state", get(r, &["task_state"]));
            push_attr(attrs, "a2a.message.id", get(r, &["message_id"]));
            push_attr(attrs, "tollgate.a2a.caller", get(r, &["caller"]));
            push_attr(attrs, "tollgate.a2a.hop", get(r, &["hop"]));
            if let Some(code) = get(r, &["rpc_error_code"]).and_then(Value::as_i64) {
                push_str(attrs, "rpc.response.status_code", &code.to_string());
            }
            match get_str(r, &["target"]) {
                Some(target) => format!("{method} {target}"),
                None => method.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Tollgate's own attributes: decision, rule, request id, status, identity.
fn common_attributes(layer: &str, r: &Map<String, Value>, batch: Option<usize>, attrs: &mut Vec<Value>) {
    push_str(attrs, "tollgate.layer", layer);
    push_attr(attrs, "tollgate.decision", get(r, &["decision"]));
    push_attr(attrs, "tollgate.enforced", get(r, &["enforced"]));
    push_attr(attrs, "tollgate.rule_id", get(r, &["rule_id"]));
    push_attr(attrs, "tollgate.reason", get(r, &["reason"]));
    push_attr(attrs, "tollgate.request_id", get(r, &["request_id"]));
    push_attr(attrs, "http.response.status_code", get(r, &["status"]));
    push_attr(attrs, "tollgate.principal", get(r, &["identity", "principal"]));
    push_attr(attrs, "tollgate.team", get(r, &["identity", "team"]).or_else(|| get(r, &["team"])));
    push_attr(attrs, "tollgate.identity.source", get(r, &["identity", "source"]));
    push_attr(attrs, "tollgate.key_name", get(r, &["identity", "key_name"]));
    push_attr(attrs, "tollgate.agent", get(r, &["agent"]));
    push_attr(attrs, "tollgate.on_behalf_of", get(r, &["on_behalf_of"]));
    if let Some(size) = batch {
        push_attr(attrs, "tollgate.batch.size", Some(&json!(size)));
    }
}

/// The body of one export request: `spans` (OTLP/JSON `Span` objects, already serialized)
/// under one resource (`service.name`) and one scope (the filter's name).
pub fn export_body(service_name: &str, scope: &str, spans: &[Vec<u8>]) -> Vec<u8> {
    let head = json!({ "key": "service.name", "value": { "stringValue": service_name } });
    let scope = json!({ "name": scope, "version": env!("CARGO_PKG_VERSION") });
    let mut body = Vec::with_capacity(256 + spans.iter().map(Vec::len).sum::<usize>());
    body.extend_from_slice(br#"{"resourceSpans":[{"resource":{"attributes":["#);
    body.extend_from_slice(head.to_string().as_bytes());
    body.extend_from_slice(br#"]},"scopeSpans":[{"scope":"#);
    body.extend_from_slice(scope.to_string().as_bytes());
    body.extend_from_slice(br#","spans":["#);
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(span);
    }
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
    let Some(span) = span_json(record_json, host.now_nanos()) else { return };
    let Ok(bytes) = serde_json::to_vec(&span) else { return };
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
