//! One HTTP exchange through the MCP filter, written against the core `Host` trait so the
//! whole flow runs natively against `MemoryHost`; `filter.rs` only adapts it to proxy-wasm.
//!
//! Request: identity, server, revision and HTTP checks on headers (held until the body is
//! judged); the whole POST body parsed, checked (duplicate keys, batches, 2026-07-28 routing
//! headers) and every message judged by the policy. A denial is answered locally and never
//! forwarded. Response: list results filtered (JSON buffered; SSE rewritten event by event,
//! holding at most the event in progress), tool results' `isError` read, one audit record
//! per JSON-RPC message emitted when the response ends.

use crate::config::{Config, DenyStyle};
use crate::args::Json;
use crate::listfilter::{filter_list, id_key, IdKey, ListKind, ResponseHead, ServerMessage};
use crate::message::{self, codes, read_message_at, read_parsed_message_at, ObjectParams, Refusal, Revision, Target};
use crate::policy::{Policy, Subject};
use crate::ratelimit::RateLimits;
use crate::replies::{self, Denied, Reply};
use serde::Serialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::rc::Rc;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::observe::audit::{self, Decision, Layer, Record};
use tollgate_core::config::ConfigError;
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::{BodyBuffer, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::identity::{self, Identity, IdentityError};
use tollgate_core::wire::jsonrpc::{parse_body_unique, parse_body_unique_as, Body, BodyError, Kind};
use tollgate_core::observe::metrics::{LabelCap, Metrics};
use tollgate_core::reply::{rpc_error_body, send_json};
use tollgate_core::wire::sse::{SseEvent, SseItem, SseParser};
use tollgate_core::wire::trace::{self, TraceStep};

/// Distinct values per VM of each client-chosen label (`tool`, `method`), each label its own
/// cap; further values are counted as `other` (stat names must stay bounded).
const MAX_LABEL_VALUES: usize = 256;

/// The compiled, immutable configuration shared by every stream of a VM.
pub struct Shared {
    pub config: Config,
    pub policy: Option<Policy>,
    pub rate_limits: RateLimits,
    /// Request headers that may carry a client credential (removed unless
    /// `forward_credentials`), computed once.
    credential_headers: Vec<String>,
    tool_labels: LabelCap,
    method_labels: LabelCap,
}

impl Shared {
    pub fn build(config: Config) -> Result<Shared, ConfigError> {
        let policy = match &config.policy {
            Some(p) => Some(Policy::compile(p, "policy")?),
            None => None,
        };
        let rate_limits = RateLimits::compile(&config.rate_limits, "rate_limits")?;
        let credential_headers = config.identity.credential_headers();
        Ok(Shared {
            config,
            policy,
            rate_limits,
            credential_headers,
            tool_labels: LabelCap::new(MAX_LABEL_VALUES),
            method_labels: LabelCap::new(MAX_LABEL_VALUES),
        })
    }

    fn dry_run(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.dry_run)
    }

    fn deny_style(&self) -> DenyStyle {
        self.policy.as_ref().map(|p| p.deny_style).unwrap_or_default()
    }
}

/// The audit detail of one message (flattened beside the core envelope).
#[derive(Debug, Default, Serialize)]
struct MessageDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_id: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_uri: Option<String>,
    /// SHA-256 of the canonical arguments (sorted keys, no whitespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments_sha256: Option<String>,
    /// The canonical arguments themselves (only with `audit_arguments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// `result.isError` of the upstream's tool result.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_error: Option<bool>,
    /// `error.code` when the upstream answered with a JSON-RPC error.
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc_error_code: Option<i64>,
    /// Items removed from a list result (counted, not removed, in dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    list_hidden: Option<usize>,
}

#[derive(Debug)]
struct MessageRecord {
    decision: Decision,
    enforced: bool,
    /// Refused (or, in dry run, would have been) by a rate limit: `rule_id` is the limit.
    rate_limited: bool,
    rule_id: Option<String>,
    error: Option<String>,
    detail: MessageDetail,
}

impl MessageRecord {
    fn new(decision: Decision) -> Self {
        MessageRecord {
            decision,
            enforced: true,
            rate_limited: false,
            rule_id: None,
            error: None,
            detail: MessageDetail::default(),
        }
    }

    /// The `decision` label of the message and call counters.
    fn label(&self) -> &'static str {
        match self.decision {
            Decision::Allow => "allow",
            Decision::Deny if self.rate_limited && self.enforced => "rate_limited",
            Decision::Deny if self.rate_limited => "dryrun_rate_limited",
            Decision::Deny if self.enforced => "deny",
            Decision::Deny => "dryrun_deny",
            Decision::Error => "error",
        }
    }
}

/// Audit `reason` of a call refused by a rate limit.
const RATE_LIMITED: &str = "rate_limited";

/// The request-level part of every record.
#[derive(Serialize)]
struct Detail<'a> {
    server: &'a str,
    http_method: &'a str,
    revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_index: Option<usize>,
    #[serde(flatten)]
    message: &'a MessageDetail,
}

/// A response the filter expects for a forwarded request.
#[derive(Debug)]
struct Expect {
    key: IdKey<'static>,
    list: Option<ListKind>,
    record: usize,
}

#[derive(Debug)]
enum ResponseMode {
    /// Untouched.
    Pass,
    /// JSON: a copy is read for the audit (no rewriting possible).
    JsonCopy { copy: Vec<u8>, overflow: bool },
    /// JSON held by Envoy until the end, then rewritten.
    JsonBuffer,
    /// SSE rewritten event by event.
    Sse(Box<SseParser>),
    /// Failed closed mid-response: everything further is dropped.
    Dropped,
}

pub struct Exchange {
    shared: Rc<Shared>,
    metrics: Rc<Metrics>,
    start_ms: u64,
    http_method: String,
    revision: Revision,
    /// An `MCP-Protocol-Version` the filter does not know (as sent, truncated): the POST is
    /// answered with -32022 once its body gives the request's id.
    unsupported_revision: Option<String>,
    identity: Option<Identity>,
    server: String,
    session_id: Option<String>,
    trace: Option<TraceStep>,
    records: Vec<MessageRecord>,
    batch: bool,
    expect: Vec<Expect>,
    response: ResponseMode,
    status: Option<u32>,
    replied: bool,
    emitted: bool,
    /// Judged a POST body: body callbacks after that pass through.
    body_done: bool,
    request_id: Option<String>,
}

enum Outcome {
    Keep,
    Replace(String),
}

impl Exchange {
    pub fn new(shared: Rc<Shared>, metrics: Rc<Metrics>) -> Self {
        Exchange {
            shared,
            metrics,
            start_ms: 0,
            http_method: String::new(),
            revision: Revision::DEFAULT,
            unsupported_revision: None,
            identity: None,
            server: String::new(),
            session_id: None,
            trace: None,
            records: Vec::new(),
            batch: false,
            expect: Vec::new(),
            response: ResponseMode::Pass,
            status: None,
            replied: false,
            emitted: false,
            body_done: false,
            request_id: None,
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    // ----- request ------------------------------------------------------------------------

    fn post_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        if !message::is_json_content_type(host.request_header("content-type").as_deref()) {
            let reply = replies::refusal(415, None, codes::INVALID_REQUEST, "Content-Type must be application/json");
            return self.refuse_request(host, reply, Decision::Error, "content-type is not application/json");
        }
        if !message::is_identity_encoding(host.request_header("content-encoding").as_deref()) {
            let reply = replies::refusal(415, None, codes::INVALID_REQUEST, "Content-Encoding must be identity");
            return self.refuse_request(host, reply, Decision::Error, "content-encoding is not identity");
        }
        let declared = host.request_header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config().max_body_bytes as u64) {
            return self.too_large(host);
        }
        if end_of_stream {
            return self.judge_body(host, b"");
        }
        // Hold the headers until the body is judged: nothing reaches the server before.
        Step::Pause
    }

    fn session_request(&mut self, host: &dyn Host) -> Step {
        let method = self.http_method.clone();
        if !self.revision.has_get_and_delete() {
            let reason = format!("{method} does not exist in MCP {}", self.revision.as_str());
            return self.refuse_request(host, replies::method_not_allowed(), Decision::Error, &reason);
        }
        let shared = self.shared.clone();
        let mut record = MessageRecord::new(Decision::Allow);
        if let Some(policy) = &shared.policy {
            let verdict = policy.may_use_server(Subject { identity: self.identity.as_ref(), server: &self.server });
            record.rule_id = verdict.rule_id.map(String::from);
            if !verdict.allowed {
                record.decision = Decision::Deny;
                record.detail.reason = Some("identity may not use this server".into());
                if !policy.dry_run {
                    self.count_message(host, &method, None, record.label());
                    self.records.push(record);
                    let reply =
                        replies::session_denial(policy.deny_style, verdict.rule_id, self.config().resource_metadata.as_deref());
                    return self.reply(host, &reply);
                }
                record.enforced = false;
            }
        }
        self.count_message(host, &method, None, record.label());
        self.records.push(record);
        self.body_done = true;
        Step::Continue
    }

    fn too_large(&mut self, host: &dyn Host) -> Step {
        let max = self.config().max_body_bytes;
        let reply = replies::refusal(413, None, codes::INVALID_REQUEST, &format!("request body larger than {max} bytes"));
        self.refuse_request(host, reply, Decision::Error, "body too large")
    }

    /// Parses and judges a whole POST body.
    fn judge_body(&mut self, host: &dyn Host, bytes: &[u8]) -> Step {
        self.body_done = true;
        // Duplicate keys anywhere are refused: parsers keep different duplicates, so the
        // policy and the upstream could read different values. Params are read in the same
        // pass; a body that pass cannot read (not JSON-RPC, params not an object or not as
        // MCP has them) is read again with raw params, which gives the usual answers.
        let body = match parse_body_unique_as::<ObjectParams<'_>>(bytes) {
            Ok(b) => Ok(b),
            Err(_) => match parse_body_unique(bytes) {
                Ok(b) => Err(b),
                Err(BodyError::Rpc(e)) => {
                    let reply = replies::refusal(400, None, e.code(), &rpc_message(e.code(), e.message()));
                    return self.refuse_request(host, reply, Decision::Error, e.message());
                }
                Err(BodyError::Ambiguous(e)) => {
                    let reply = replies::refusal(400, None, codes::INVALID_REQUEST, &format!("Invalid Request: {e}"));
                    return self.refuse_request(host, reply, Decision::Error, &e);
                }
            },
        };
        self.batch = matches!(body, Ok(Body::Batch(_)) | Err(Body::Batch(_)));
        if let Some(requested) = self.unsupported_revision.clone() {
            // The body was read only for the request's id (a notification, a response or a
            // batch: `null`); nothing of it is judged or forwarded.
            let single = match &body {
                Ok(Body::Single(e)) => e.kind().ok().filter(|k| *k == Kind::Request).and(e.id),
                Err(Body::Single(e)) => e.kind().ok().filter(|k| *k == Kind::Request).and(e.id),
                _ => None,
            };
            self.batch = false;
            let reply = replies::unsupported_revision(single, &requested);
            let reason = format!("unsupported MCP-Protocol-Version `{requested}`");
            return self.refuse_request(host, reply, Decision::Error, &reason);
        }
        if self.batch && !self.revision.allows_batches() {
            let msg = format!("JSON-RPC batches are not supported in MCP {}", self.revision.as_str());
            let reply = replies::refusal(400, None, codes::INVALID_REQUEST, &msg);
            return self.refuse_request(host, reply, Decision::Error, &msg);
        }
        let mut messages = Vec::new();
        match body {
            Ok(parsed) => {
                messages.reserve_exact(parsed.messages().len());
                for envelope in parsed.into_messages() {
                    let id = envelope.id;
                    match read_parsed_message_at(envelope, self.revision) {
                        Ok(m) => messages.push(m),
                        Err(refusal) => return self.refuse_message(host, id, &refusal),
                    }
                }
            }
            Err(raw) => {
                messages.reserve_exact(raw.messages().len());
                for envelope in raw.messages() {
                    match read_message_at(envelope, self.revision) {
                        Ok(m) => messages.push(m),
                        Err(refusal) => return self.refuse_message(host, envelope.id, &refusal),
                    }
                }
            }
        }
        if self.batch {
            // Responses are matched to requests by id: two requests of one batch with the
            // same id (or ids a server may take for the same: `1`, `1.0`, `1e0`) would let
            // a list result pass as the answer to another request.
            let mut ids = HashSet::with_capacity(messages.len());
            for m in &messages {
                if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                    if !ids.insert(id_key(id)) {
                        let msg = format!("Invalid Request: duplicate request id {} in batch", message::truncate(id.get(), 64));
                        let reply = replies::refusal(400, None, codes::INVALID_REQUEST, &msg);
                        return self.refuse_request(host, reply, Decision::Error, &msg);
                    }
                }
            }
        }
        if self.revision.has_routing_headers() {
            let method_header = host.request_header("mcp-method");
            let name_header = host.request_header("mcp-name");
            for m in &messages {
                if let Err(refusal) = message::check_routing_headers(method_header.as_deref(), name_header.as_deref(), m) {
                    return self.refuse_message(host, m.id, &refusal);
                }
            }
        }

        // Judge every message.
        let shared = self.shared.clone();
        let policy = shared.policy.as_ref();
        let mut verdicts: Vec<Option<Option<String>>> = Vec::with_capacity(messages.len());
        let mut any_denied = false;
        for m in &messages {
            let mut record = MessageRecord::new(Decision::Allow);
            record.detail.kind = Some(match m.kind {
                Kind::Request => "request",
                Kind::Notification => "notification",
                Kind::Response => "response",
            });
            if m.kind != Kind::Response {
                let method = message::static_method(&m.method).map_or_else(|| Cow::Owned(m.method.to_string()), Cow::Borrowed);
                record.detail.method = Some(method);
            }
            record.detail.jsonrpc_id = m.id.map(RawValue::to_owned);
            match &m.target {
                Target::Tool(n) => record.detail.tool = Some(n.to_string()),
                Target::Prompt(n) => record.detail.prompt = Some(n.to_string()),
                Target::Resource(u) => record.detail.resource_uri = Some(u.to_string()),
                Target::None => {}
            }
            let args = m.arguments.as_ref();
            if let Some(v) = args {
                // Arguments are mostly short: one buffer, seldom grown.
                let mut canonical = Vec::with_capacity(256);
                v.write_canonical(&mut canonical);
                record.detail.arguments_sha256 = Some(sha256_hex(&canonical));
                if self.config().audit_arguments {
                    record.detail.arguments =
                        String::from_utf8(canonical).ok().and_then(|c| RawValue::from_string(c).ok());
                }
            }
            let mut verdict = None;
            if let (Some(policy), Kind::Request) = (policy, m.kind) {
                let empty = Json::Object(Vec::new());
                let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
                let v = policy.decide(subject, &m.method, &m.target, args.unwrap_or(&empty));
                record.rule_id = v.rule_id.map(String::from);
                if !v.allowed {
                    any_denied = true;
                    record.decision = Decision::Deny;
                    record.enforced = !policy.dry_run;
                    record.detail.reason =
                        Some(if v.rule_id.is_some() { "denied by rule" } else { "no rule allows" }.to_string());
                    verdict = Some(v.rule_id.map(String::from));
                }
            }
            verdicts.push(verdict);
            self.records.push(record);
        }

        let enforce = any_denied && !shared.dry_run();

        // Rate limits: only the `tools/call` requests the policy allowed, only when the
        // request is not denied anyway; all or nothing for the request.
        let mut limited: Option<(String, u64)> = None;
        if !enforce && !shared.rate_limits.is_empty() {
            let calls: Vec<(usize, &str)> = messages
                .iter()
                .zip(verdicts.iter())
                .enumerate()
                .filter_map(|(i, (m, verdict))| match &m.target {
                    Target::Tool(name) if m.kind == Kind::Request && verdict.is_none() => Some((i, name.as_ref())),
                    _ => None,
                })
                .collect();
            let tools: Vec<&str> = calls.iter().map(|(_, t)| *t).collect();
            let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
            if let Err(refused) = shared.rate_limits.admit(host, subject, &tools) {
                let at = calls.get(refused.index).map(|(i, _)| *i);
                if let Some(record) = at.and_then(|i| self.records.get_mut(i)) {
                    record.decision = Decision::Deny;
                    record.enforced = !shared.dry_run();
                    record.rate_limited = true;
                    record.rule_id = Some(refused.limit_id.to_string());
                    record.detail.reason = Some(RATE_LIMITED.to_string());
                }
                if let Some(verdict) = at.and_then(|i| verdicts.get_mut(i)) {
                    *verdict = Some(Some(refused.limit_id.to_string()));
                }
                limited = Some((refused.limit_id.to_string(), refused.retry_after_secs));
            }
        }
        let enforce_limit = limited.is_some() && !shared.dry_run();

        for (m, record) in messages.iter().zip(self.records.iter_mut()) {
            if (enforce || enforce_limit) && m.kind == Kind::Request && record.decision == Decision::Allow {
                // Acceptable on its own, but its batch is refused whole.
                record.decision = Decision::Deny;
                record.detail.reason = Some(
                    if enforce { "another message in the batch was denied" } else { "another message in the batch was rate limited" }
                        .into(),
                );
            }
        }
        for (m, record) in messages.iter().zip(self.records.iter()) {
            if m.kind == Kind::Request {
                let tool = match &m.target {
                    Target::Tool(n) => Some(n.as_ref()),
                    _ => None,
                };
                self.count_message(host, &m.method, tool, record.label());
            } else {
                self.count_message(host, if m.kind == Kind::Response { "response" } else { &m.method }, None, record.label());
            }
        }
        if enforce || enforce_limit {
            let denied: Vec<Denied<'_>> = messages
                .iter()
                .zip(verdicts.iter())
                .filter(|(m, _)| m.kind == Kind::Request)
                .map(|(m, v)| Denied {
                    id: m.id,
                    method: &m.method,
                    target: &m.target,
                    denied: v.as_ref().map(|rule| rule.as_deref()),
                })
                .collect();
            let reply = match &limited {
                Some((limit_id, retry_after)) if !enforce => replies::rate_limited(&denied, self.batch, limit_id, *retry_after),
                _ => replies::denial(
                    shared.deny_style(),
                    self.revision,
                    &denied,
                    self.batch,
                    self.config().resource_metadata.as_deref(),
                ),
            };
            return self.reply(host, &reply);
        }
        for (i, m) in messages.iter().enumerate() {
            if let (Kind::Request, Some(id)) = (m.kind, m.id) {
                self.expect.push(Expect { key: id_key(id).into_owned(), list: ListKind::from_method(&m.method), record: i });
            }
        }
        Step::Continue
    }

    // ----- response -----------------------------------------------------------------------

    /// Failed closed: this chunk is dropped; the stream's end carries a JSON-RPC error.
    fn drop_chunk(&self, host: &dyn Host, body_size: usize, end_of_stream: bool, message: &str) {
        self.replace_response(host, body_size, &[]);
        if end_of_stream {
            let error = self.response_error(message);
            self.replace_response(host, 0, &error);
        }
    }

    fn replace_response(&self, host: &dyn Host, size: usize, with: &[u8]) {
        if let Err(e) = host.set_body(BodyBuffer::Response, 0, size, with) {
            host.log(LogLevel::Error, &format!("tollgate-mcp: cannot rewrite the response body: {e}"));
        }
    }

    fn fail_response_headers(&self, host: &dyn Host) {
        host.try_set_header(HeaderMap::Response, "content-encoding", None);
        host.try_set_header(HeaderMap::Response, "content-length", None);
        host.try_set_header(HeaderMap::Response, "content-type", Some("application/json"));
        host.try_set_header(HeaderMap::Response, ":status", Some("502"));
        host.try_set_header(HeaderMap::Response, "cache-control", Some("private"));
    }

    /// A list was asked for and the answer is neither JSON nor SSE: the gateway cannot filter
    /// it, so it is never passed (fail closed, also for a body that would read as a list):
    /// the client gets a JSON-RPC error, with 502 in place of a success status (an error
    /// status is kept: a client acts on it, e.g. 404 for an expired session). Recorded as an
    /// error. In dry run, recorded only.
    fn unfilterable_list(&mut self, host: &dyn Host, content_type: Option<&str>) {
        let error = format!(
            "list response with content type `{}` cannot be filtered",
            message::truncate(content_type.unwrap_or(""), 64).escape_debug()
        );
        let dry_run = self.shared.dry_run();
        for e in self.expect.iter().filter(|e| e.list.is_some()) {
            if let Some(rec) = self.records.get_mut(e.record) {
                if !dry_run {
                    rec.decision = Decision::Error;
                }
                rec.error = Some(error.clone());
            }
        }
        if dry_run {
            return;
        }
        host.log(LogLevel::Warn, &format!("tollgate-mcp: {error}; dropped"));
        let success = !matches!(self.status, Some(s) if !(200..300).contains(&s));
        self.fail_response_headers(host);
        if success {
            self.status = Some(502);
        } else if let Some(status) = self.status {
            host.try_set_header(HeaderMap::Response, ":status", Some(&status.to_string()));
        }
        self.response = ResponseMode::Dropped;
    }

    /// A JSON-RPC error for the (single) expected request, or `id: null`.
    fn response_error(&self, message: &str) -> Vec<u8> {
        let id = match self.expect.as_slice() {
            [only] => self.records.get(only.record).and_then(|r| r.detail.jsonrpc_id.as_deref()),
            _ => None,
        };
        rpc_error_body::<()>(id, codes::INTERNAL_ERROR, message, None)
    }

    /// Reads (and, for lists, rewrites) a JSON response body: one message or a batch.
    fn inspect_json(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let Ok(text) = std::str::from_utf8(body) else {
            return self.unreadable_json(body);
        };
        if text.trim_start().starts_with('[') {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) else {
                return self.unreadable_json(body);
            };
            let mut changed = false;
            let mut parts: Vec<String> = Vec::with_capacity(items.len());
            for item in items {
                match self.server_message(item.get()) {
                    Outcome::Keep => parts.push(item.get().to_string()),
                    Outcome::Replace(new) => {
                        changed = true;
                        parts.push(new);
                    }
                }
            }
            changed.then(|| format!("[{}]", parts.join(",")).into_bytes())
        } else {
            match self.server_message(text) {
                Outcome::Keep => None,
                Outcome::Replace(new) => Some(new.into_bytes()),
            }
        }
    }

    /// A server message the gateway's reading refuses. Harmless when no client can read it
    /// either (not JSON); but JSON that repeats a key (`"result"` twice, `"id"` twice) is read
    /// by clients with the last value, and a list could hide behind the first: with a policy
    /// it is replaced by an error, never passed (found by fuzzing).
    fn unreadable_message(&mut self, text: &str) -> Outcome {
        let Some(policy) = &self.shared.policy else { return Outcome::Keep };
        if policy.dry_run || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
            return Outcome::Keep;
        }
        let Err(why) = tollgate_core::wire::jsonrpc::check_no_duplicate_keys(text.as_bytes()) else { return Outcome::Keep };
        if let Some(rec) = self.expect.first().and_then(|e| self.records.get_mut(e.record)) {
            rec.error = Some(format!("server message refused: {}", message::truncate(&why, 256)));
        }
        let body = rpc_error_body::<()>(None, codes::INTERNAL_ERROR, "gateway could not read the server's message", None);
        Outcome::Replace(String::from_utf8_lossy(&body).into_owned())
    }

    /// A JSON body that is not JSON: harmless unless a list was expected in it.
    fn unreadable_json(&self, _body: &[u8]) -> Option<Vec<u8>> {
        if matches!(self.response, ResponseMode::JsonBuffer) && self.expect.iter().any(|e| e.list.is_some()) {
            return Some(self.response_error("gateway could not read the list response"));
        }
        None
    }

    /// Rewrites the complete events of one SSE chunk; holds the event in progress. Untouched
    /// blocks pass byte for byte (the core parser hands on a CRLF's final LF at once).
    fn sse_chunk(&mut self, chunk: &[u8]) -> Vec<u8> {
        let ResponseMode::Sse(mut parser) = std::mem::replace(&mut self.response, ResponseMode::Pass) else {
            return chunk.to_vec();
        };
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let result = parser.feed(chunk, |item, raw| {
            let replaced = match item {
                SseItem::Event(event) => match self.server_message(&event.data) {
                    Outcome::Keep => None,
                    Outcome::Replace(data) => Some(SseEvent { event: event.event.clone(), data, id: event.id.clone() }),
                },
                SseItem::Other => None,
            };
            match replaced {
                Some(new) => out.extend_from_slice(&new.to_bytes_replacing(raw)),
                None => out.extend_from_slice(raw),
            }
        });
        match result {
            Ok(()) => self.response = ResponseMode::Sse(parser),
            Err(_) => {
                // An event larger than the limit cannot be judged: end the stream with an error.
                let error = self.response_error("SSE event too large for the gateway to inspect");
                let event = SseEvent { event: None, data: String::from_utf8_lossy(&error).into_owned(), id: None };
                out.extend_from_slice(&event.to_bytes());
                self.response = ResponseMode::Dropped;
            }
        }
        out
    }

    /// Looks at one server message: records `isError` / error codes, filters lists.
    fn server_message(&mut self, text: &str) -> Outcome {
        // Most messages are read once; lists (and what the one reading cannot read) are
        // read again with the result kept raw, to be rewritten.
        let Some(head) = ResponseHead::parse(text) else { return self.server_message_in_full(text) };
        if !head.is_response() {
            return Outcome::Keep;
        }
        let (list, record) = self.expected(head.id);
        let summary = head.summary();
        if list.is_some() || (self.shared.policy.is_some() && summary.shape.is_some()) {
            return self.server_message_in_full(text);
        }
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            if rec.detail.tool.is_some() {
                rec.detail.is_error = summary.is_error;
            }
            rec.detail.rpc_error_code = head.error_code();
        }
        Outcome::Keep
    }

    /// What the request a response answers expects: the list it asked for, and the index of
    /// its audit record.
    fn expected(&self, id: Option<&RawValue>) -> (Option<ListKind>, Option<usize>) {
        match id.map(id_key).and_then(|k| self.expect.iter().find(|e| e.key == k)) {
            Some(e) => (e.list, Some(e.record)),
            None => (None, None),
        }
    }

    /// [`Exchange::server_message`] with the result kept raw: filters lists.
    fn server_message_in_full(&mut self, text: &str) -> Outcome {
        let Some(msg) = ServerMessage::parse(text) else { return self.unreadable_message(text) };
        if !msg.is_response() {
            return Outcome::Keep;
        }
        let (list, record) = self.expected(msg.id);
        let shared = self.shared.clone();
        let wants_is_error = record.and_then(|i| self.records.get(i)).is_some_and(|r| r.detail.tool.is_some());
        let wants_shape = shared.policy.is_some() && list.is_none();
        // One reading of the result answers both questions.
        let summary = (wants_is_error || wants_shape).then(|| msg.summary());
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            if rec.detail.tool.is_some() {
                rec.detail.is_error = summary.and_then(|s| s.is_error);
            }
            rec.detail.rpc_error_code = msg.error_code();
        }
        let Some(policy) = &shared.policy else { return Outcome::Keep };
        // The list the request asked for; otherwise (a request that is not a list, or an
        // unknown id, e.g. replayed on a GET stream) whatever has the shape of a list result
        // (`result.tools` ... an array) is filtered as one: fail closed, whatever the id says.
        let Some(kind) = list.or_else(|| summary.and_then(|s| s.shape)) else { return Outcome::Keep };
        let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
        let mut keep = |kind: ListKind, target: &Target<'_>| policy.visible(subject, kind.use_method(), target).allowed;
        let result = filter_list(&msg, Some(kind), &mut keep);
        let (outcome, hidden, error) = match result {
            Ok(None) => (Outcome::Keep, 0, None),
            Ok(Some(rewritten)) if policy.dry_run => (Outcome::Keep, rewritten.hidden, None),
            Ok(Some(rewritten)) => (Outcome::Replace(rewritten.text), rewritten.hidden, None),
            Err(e) => {
                // A list the gateway cannot read is not passed: the client gets an error.
                let body = rpc_error_body::<()>(msg.id, codes::INTERNAL_ERROR, "gateway could not filter the list", None);
                (Outcome::Replace(String::from_utf8_lossy(&body).into_owned()), 0, Some(e))
            }
        };
        if let Some(rec) = record.and_then(|i| self.records.get_mut(i)) {
            rec.detail.list_hidden = Some(hidden);
            if error.is_some() {
                rec.error = error;
            }
        }
        outcome
    }

    // ----- replies, records, metrics ------------------------------------------------------

    fn refuse_message(&mut self, host: &dyn Host, id: Option<&RawValue>, refusal: &Refusal) -> Step {
        let reply = replies::refusal(400, id, refusal.code, &refusal.message);
        self.records.clear();
        self.refuse_request(host, reply, Decision::Error, &refusal.message)
    }

    /// Refuses the whole request before (or instead of) per-message records.
    fn refuse_request(&mut self, host: &dyn Host, reply: Reply, decision: Decision, error: &str) -> Step {
        let mut record = MessageRecord::new(decision);
        record.error = Some(message::truncate(error, 512).to_string());
        // One record for the refused request, even for a batch.
        self.batch = false;
        self.records.clear();
        let label = record.label();
        self.records.push(record);
        let method = self.http_method.clone();
        self.count_message(host, if method.is_empty() { "unknown" } else { &method }, None, label);
        self.reply(host, &reply)
    }

    fn reply(&mut self, host: &dyn Host, reply: &Reply) -> Step {
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(e) = send_json(host, reply.status, &headers, &reply.body) {
            host.log(LogLevel::Error, &format!("tollgate-mcp: cannot send local reply: {e}"));
        }
        self.replied = true;
        self.status = Some(reply.status);
        self.finish(host);
        Step::Pause
    }

    /// Counts one message (and, for `tools/call`, one call) with its decision label:
    /// `allow`, `deny`, `dryrun_deny`, `rate_limited`, `dryrun_rate_limited`, `error`.
    fn count_message(&self, host: &dyn Host, method: &str, tool: Option<&str>, decision: &str) {
        let method = self.shared.method_labels.label(method);
        self.metrics.inc(
            host,
            "tollgate.mcp.messages",
            &[("server", &self.server), ("method", method), ("decision", decision)],
        );
        if let Some(tool) = tool {
            let tool = self.shared.tool_labels.label(tool);
            self.metrics.inc(host, "tollgate.mcp.calls", &[("server", &self.server), ("tool", tool), ("decision", decision)]);
        }
    }

    fn finish(&mut self, host: &dyn Host) {
        if self.emitted {
            return;
        }
        self.emitted = true;
        if self.records.is_empty() {
            // A request that ended before its body was judged (e.g. client reset).
            let mut record = MessageRecord::new(Decision::Error);
            record.error = Some("request ended before it was judged".into());
            self.records.push(record);
        }
        let now = host.now_millis();
        let request_id = self.request_id.take();
        // A record is 500-700 bytes: sized once, not grown while written.
        let mut out: Vec<u8> = Vec::with_capacity(1024 * self.records.len());
        if self.batch {
            out.push(b'[');
        }
        for (i, rec) in self.records.iter().enumerate() {
            let detail = Detail {
                server: &self.server,
                http_method: &self.http_method,
                revision: self.unsupported_revision.as_deref().unwrap_or(self.revision.as_str()),
                session_id: self.session_id.as_deref(),
                batch_index: self.batch.then_some(i),
                message: &rec.detail,
            };
            let mut record = Record::new(Layer::Mcp, self.start_ms, detail);
            record.request_id = request_id.as_deref();
            if let Some(t) = &self.trace {
                record.trace_id = Some(&t.trace_id);
                record.span_id = Some(&t.span_id);
                record.parent_span_id = t.parent_span_id.as_deref();
            }
            record.identity = self.identity.as_ref();
            record.decision = rec.decision;
            record.enforced = rec.enforced;
            record.rule_id = rec.rule_id.as_deref();
            record.status = self.status;
            record.duration_ms = Some(now.saturating_sub(self.start_ms));
            record.error = rec.error.as_deref();
            if i > 0 {
                out.push(b',');
            }
            if let Err(e) = serde_json::to_writer(&mut out, &record) {
                host.log(LogLevel::Error, &format!("tollgate-mcp: audit record not serializable: {e}"));
            }
            if !self.batch {
                break;
            }
        }
        if self.batch {
            out.push(b']');
        }
        audit::emit_json(host, &self.config().audit, &out);
    }

    // ----- helpers ------------------------------------------------------------------------

    /// The MCP server: route metadata, else the cluster's configured name, else the cluster.
    fn resolve_server(&self, host: &dyn Host) -> String {
        let cfg = &self.config().server;
        let from_route = host
            .property_string(&[
                "xds",
                "route_metadata",
                "filter_metadata",
                &cfg.metadata_namespace,
                &cfg.route_metadata_key,
            ])
            .filter(|s| !s.is_empty());
        if let Some(name) = from_route {
            return name;
        }
        match host.property_string(&["xds", "cluster_name"]).filter(|s| !s.is_empty()) {
            Some(cluster) => cfg.clusters.get(&cluster).cloned().unwrap_or(cluster),
            None => "unknown".into(),
        }
    }
}

impl HttpExchange for Exchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.metrics.inc(host, "tollgate.mcp.requests", &[]);
        self.start_ms = host.now_millis();
        self.http_method = host.request_header(":method").unwrap_or_default();
        // Envoy's request id (`request.id`) is the x-request-id header it set or kept.
        self.request_id = host.request_header("x-request-id");
        self.server = self.resolve_server(host);
        self.session_id = message::session_id(host.request_header("mcp-session-id").as_deref());
        // Take part in the trace: the audit records carry the inbound trace id, the upstream
        // gets the gateway's span as its parent.
        self.trace = Some(trace::join_request(host, None));

        let identity = identity::resolve(host, &self.config().identity);
        match identity {
            Ok(id) => self.identity = id,
            Err(IdentityError::UnknownApiKey) => {
                let reply = replies::unauthorized(true, self.config().resource_metadata.as_deref());
                return self.refuse_request(host, reply, Decision::Deny, "unknown API key");
            }
        }
        if self.identity.is_none() && self.config().require_identity {
            let reply = replies::unauthorized(false, self.config().resource_metadata.as_deref());
            return self.refuse_request(host, reply, Decision::Deny, "no identity");
        }
        match Revision::from_header(host.request_header("mcp-protocol-version").as_deref()) {
            Ok(r) => self.revision = r,
            // A revision the filter does not know is never forwarded, even where a server
            // might serve it: which checks apply (batches, routing headers, where a call names
            // its tool, which methods target what) is a property of the revision, so the
            // filter cannot judge such a request, and a server that does know that revision is
            // exactly the one that would act on what the filter failed to judge. It answers
            // as a 2026-07-28 server does, so a client can negotiate: 400, -32022 with
            // `data: {supported: [the filter's revisions], requested}`, under the request's id
            // (POST: read from the body once it is complete; GET/DELETE have none).
            Err(requested) => {
                let requested = message::truncate(requested, 256).to_string();
                if self.http_method != "POST" {
                    let reason = format!("unsupported MCP-Protocol-Version `{requested}`");
                    self.unsupported_revision = Some(requested.clone());
                    return self.refuse_request(host, replies::unsupported_revision(None, &requested), Decision::Error, &reason);
                }
                self.unsupported_revision = Some(requested);
            }
        }

        // Responses must stay readable: the filter cannot judge compressed lists.
        host.try_set_header(HeaderMap::Request, "accept-encoding", None);
        if !self.config().forward_credentials {
            identity::strip_credentials(host, &self.shared.credential_headers);
        }

        match self.http_method.as_str() {
            "POST" => self.post_headers(host, end_of_stream),
            "GET" | "DELETE" => self.session_request(host),
            _ => {
                let method = self.http_method.clone();
                self.refuse_request(host, replies::method_not_allowed(), Decision::Error, &format!("HTTP method {method}"))
            }
        }
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.replied {
            return Step::Pause;
        }
        if self.body_done || self.http_method != "POST" {
            return Step::Continue;
        }
        if body_size > self.config().max_body_bytes {
            return self.too_large(host);
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let body = match host.body(BodyBuffer::Request, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                let reason = format!("cannot read the request body: {e}");
                let reply = replies::refusal(500, None, codes::INTERNAL_ERROR, "gateway could not read the request");
                return self.refuse_request(host, reply, Decision::Error, &reason);
            }
        };
        self.judge_body(host, &body)
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        if self.replied {
            return Step::Continue;
        }
        self.status = host.response_header(":status").and_then(|s| s.trim().parse().ok());
        if end_of_stream {
            self.finish(host);
            return Step::Continue;
        }
        let is_get = self.http_method == "GET";
        // A POST of only notifications or responses has no answer of its own (202, no body);
        // whatever body comes is read like a GET stream's when lists are filtered: a client
        // routes a message by its id, so a list result here would reach a pending tools/list.
        let answers_nothing = self.expect.is_empty() && !is_get;
        if answers_nothing && self.shared.policy.is_none() {
            return Step::Continue;
        }
        let content_type = host.response_header("content-type");
        let sse = message::is_sse_content_type(content_type.as_deref());
        let json = message::is_json_content_type(content_type.as_deref());
        if !sse && !json {
            if self.shared.policy.is_some() && self.expect.iter().any(|e| e.list.is_some()) {
                self.unfilterable_list(host, content_type.as_deref());
            }
            return Step::Continue;
        }
        let lists_possible =
            self.shared.policy.is_some() && (is_get || sse || answers_nothing || self.expect.iter().any(|e| e.list.is_some()));
        if !message::is_identity_encoding(host.response_header("content-encoding").as_deref()) {
            if lists_possible {
                // Cannot read it, so cannot filter it: never pass it.
                host.log(LogLevel::Warn, "tollgate-mcp: encoded MCP response cannot be filtered; dropped");
                self.fail_response_headers(host);
                self.response = ResponseMode::Dropped;
            }
            return Step::Continue;
        }
        let will_rewrite = lists_possible && !self.shared.dry_run();
        if will_rewrite {
            host.try_set_header(HeaderMap::Response, "content-length", None);
            host.try_set_header(HeaderMap::Response, "cache-control", Some("private"));
        }
        self.response = if sse {
            ResponseMode::Sse(Box::new(SseParser::new(self.config().max_sse_event_bytes).keeping_raw()))
        } else if will_rewrite {
            ResponseMode::JsonBuffer
        } else {
            ResponseMode::JsonCopy { copy: Vec::new(), overflow: false }
        };
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.replied {
            return Step::Continue;
        }
        let max = self.shared.config.max_response_bytes;
        let mut step = Step::Continue;
        match &mut self.response {
            ResponseMode::Pass => {}
            ResponseMode::Dropped => {
                self.drop_chunk(host, body_size, end_of_stream, "gateway could not filter the response");
                // Held (empty) until the end, so the error body can still be written when
                // the response ends with trailers: Envoy lets a filter write only a body it holds.
                if !end_of_stream {
                    step = Step::Pause;
                }
            }
            ResponseMode::JsonCopy { copy, overflow } => {
                if !*overflow {
                    match host.body(BodyBuffer::Response, 0, body_size) {
                        // The first chunk (often the whole body) is kept as read.
                        Ok(Some(chunk)) if copy.is_empty() && chunk.len() <= max => *copy = chunk,
                        Ok(Some(chunk)) if copy.len() + chunk.len() <= max => copy.extend_from_slice(&chunk),
                        Ok(None) => {}
                        _ => {
                            *overflow = true;
                            copy.clear();
                        }
                    }
                }
                if end_of_stream {
                    let copy = std::mem::take(copy);
                    // Audit only: whatever it says, this body passes as it is.
                    let _ = self.inspect_json(&copy);
                }
            }
            ResponseMode::JsonBuffer if body_size > max => {
                host.log(LogLevel::Warn, "tollgate-mcp: JSON response too large to filter; dropped");
                self.response = ResponseMode::Dropped;
                self.drop_chunk(host, body_size, end_of_stream, "response too large for the gateway to filter");
                if !end_of_stream {
                    step = Step::Pause;
                }
            }
            ResponseMode::JsonBuffer if !end_of_stream => step = Step::Pause,
            ResponseMode::JsonBuffer => {
                let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
                if let Some(new) = self.inspect_json(&body) {
                    self.replace_response(host, body_size, &new);
                }
            }
            ResponseMode::Sse(_) => {
                let chunk = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
                let out = self.sse_chunk(&chunk);
                if out != chunk {
                    self.replace_response(host, body_size, &out);
                }
            }
        }
        if end_of_stream {
            self.finish(host);
        }
        step
    }

    /// Stream end (including resets): emits the audit record if nothing did yet.
    fn on_log(&mut self, host: &dyn Host) {
        self.finish(host);
    }
}

fn rpc_message(code: i64, detail: &str) -> String {
    let base = if code == codes::PARSE_ERROR { "Parse error" } else { "Invalid Request" };
    format!("{base}: {}", message::truncate(detail, 256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tollgate_core::host::MemoryHost;
    use tollgate_core::testing::{callback, drive_ending, Ending};

    const ALICE: &str = "tg-demo-alice";

    fn shared(policy: Value) -> Rc<Shared> {
        shared_with(policy, json!([]))
    }

    fn shared_with(policy: Value, rate_limits: Value) -> Rc<Shared> {
        let mut cfg = json!({
            "rate_limits": rate_limits,
            "identity": {"api_keys": {"headers": ["x-api-key"], "keys": [
                {"sha256": sha256_hex(ALICE.as_bytes()), "name": "alice-key", "principal": "alice", "groups": ["eng"]}]}},
            "server": {"clusters": {"mcp_demo": "demo"}},
            "max_body_bytes": 1024,
            "max_sse_event_bytes": 4096,
        });
        if !policy.is_null() {
            cfg["policy"] = policy;
        }
        let config: Config = tollgate_core::config::load(cfg.to_string().as_bytes()).unwrap();
        Rc::new(Shared::build(config).unwrap())
    }

    fn demo_policy(extra: Value) -> Value {
        let mut p = json!({"rules": [
            {"id": "protocol", "effect": "allow", "principals": ["*"], "methods": ["initialize", "tools/list", "notifications/*"]},
            {"id": "basic", "effect": "allow", "principals": ["*"], "tools": ["add"]},
            {"id": "db", "effect": "allow", "principals": ["*"], "tools": ["query_db"], "arguments": [{"path": "$.table", "one_of": ["orders"]}]},
        ]});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                p[k] = v;
            }
        }
        p
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> MemoryHost {
        let mut all = vec![(":method", method), ("content-type", "application/json"), ("x-api-key", ALICE)];
        all.retain(|(k, _)| !headers.iter().any(|(h, _)| h == k));
        all.extend_from_slice(headers);
        let host = MemoryHost::with_request_headers(&all);
        host.set_prop(&["xds", "cluster_name"], b"mcp_demo");
        host
    }

    /// Runs the request side; returns the exchange and what the filter answered.
    fn post(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        assert_eq!(callback(host, |h| ex.on_request_headers(h, false)), Step::Pause);
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        let step = callback(host, |h| ex.on_request_body(h, body.len(), true));
        (ex, step)
    }

    fn reply_json(host: &MemoryHost) -> (u32, Value) {
        let (status, _, body) = host.local_reply.borrow().clone().expect("a local reply");
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn audit(host: &MemoryHost) -> Value {
        serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("an audit record")).unwrap()
    }

    fn respond(ex: &mut Exchange, host: &MemoryHost, content_type: &str, chunks: &[&[u8]]) -> Vec<u8> {
        *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), content_type.into())];
        assert_eq!(ex.on_response_headers(host, false), Step::Continue);
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            host.response_body.borrow_mut().extend_from_slice(chunk);
            let size = host.response_body.borrow().len();
            if ex.on_response_body(host, size, last) == Step::Continue {
                out.append(&mut host.response_body.borrow_mut());
            }
        }
        out
    }

    #[test]
    fn allowed_call_passes_with_trace_and_without_credentials() {
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
        let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":2,"a":1}}}"#);
        assert_eq!(step, Step::Continue);
        assert!(host.local_reply.borrow().is_none());
        assert_eq!(host.request_header("x-api-key"), None);
        assert!(host.request_header("traceparent").unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        let out = respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#]);
        assert!(out.ends_with(b"\"isError\":true}}"));
        let a = audit(&host);
        assert_eq!(a["decision"], "allow");
        assert_eq!(a["rule_id"], "basic");
        assert_eq!(a["server"], "demo");
        assert_eq!(a["is_error"], true);
        assert_eq!(a["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(a["arguments_sha256"], sha256_hex(br#"{"a":1,"b":2}"#));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.decision.allow"), Some(1));
        assert_eq!(host.metric("tollgate.mcp.requests"), Some(1));
    }

    #[test]
    fn arguments_are_recorded_with_numbers_as_written() {
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let (mut ex, _) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":1e3,"a":1000.0000000000001}}}"#);
        respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#]);
        assert_eq!(audit(&host)["arguments_sha256"], sha256_hex(br#"{"a":1000.0000000000001,"b":1e3}"#));
    }

    #[test]
    fn arguments_are_judged_as_written() {
        // serde_json::Value (with its raw_value feature) reads an object whose first key is
        // its private RawValue token as the JSON in that key's string: a policy reading
        // Values would judge {"table":"orders"}, the server gets something else.
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"$serde_json::private::RawValue":"{\"table\":\"orders\"}"}}}"#;
        assert_eq!(post(&shared, &host, body).1, Step::Pause);
        assert_eq!(audit(&host)["decision"], "deny");
    }

    #[test]
    fn denied_call_is_answered_locally() {
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let (_, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"query_db","arguments":{"table":"users"}}}"#);
        assert_eq!(step, Step::Pause);
        let (status, body) = reply_json(&host);
        assert_eq!(status, 200);
        assert_eq!(body["error"]["message"], "Unknown tool: query_db");
        assert_eq!(body["id"], "x");
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["enforced"].as_bool(), a["status"].as_u64()), (Some("deny"), Some(true), Some(200)));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.query_db.decision.deny"), Some(1));
    }

    #[test]
    fn dry_run_forwards_and_records() {
        let shared = shared(demo_policy(json!({"dry_run": true})));
        let host = request("POST", &[]);
        let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_reset"}}"#);
        assert_eq!(step, Step::Continue);
        ex.on_log(&host);
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["enforced"].as_bool()), (Some("deny"), Some(false)));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.admin_reset.decision.dryrun_deny"), Some(1));
    }

    #[test]
    fn request_refusals() {
        let shared = shared(demo_policy(json!({})));
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u32, i64);
        let cases: &[Case<'_>] = &[
            (&[], "{", 400, -32700),
            (&[], r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"x"}"#, 400, -32600),
            (&[], r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, 200, 0),
            (&[("mcp-protocol-version", "2025-06-18")], r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, 400, -32600),
            (&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#, 400, -32020),
            (&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "=?base64?YWRk?=")],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#, 200, 0),
        ];
        for (headers, body, status, code) in cases {
            let host = request("POST", headers);
            let (_, step) = post(&shared, &host, body);
            if *code == 0 {
                assert_eq!(step, Step::Continue, "{body}");
                continue;
            }
            let (s, v) = reply_json(&host);
            assert_eq!((s, v["error"]["code"].as_i64()), (*status, Some(*code)), "{body}");
            assert_eq!(audit(&host)["decision"], "error");
        }
    }

    #[test]
    fn an_unknown_revision_is_answered_with_32022_under_the_requests_id() {
        let shared = shared(Value::Null);
        for (body, id) in [
            (r#"{"jsonrpc":"2.0","id":"r7","method":"tools/call","params":{"name":"add"}}"#, json!("r7")),
            (r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, Value::Null),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#, json!(1)),
        ] {
            let host = request("POST", &[("mcp-protocol-version", "v999.0.0")]);
            let (_, step) = post(&shared, &host, body);
            assert_eq!(step, Step::Pause, "{body}");
            let (s, v) = reply_json(&host);
            assert_eq!(s, 400, "{body}");
            assert_eq!(
                v,
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32022, "message": "Unsupported protocol version",
                       "data": {"supported": ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"],
                                "requested": "v999.0.0"}}}),
                "{body}"
            );
            let record = audit(&host);
            assert_eq!((record["decision"].as_str(), record["revision"].as_str()), (Some("error"), Some("v999.0.0")));
        }
        // Not JSON: the parse error, as from a server.
        let host = request("POST", &[("mcp-protocol-version", "v999.0.0")]);
        post(&shared, &host, "{");
        assert_eq!(reply_json(&host).1["error"]["code"], -32700);
    }

    #[test]
    fn header_refusals() {
        let shared = shared(Value::Null);
        let check = |host: MemoryHost, status: u32| {
            let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
            assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
            assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(status));
        };
        check(request("POST", &[("content-type", "text/plain")]), 415);
        check(request("POST", &[("content-encoding", "gzip")]), 415);
        check(request("POST", &[("content-length", "1025")]), 413);
        check(request("GET", &[("mcp-protocol-version", "2030-01-01")]), 400);
        check(request("POST", &[("x-api-key", "wrong")]), 401);
        check(request("PUT", &[]), 405);
        check(request("GET", &[("mcp-protocol-version", "2026-07-28")]), 405);
        check(request("DELETE", &[("mcp-protocol-version", "2026-07-28")]), 405);
        // Streamed bodies are counted as they arrive.
        let host = request("POST", &[]);
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
        assert_eq!(ex.on_request_body(&host, 1000, false), Step::Pause);
        assert_eq!(ex.on_request_body(&host, 1025, false), Step::Pause);
        assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(413));
    }

    #[test]
    fn get_and_delete_need_an_identity_allowed_on_the_server() {
        let shared = shared(demo_policy(json!({"deny_style": "explain"})));
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        assert_eq!(ex.on_request_headers(&request("GET", &[]), true), Step::Continue);
        let anonymous = MemoryHost::with_request_headers(&[(":method", "DELETE")]);
        let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
        assert_eq!(ex.on_request_headers(&anonymous, true), Step::Pause);
        assert_eq!(anonymous.local_reply.borrow().as_ref().map(|r| r.0), Some(403));
    }

    #[test]
    fn server_name_sources() {
        let shared = shared(Value::Null);
        let name = |host: &MemoryHost| {
            let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
            ex.on_request_headers(host, false);
            ex.server
        };
        let host = request("POST", &[]);
        assert_eq!(name(&host), "demo");
        host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "mcp_server"], b"billing");
        assert_eq!(name(&host), "billing");
        let host = request("POST", &[]);
        host.set_prop(&["xds", "cluster_name"], b"other_cluster");
        assert_eq!(name(&host), "other_cluster");
    }

    const SSE_LIST: &str = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\r\n\r\n\
event: message\r\nid: 9\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"add\"},{\"name\":\"admin_reset\"}],\"nextCursor\":\"c\"}}\r\n\r\n";

    fn list_exchange(policy: Value) -> (Exchange, MemoryHost) {
        let shared = shared(policy);
        let host = request("POST", &[]);
        let (ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
        assert_eq!(step, Step::Continue);
        (ex, host)
    }

    #[test]
    fn sse_list_rewritten_at_every_split() {
        let expected = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\r\n\r\n\
id: 9\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"add\"}],\"nextCursor\":\"c\"}}\r\n\r\n";
        let bytes = SSE_LIST.as_bytes();
        for split in 0..bytes.len() {
            let (mut ex, host) = list_exchange(demo_policy(json!({})));
            let (a, b) = bytes.split_at(split);
            let out = respond(&mut ex, &host, "text/event-stream", &[a, b]);
            assert_eq!(String::from_utf8_lossy(&out), expected, "split at {split}");
            assert_eq!(host.response_header("cache-control").as_deref(), Some("private"));
            assert_eq!(audit(&host)["list_hidden"], 1);
        }
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(String::from_utf8_lossy(&respond(&mut ex, &host, "text/event-stream", &bytewise)), expected);
    }

    #[test]
    fn sse_list_behind_a_byte_order_mark_is_filtered() {
        let stream = format!("\u{FEFF}{SSE_LIST}");
        let bytes = stream.as_bytes();
        for split in [1, 2, 3, 4, 40] {
            let (mut ex, host) = list_exchange(demo_policy(json!({})));
            let (a, b) = bytes.split_at(split);
            let out = String::from_utf8_lossy(&respond(&mut ex, &host, "text/event-stream", &[a, b])).into_owned();
            assert!(out.contains(r#""tools":[{"name":"add"}]"#) && !out.contains("admin_reset"), "split at {split}: {out}");
            assert_eq!(audit(&host)["list_hidden"], 1);
        }
    }

    #[test]
    fn sse_passthrough_is_byte_exact_and_never_holds_a_finished_event() {
        let (mut ex, host) = list_exchange(Value::Null);
        let bytes = SSE_LIST.as_bytes();
        let first_end = SSE_LIST.find("\r\n\r\n").unwrap() + 4;
        let mut out = Vec::new();
        *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
        ex.on_response_headers(&host, false);
        for (i, b) in bytes.iter().enumerate() {
            *host.response_body.borrow_mut() = vec![*b];
            ex.on_response_body(&host, 1, i + 1 == bytes.len());
            out.append(&mut host.response_body.borrow_mut());
            if i + 1 == first_end {
                // The first event, CRLF and all, is out as soon as its last byte arrived.
                assert_eq!(out, bytes[..first_end].to_vec());
            }
        }
        assert_eq!(out, bytes.to_vec());
    }

    #[test]
    fn a_list_answering_a_post_of_notifications_is_filtered() {
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(step, Step::Continue);
        let list = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}}"#;
        let (a, b) = list.split_at(20);
        let out = respond(&mut ex, &host, "application/json", &[a, b]);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(r#"{"name":"add"}"#) && !out.contains("admin_reset"), "{out}");
        let sse = format!("data: {}\n\n", String::from_utf8_lossy(list));
        let (mut ex, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(step, Step::Continue);
        let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[sse.as_bytes()])).unwrap();
        assert!(!out.contains("admin_reset"), "{out}");
    }

    #[test]
    fn server_messages_repeating_a_key_never_pass() {
        // Clients keep the last `result`; the filter's reading refuses the repeated key.
        for body in [
            &br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[]},"result":{"tools":[{"name":"admin_reset"}]}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"id":5,"result":{"tools":[{"name":"admin_reset"}]}}"#,
        ] {
            let (mut ex, host) = list_exchange(demo_policy(json!({})));
            let out = String::from_utf8(respond(&mut ex, &host, "application/json", &[body])).unwrap();
            assert!(!out.contains("admin_reset") && out.contains("-32603"), "{out}");
            let (mut ex, host) = list_exchange(demo_policy(json!({})));
            let sse = format!("data: {}\n\n", String::from_utf8_lossy(body));
            let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[sse.as_bytes()])).unwrap();
            assert!(!out.contains("admin_reset") && out.contains("-32603"), "{out}");
        }
    }

    #[test]
    fn json_list_is_buffered_and_rewritten() {
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let body = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"admin_reset"},{"name":"add"}]}}"#;
        *host.response_headers.borrow_mut() = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), body.len().to_string()),
        ];
        ex.on_response_headers(&host, false);
        assert_eq!(host.response_header("content-length"), None);
        *host.response_body.borrow_mut() = body[..20].to_vec();
        assert_eq!(ex.on_response_body(&host, 20, false), Step::Pause);
        *host.response_body.borrow_mut() = body.to_vec();
        assert_eq!(ex.on_response_body(&host, body.len(), true), Step::Continue);
        assert_eq!(
            String::from_utf8(host.response_body.borrow().clone()).unwrap(),
            r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"}]}}"#
        );
    }

    #[test]
    fn bodies_ending_with_trailers_are_judged_and_filtered() {
        // A denied call whose body ends with trailers is refused at the trailers.
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
        let call = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"query_db","arguments":{"table":"users"}}}"#;
        let driven = drive_ending(&mut ex, &host, Some(call), &[], &[], Ending::Trailers);
        assert_eq!(driven.request_trailers, Some(Step::Pause));
        assert_eq!(reply_json(&host).1["error"]["message"], "Unknown tool: query_db");
        assert_eq!(audit(&host)["decision"], "deny");

        // A JSON tools/list answer that ends with trailers is filtered before it is released,
        // whether its last chunk was held or not.
        let list = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"admin_reset"},{"name":"add"}]}}"#;
        let (head, tail) = list.split_at(30);
        for chunks in [vec![&list[..]], vec![head, tail]] {
            let host = request("POST", &[]);
            let mut ex = Exchange::new(shared.clone(), Rc::new(Metrics::new()));
            let json = [(":status", "200"), ("content-type", "application/json")];
            let driven =
                drive_ending(&mut ex, &host, Some(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#), &json, &chunks, Ending::Trailers);
            assert!(driven.response_body.iter().all(|s| *s == Step::Pause), "held until the end: {driven:?}");
            assert_eq!(driven.response_trailers, Some(Step::Continue));
            assert_eq!(
                String::from_utf8(host.response_body.borrow().clone()).unwrap(),
                r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"}]}}"#
            );
            assert_eq!(audit(&host)["list_hidden"], 1);
        }
    }

    #[test]
    fn unreadable_lists_fail_closed() {
        // Compressed list response: status 502, body an error.
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        *host.response_headers.borrow_mut() = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ];
        ex.on_response_headers(&host, false);
        assert_eq!(host.response_header(":status").as_deref(), Some("502"));
        *host.response_body.borrow_mut() = b"\x1f\x8b binary".to_vec();
        ex.on_response_body(&host, 10, true);
        let v: Value = serde_json::from_slice(&host.response_body.borrow()).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["error"]["code"], -32603);
        // A list result that is not a list.
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let out = respond(&mut ex, &host, "application/json", &[br#"{"jsonrpc":"2.0","id":5,"result":{"tools":"add,admin_reset"}}"#]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], -32603);
        // An SSE event larger than the limit ends the stream with an error.
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        let big = format!("data: {}\n\n", "x".repeat(5000));
        let out = respond(&mut ex, &host, "text/event-stream", &[big.as_bytes(), b"data: {}\n\n"]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("data: {\"jsonrpc\":\"2.0\",\"id\":5,\"error\""), "{text}");
        assert!(!text.contains("xxx"));
    }

    #[test]
    fn list_answers_neither_json_nor_sse_never_pass() {
        let list = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}}"#;
        for content_type in ["text/plain", "application/octet-stream", "text/html; charset=utf-8", ""] {
            let (mut ex, host) = list_exchange(demo_policy(json!({})));
            let out = respond(&mut ex, &host, content_type, &[&list[..10], &list[10..]]);
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("admin_reset"), "{content_type}: {text}");
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!((v["id"].as_i64(), v["error"]["code"].as_i64()), (Some(5), Some(-32603)), "{content_type}");
            assert_eq!(host.response_header(":status").as_deref(), Some("502"));
            assert_eq!(host.response_header("content-type").as_deref(), Some("application/json"));
            let a = audit(&host);
            assert_eq!((a["decision"].as_str(), a["status"].as_u64()), (Some("error"), Some(502)), "{a}");
            assert!(a["error"].as_str().unwrap().contains("cannot be filtered"), "{a}");
        }
        // An error status is kept (a client acts on it); its body is not passed either.
        let (mut ex, host) = list_exchange(demo_policy(json!({})));
        *host.response_headers.borrow_mut() = vec![(":status".into(), "404".into()), ("content-type".into(), "text/plain".into())];
        ex.on_response_headers(&host, false);
        *host.response_body.borrow_mut() = list.to_vec();
        ex.on_response_body(&host, list.len(), true);
        assert_eq!(host.response_header(":status").as_deref(), Some("404"));
        assert!(!String::from_utf8_lossy(&host.response_body.borrow()).contains("admin_reset"));
        // Not a list request: passes as before.
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let (mut ex, _) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}"#);
        assert_eq!(respond(&mut ex, &host, "text/plain", &[b"hello"]), b"hello");
        assert_eq!(host.response_header(":status").as_deref(), Some("200"));
        // Dry run: recorded, passed.
        let (mut ex, host) = list_exchange(demo_policy(json!({"dry_run": true})));
        assert_eq!(respond(&mut ex, &host, "text/plain", &[list]), list);
        assert!(audit(&host)["error"].as_str().unwrap().contains("cannot be filtered"));
    }

    #[test]
    fn batches_record_an_array() {
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let (_, step) = post(
            &shared,
            &host,
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}]"#,
        );
        assert_eq!(step, Step::Pause);
        let (_, v) = reply_json(&host);
        assert_eq!(v[0]["error"]["message"], "Batch rejected");
        assert_eq!(v[1]["error"]["message"], "Unknown tool: nope");
        let a = audit(&host);
        assert_eq!(a.as_array().unwrap().len(), 2);
        assert_eq!(a[1]["batch_index"], 1);
    }

    #[test]
    fn batches_with_duplicate_or_equivalent_request_ids_are_refused() {
        let shared = shared(demo_policy(json!({})));
        let list = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let ping = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize"}}"#);
        for (a, b) in [("1", "1"), ("1", "1.0"), ("1e0", "1"), ("-0", "0"), (r#""a""#, r#""\u0061""#)] {
            let host = request("POST", &[]);
            let (_, step) = post(&shared, &host, &format!("[{},{}]", ping(a), list(b)));
            assert_eq!(step, Step::Pause, "{a} {b}");
            let (status, v) = reply_json(&host);
            assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)), "{a} {b}");
            assert!(v["id"].is_null());
            let a = audit(&host);
            assert_eq!((a["decision"].as_str(), a["status"].as_u64()), (Some("error"), Some(400)));
        }
        // Different ids (a string is not a number), and responses/notifications, pass.
        for body in [
            format!("[{},{}]", ping("1"), list(r#""1""#)),
            format!("[{},{}]", ping("1"), list("2")),
            format!(r#"[{},{{"jsonrpc":"2.0","id":1,"result":{{}}}},{{"jsonrpc":"2.0","method":"notifications/initialized"}}]"#, list("1")),
        ] {
            let host = request("POST", &[]);
            assert_eq!(post(&shared, &host, &body).1, Step::Continue, "{body}");
        }
    }

    #[test]
    fn responses_shaped_like_lists_are_filtered_whatever_request_their_id_names() {
        // The batch asked for tools/list (id 2) and a ping-like request (id 1); the server
        // answers the list under id 1 (`1.0`: a server that mixed the ids up): still filtered.
        let shared = shared(demo_policy(json!({})));
        let host = request("POST", &[]);
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"initialize"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
        let (mut ex, step) = post(&shared, &host, body);
        assert_eq!(step, Step::Continue);
        let answer = br#"[{"jsonrpc":"2.0","id":1.0,"result":{"tools":[{"name":"add"},{"name":"admin_reset"}]}},{"jsonrpc":"2.0","id":2,"result":{}}]"#;
        let out = respond(&mut ex, &host, "application/json", &[answer]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["result"]["tools"], json!([{"name": "add"}]));
        assert_eq!(v[0]["id"], 1.0);
        let a = audit(&host);
        assert_eq!(a[0]["list_hidden"], 1);
        // A single tools/call whose SSE answer is a tools list: filtered too.
        let host = request("POST", &[]);
        let (mut ex, step) = post(&shared, &host, ADD);
        assert_eq!(step, Step::Continue);
        let event = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"admin_reset\"}]}}\n\n";
        let out = String::from_utf8(respond(&mut ex, &host, "text/event-stream", &[event])).unwrap();
        assert!(!out.contains("admin_reset"), "{out}");
        // Ordinary results of other requests are untouched and get no `list_hidden`.
        let host = request("POST", &[]);
        let (mut ex, _) = post(&shared, &host, ADD);
        let result = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"tools"}],"isError":false}}"#;
        assert_eq!(respond(&mut ex, &host, "application/json", &[result]), result.to_vec());
        ex.on_log(&host);
        assert!(audit(&host).get("list_hidden").is_none());
    }

    #[test]
    fn null_request_ids_are_refused_and_never_forwarded() {
        let shared = shared(Value::Null);
        let null_call = r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"admin_reset","arguments":{}}}"#;
        for body in [null_call.to_string(), format!("[{ADD},{null_call}]")] {
            let host = request("POST", &[]);
            let (_, step) = post(&shared, &host, &body);
            assert_eq!(step, Step::Pause, "{body}");
            let (status, v) = reply_json(&host);
            assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)), "{body}");
            assert!(v["error"]["message"].as_str().unwrap().contains("must not be null"), "{v}");
            assert_eq!(audit(&host)["decision"], "error");
        }
        // A null id is still fine on an error response the client posts.
        let host = request("POST", &[]);
        let (_, step) = post(&shared, &host, r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
        assert_eq!(step, Step::Continue);
    }

    #[test]
    fn credential_headers_are_stripped_unless_forwarded() {
        let shared = shared(Value::Null);
        let host = request("POST", &[("authorization", "Bearer x"), ("x-goog-api-key", "k"), ("x-other", "kept")]);
        post(&shared, &host, ADD);
        assert_eq!(
            (host.request_header("x-api-key"), host.request_header("authorization"), host.request_header("x-goog-api-key")),
            (None, None, None)
        );
        assert_eq!(host.request_header("x-other").as_deref(), Some("kept"));
        let mut cfg: Config = tollgate_core::config::load(br#"{"forward_credentials": true, "identity": {"api_keys": {"headers": ["x-api-key"], "keys": []}}}"#).unwrap();
        cfg.server.clusters.insert("mcp_demo".into(), "demo".into());
        let shared = Rc::new(Shared::build(cfg).unwrap());
        let host = request("POST", &[("authorization", "Bearer x"), ("x-api-key", "unknown")]);
        let mut ex = Exchange::new(shared, Rc::new(Metrics::new()));
        ex.on_request_headers(&host, false);
        assert_eq!(host.request_header("authorization").as_deref(), Some("Bearer x"));
    }

    #[test]
    fn tool_and_method_labels_are_capped_separately() {
        let shared = shared(Value::Null);
        let host = request("POST", &[]);
        let metrics = Rc::new(Metrics::new());
        let call = |host: &MemoryHost, tool: &str| {
            let mut ex = Exchange::new(shared.clone(), metrics.clone());
            ex.on_request_headers(host, false);
            let body = ADD.replace("\"add\"", &format!("\"{tool}\""));
            *host.request_body.borrow_mut() = body.as_bytes().to_vec();
            ex.on_request_body(host, body.len(), true);
        };
        for i in 0..MAX_LABEL_VALUES {
            call(&host, &format!("t{i}"));
        }
        call(&host, "one_too_many");
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.t255.decision.allow"), Some(1));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.other.decision.allow"), Some(1));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.one_too_many.decision.allow"), None);
        // 257 tools did not use up the method labels: new methods still get their own.
        let mut ex = Exchange::new(shared.clone(), metrics.clone());
        ex.on_request_headers(&host, false);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"prompts/list"}"#;
        *host.request_body.borrow_mut() = body.as_bytes().to_vec();
        ex.on_request_body(&host, body.len(), true);
        assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.prompts_list.decision.allow"), Some(1));
        assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.tools_call.decision.allow"), Some(257));
    }

    const BURST: &str = r#"[{"id": "burst", "max_calls": 2, "window_secs": 60, "per": "principal"}]"#;
    const ADD: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#;

    /// Posts again on the same host (same shared data and clock): the credentials the last
    /// request had stripped are put back, the last local reply forgotten.
    fn again(shared: &Rc<Shared>, host: &MemoryHost, body: &str) -> (Exchange, Step) {
        *host.request_headers.borrow_mut() = request("POST", &[]).request_headers.borrow().clone();
        *host.local_reply.borrow_mut() = None;
        post(shared, host, body)
    }

    fn limited_shared(extra: Value) -> Rc<Shared> {
        shared_with(demo_policy(extra), serde_json::from_str(BURST).unwrap())
    }

    #[test]
    fn rate_limited_call_gets_429_and_is_never_forwarded() {
        let shared = limited_shared(json!({}));
        let host = request("POST", &[]);
        *host.clock_nanos.borrow_mut() = 6_000_045 * 1_000_000_000; // 45 s into a window
        for _ in 0..2 {
            let (mut ex, step) = again(&shared, &host, ADD);
            assert_eq!(step, Step::Continue);
            ex.on_log(&host);
        }
        // Policy denials and other methods are not counted.
        let (_, step) = again(&shared, &host, r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"x"}}}"#);
        assert_eq!(step, Step::Pause);
        let (_, step) = again(&shared, &host, r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#);
        assert_eq!(step, Step::Continue);
        let (_, step) = again(&shared, &host, ADD);
        assert_eq!(step, Step::Pause);
        let (status, headers, body) = host.local_reply.borrow().clone().expect("a local reply");
        assert_eq!(status, 429);
        assert!(headers.contains(&("retry-after".to_string(), "15".to_string())), "{headers:?}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], -31429);
        assert_eq!(body["error"]["data"], json!({"limit_id": "burst", "retry_after_secs": 15}));
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["enforced"].as_bool(), a["status"].as_u64()), (Some("deny"), Some(true), Some(429)));
        assert_eq!((a["rule_id"].as_str(), a["reason"].as_str(), a["tool"].as_str()), (Some("burst"), Some("rate_limited"), Some("add")));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.decision.rate_limited"), Some(1));
        assert_eq!(host.metric("tollgate.mcp.messages.server.demo.method.tools_call.decision.rate_limited"), Some(1));
        // The next window admits again.
        *host.clock_nanos.borrow_mut() = 6_000_060 * 1_000_000_000;
        let (_, step) = again(&shared, &host, ADD);
        assert_eq!(step, Step::Continue);
    }

    #[test]
    fn rate_limited_batch_is_refused_whole_and_consumes_nothing() {
        let shared = limited_shared(json!({}));
        let host = request("POST", &[]);
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}},
            {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add"}},
            {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add"}}]"#;
        let (_, step) = again(&shared, &host, batch);
        assert_eq!(step, Step::Pause);
        let (status, v) = reply_json(&host);
        assert_eq!(status, 429);
        let errors: Vec<(i64, i64, &str)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].as_i64().unwrap(), e["error"]["code"].as_i64().unwrap(), e["error"]["message"].as_str().unwrap()))
            .collect();
        assert_eq!(
            errors,
            [(1, -31429, "Rate limited: batch rejected"), (2, -31429, "Rate limited: batch rejected"), (3, -31429, "Rate limited: tools/call add (limit burst)")]
        );
        let a = audit(&host);
        let rows: Vec<(&str, &str)> = a.as_array().unwrap().iter().map(|r| (r["decision"].as_str().unwrap(), r["reason"].as_str().unwrap_or("-"))).collect();
        assert_eq!(rows, [("deny", "another message in the batch was rate limited"), ("allow", "-"), ("deny", "another message in the batch was rate limited"), ("deny", "rate_limited")]);
        // Nothing was forwarded, so nothing was counted: two single calls still pass.
        assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.mcp.rl.burst.alice", 60), 0);
        for id in 10..12 {
            let (_, step) = again(&shared, &host, &ADD.replace("\"id\":7", &format!("\"id\":{id}")));
            assert_eq!(step, Step::Continue);
        }
    }

    #[test]
    fn rate_limits_in_dry_run_record_but_forward() {
        let shared = limited_shared(json!({"dry_run": true}));
        let host = request("POST", &[]);
        for _ in 0..2 {
            assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
        }
        let (mut ex, step) = again(&shared, &host, ADD);
        assert_eq!(step, Step::Continue);
        assert!(host.local_reply.borrow().is_none());
        ex.on_log(&host);
        let a = audit(&host);
        assert_eq!((a["decision"].as_str(), a["enforced"].as_bool()), (Some("deny"), Some(false)));
        assert_eq!((a["rule_id"].as_str(), a["reason"].as_str()), (Some("burst"), Some("rate_limited")));
        assert_eq!(host.metric("tollgate.mcp.calls.server.demo.tool.add.decision.dryrun_rate_limited"), Some(1));
    }

    #[test]
    fn rate_limits_without_a_policy() {
        let shared = shared_with(Value::Null, serde_json::from_str(BURST).unwrap());
        let host = request("POST", &[]);
        assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
        assert_eq!(again(&shared, &host, ADD).1, Step::Continue);
        assert_eq!(again(&shared, &host, ADD).1, Step::Pause);
        assert_eq!(reply_json(&host).0, 429);
    }

    #[test]
    fn bad_rate_limit_is_refused_at_load_with_the_field_named() {
        // What on_configure runs: the raw config, then its one compilation.
        let load_and_build = |cfg: &[u8]| tollgate_core::config::load::<Config>(cfg).and_then(Shared::build).err().map(|e| e.0).unwrap_or_default();
        let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":0,"per":"principal"}]}"#;
        let err = load_and_build(cfg);
        assert!(err.starts_with("rate_limits[0].window_secs:"), "{err}");
        let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":1,"per":"user"}]}"#;
        let err = load_and_build(cfg);
        assert!(err.starts_with("rate_limits[0].per:"), "{err}");
        let cfg = br#"{"rate_limits":[{"id":"a","max_calls":1,"window_secs":1,"per":"team","tool":["x"]}]}"#;
        let err = load_and_build(cfg);
        assert!(err.starts_with("rate_limits[0]") && err.contains("tool"), "{err}");
    }
    #[test]
    fn a_tool_call_stays_within_its_host_call_budget() {
        // Each host call costs about 1-2 µs inside Envoy (bench/README.md): this pins what one
        // judged, audited tools/call with an argument rule spends (the `make bench` workload).
        let shared = shared(demo_policy(json!({})));
        let metrics = Rc::new(Metrics::new());
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"table":"orders"}}}"#;
        let result = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3 rows"}],"isError":false}}"#;
        let warm = tollgate_core::testing::profile_rounds();
        for round in 0..warm + 2 {
            let host = request("POST", &[("mcp-protocol-version", "2025-06-18"), ("accept", "application/json, text/event-stream")]);
            host.quiet.set(round < warm);
            let mut ex = Exchange::new(shared.clone(), metrics.clone());
            let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[result]);
            assert_eq!(driven.request_body, Some(Step::Continue));
            assert!(host.local_reply.borrow().is_none());
            if round < warm {
                continue;
            }
            let calls = host.calls.borrow().clone();
            assert_eq!(host.calls_named("header"), 0, "{calls:#?}");
            assert!(host.calls_named("headers") <= 2, "{calls:#?}");
            assert!(host.calls_named("set_header") + host.calls_named("set_headers") <= 2, "{calls:#?}");
            assert_eq!(host.calls_named("set_property"), 1, "one audit record: {calls:#?}");
            assert!(host.calls_named("random_bytes") <= 1, "{calls:#?}");
            // The first round also defines its metrics (once per VM).
            let budget = if round == 0 { 21 } else { 18 };
            assert!(calls.len() <= budget, "{} host calls: {calls:#?}", calls.len());
        }
    }

}
