//! One HTTP exchange through the MCP filter, written against the core `Host` trait so the
//! whole flow runs natively against `MemoryHost`; `filter.rs` only adapts it to proxy-wasm.
//!
//! Request: identity, server, revision and HTTP checks on headers (held until the body is
//! judged); the whole POST body parsed, checked (duplicate keys, batches, 2026-07-28 routing
//! headers) and every message judged by the policy. A denial is answered locally and never
//! forwarded. Response: list results filtered (JSON buffered; SSE rewritten event by event,
//! holding at most the event in progress), tool results' `isError` read, one audit record
//! per JSON-RPC message emitted when the response ends.
//!
//! This file is the glue: `body` reads the POST body, `judge` rules on its messages (the
//! exchange applies the rate limits on shared data, the reply, the metrics), `response`
//! reads what the server sends, `record` writes the audit JSON.

use crate::body;
use crate::config::{Config, DenyStyle};
use crate::judge::{self, Judgement, Ruling};
use crate::listfilter::{id_key, ListKind};
use crate::message::{self, codes, Invalid, Revision, Target};
use crate::policy::{Policy, Subject};
use crate::ratelimit::{FleetCall, RateLimits};
use crate::record::{self, ExchangeFacts, MessageRecord};
use crate::replies::{self, Reply};
use crate::response::{self, Expect, Plan, Reader, ResponseMode};
use crate::router::Router;
use std::collections::BTreeMap;
use crate::sessions;
use serde_json::value::RawValue;
use std::rc::Rc;
use tollgate_core::stream::{HttpExchange, Step};
use tollgate_core::observe::audit::{self, Decision, Envelope};
use tollgate_core::config::ConfigError;
use tollgate_core::fleet::outbox;
use tollgate_core::host::{BodyBuffer, Direction, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::stream::GrpcAnswer;
use crate::delegation;
use tollgate_core::identity::{self, Identity, IdentityError};
use tollgate_core::wire::jsonrpc::Kind;
use tollgate_core::observe::metrics::{LabelCap, Metrics};
use tollgate_core::reply::send_json;
use tollgate_core::wire::trace::{self, TraceStep};

/// Distinct values per VM of each client-chosen label (`tool`, `method`), each label its own
/// cap; further values are counted as `other` (stat names must stay bounded).
const MAX_LABEL_VALUES: usize = 256;

/// The compiled, immutable configuration shared by every stream of a VM.
pub struct Shared {
    pub config: Config,
    pub policy: Option<Policy>,
    pub rate_limits: RateLimits,
    /// `server.routers`, compiled: route server name -> Envoy `mcp_router` backends.
    pub routers: BTreeMap<String, Rc<Router>>,
    pub sessions: sessions::Binding,
    pub pinning: Option<crate::pinning::Pinning>,
    /// Request headers that may carry a client credential (removed unless
    /// `forward_credentials`), computed once.
    credential_headers: Vec<String>,
    tool_labels: LabelCap,
    method_labels: LabelCap,
    /// `caller` label values of `tollgate.mcp.calls` (the principal; capped, then `other`).
    caller_labels: LabelCap,
    /// The OAuth resource-server role (`oauth`), compiled.
    pub oauth: Option<crate::oauth::OAuth>,
    /// Token exchange for upstream credentials (`token_exchange`), compiled.
    pub token_exchange: Option<crate::tokenexchange::TokenExchange>,
}

impl Shared {
    pub fn build(mut config: Config) -> Result<Shared, ConfigError> {
        let (oauth, token_exchange) = credentials::compile(&mut config)?;
        let policy = match &config.policy {
            Some(p) => Some(Policy::compile(p, "policy")?),
            None => None,
        };
        let rate_limits = RateLimits::compile(&config.rate_limits, "rate_limits", config.store.as_ref())?;
        let credential_headers = config.identity.credential_headers();
        let mut routers = BTreeMap::new();
        for (name, router) in &config.server.routers {
            routers.insert(name.clone(), Rc::new(Router::compile(router, &format!("server.routers.{name}"))?));
        }
        let sessions = sessions::Binding::compile(&config.sessions, "sessions")?;
        let pinning = match &config.tool_pinning {
            // Pins and the listed-tools table are keyed by the route's server and the listed
            // name, while calls behind `mcp_router` are judged as the backend's unprefixed
            // tool: the two would not meet, so the combination is refused rather than half
            // enforced.
            Some(_) if !routers.is_empty() => {
                return Err(ConfigError::field("tool_pinning", "is not supported together with `server.routers` (Envoy's mcp_router) yet"));
            }
            Some(p) => Some(crate::pinning::Pinning::compile(p, "tool_pinning")?),
            None => None,
        };
        Ok(Shared {
            config,
            policy,
            rate_limits,
            routers,
            sessions,
            pinning,
            credential_headers,
            tool_labels: LabelCap::new(MAX_LABEL_VALUES),
            method_labels: LabelCap::new(MAX_LABEL_VALUES),
            caller_labels: LabelCap::new(MAX_LABEL_VALUES),
            oauth,
            token_exchange,
        })
    }

    fn dry_run(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.dry_run)
    }

    fn deny_style(&self) -> DenyStyle {
        self.policy.as_ref().map(|p| p.deny_style).unwrap_or_default()
    }
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
    /// The route is Envoy's `mcp_router` (`server.routers`): `server` becomes the backend a
    /// request's names are prefixed with.
    router: Option<Rc<Router>>,
    session_id: Option<String>,
    /// The server a session is bound to: the route's, as resolved from the request headers
    /// (kept apart from `server`, should that later be refined per message).
    session_server: String,
    trace: Option<TraceStep>,
    records: Vec<MessageRecord>,
    batch: bool,
    expect: Vec<Expect>,
    response: ResponseMode,
    status: Option<u32>,
    phase: Phase,
    /// The audit records were written (they are written once, by whichever comes first: a
    /// local reply, the response's end, the stream's log).
    emitted: bool,
    request_id: Option<String>,
    /// The store's word on this request's calls, once it came (the body is judged again
    /// with it: judging is pure, and the body was kept).
    store_said: Option<StoreSaid>,
    /// The store could not answer and this request's fleet-counted calls were counted on this
    /// Envoy's shared data instead (`fail_open_local`), whatever that count decided.
    limits_degraded: bool,
    /// The caller's token and the token exchange in flight, for servers whose upstream
    /// credential is exchanged (`credentials.rs`).
    upstream: credentials::Upstream,
}

/// Where the request stands.
enum Phase {
    /// Headers read; a POST body not judged yet.
    Reading,
    /// The body was judged and its calls wait for the fleet-wide store's count.
    AwaitingStore(Box<AwaitingStore>),
    /// Judged and counted; a request waits for the approval service's answer.
    AwaitingApproval(Box<approval_glue::Pending>),
    /// Judged and allowed; held until the upstream credential is exchanged (`credentials.rs`).
    AwaitingCredential,
    /// Judged, or nothing to judge: request body callbacks pass through.
    Passed,
    /// Answered locally: the request never reaches the server, the response is the filter's.
    Replied,
}

/// A request held for the store's answer.
struct AwaitingStore {
    token: u32,
    body: Vec<u8>,
    calls: Vec<FleetCall>,
}

/// What the store said about a request's fleet-counted calls.
enum StoreSaid {
    /// Counted (`reserved_at_ms`: the store's clock, for a refund).
    Counted { calls: Vec<FleetCall>, reserved_at_ms: u64 },
    /// Over a limit, or a `fail_closed` limit the store could not count.
    Refused { limit_id: String, retry_after_secs: u64 },
    /// The store could not answer and the calls were counted locally.
    Degraded,
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
            router: None,
            session_id: None,
            session_server: String::new(),
            trace: None,
            records: Vec::new(),
            batch: false,
            expect: Vec::new(),
            response: ResponseMode::Pass,
            status: None,
            phase: Phase::Reading,
            emitted: false,
            request_id: None,
            store_said: None,
            limits_degraded: false,
            upstream: credentials::Upstream::default(),
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
        let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
        let (record, ruling) = judge::session(shared.policy.as_ref(), subject);
        self.count_message(host, &method, None, record.label());
        self.records.push(record);
        if let (Some(policy), Ruling::Denied { rule_id }) = (&shared.policy, &ruling) {
            if !policy.dry_run {
                let metadata = self.config().resource_metadata.as_deref();
                return self.reply(host, &replies::session_denial(policy.deny_style, rule_id.as_deref(), metadata));
            }
        }
        self.phase = Phase::Passed;
        self.forward(host)
    }

    fn too_large(&mut self, host: &dyn Host) -> Step {
        let max = self.config().max_body_bytes;
        let reply = replies::refusal(413, None, codes::INVALID_REQUEST, &format!("request body larger than {max} bytes"));
        self.refuse_request(host, reply, Decision::Error, "body too large")
    }

    /// Parses and judges a whole POST body.
    fn judge_body(&mut self, host: &dyn Host, bytes: &[u8]) -> Step {
        self.phase = Phase::Passed;
        let read = match body::read(bytes, self.revision, self.unsupported_revision.as_deref()) {
            Ok(read) => read,
            Err(refused) => return self.refuse_request(host, refused.reply, Decision::Error, &refused.error),
        };
        self.batch = read.batch;
        let messages = read.messages;
        if self.revision.has_routing_headers() {
            let method_header = host.request_header("mcp-method");
            let name_header = host.request_header("mcp-name");
            for m in &messages {
                if let Err(refusal) = message::check_routing_headers(method_header.as_deref(), name_header.as_deref(), m) {
                    return self.refuse_message(host, m.id, &refusal);
                }
            }
        }

        // Behind Envoy's mcp_router, `alpha__echo` is judged as `echo` on server `alpha`.
        let (messages, routed) = match self.router.clone() {
            Some(router) => {
                let (messages, routed) = router.route(messages);
                if let Some(server) = &routed.server {
                    self.server.clone_from(server);
                }
                (messages, Some(routed))
            }
            None => (messages, None),
        };

        // Judge every message.
        let shared = self.shared.clone();
        let subject = Subject { identity: self.identity.as_ref(), server: &self.server };
        let mut judgement = judge::judge(&messages, shared.policy.as_ref(), subject, self.config().audit_arguments);
        if let Some(routed) = &routed {
            routed.rule(&mut judgement, shared.dry_run());
        }
        // Tool pinning: calls of changed tools, and of tools never listed to the caller.
        let mut pin_reply = None;
        if let Some(pinning) = &shared.pinning {
            let (reply, events) = pinning.judge_calls(host, subject, &messages, &mut judgement, shared.dry_run(), self.revision, self.batch);
            pin_reply = reply;
            let action = pinning.changed_tool;
            for event in events {
                let action = if event == crate::pinning::TOOL_CHANGED { action.label() } else { "deny" };
                self.metrics.inc(host, "tollgate.mcp.tool_pinning", &[("server", &self.server), ("event", event), ("action", action)]);
            }
        }
        let enforce = judgement.denied() && !shared.dry_run();

        // Rate limits: only the `tools/call` requests the policy allowed, only when the
        // request is not denied anyway; all or nothing for the request.
        let mut limited: Option<(String, u64)> = None;
        if !enforce && !shared.rate_limits.is_empty() {
            let calls = judgement.rate_limit_candidates(&messages);
            let tools: Vec<&str> = calls.iter().map(|(_, t)| *t).collect();
            // Fleet-counted limits first: the store is asked once, the body judged again
            // with its answer (`on_grpc_response`).
            let refused_by_store = match self.store_said.take() {
                None => {
                    let fleet_calls = shared.rate_limits.fleet_calls(subject, &tools);
                    match (&shared.config.store, fleet_calls.is_empty()) {
                        (Some(store), false) => {
                            let message = shared.rate_limits.fleet_request(store, &fleet_calls);
                            match store.ask(host, &message) {
                                Ok(token) => {
                                    let body = bytes.to_vec();
                                    self.phase = Phase::AwaitingStore(Box::new(AwaitingStore { token, body, calls: fleet_calls }));
                                    return Step::Pause;
                                }
                                Err(e) => {
                                    host.log(LogLevel::Warn, &format!("tollgate-mcp: cannot reach the limits store `{}`: {e}", store.cluster));
                                    self.limits_degraded = !shared.rate_limits.fails_closed(&fleet_calls);
                                    match shared.rate_limits.fleet_failed(host, &fleet_calls) {
                                        Ok(_) => None,
                                        Err(refused) => Some((refused.index, refused.limit_id.to_string(), refused.retry_after_secs)),
                                    }
                                }
                            }
                        }
                        _ => None,
                    }
                }
                Some(StoreSaid::Refused { limit_id, retry_after_secs }) => {
                    // The store names the limit; the call it refused is the first it matches.
                    let index = shared.rate_limits.first_call_of(subject, &tools, &limit_id);
                    Some((index, limit_id, retry_after_secs))
                }
                Some(said) => {
                    self.store_said = Some(said);
                    None
                }
            };
            let local = match refused_by_store {
                Some(refused) => Err(refused),
                None => shared
                    .rate_limits
                    .admit(host, subject, &tools)
                    .map_err(|r| (r.index, r.limit_id.to_string(), r.retry_after_secs)),
            };
            if let Err((index, limit_id, retry_after)) = local {
                if let Some((at, _)) = calls.get(index) {
                    judgement.rate_limited(*at, &limit_id, shared.dry_run());
                }
                limited = Some((limit_id, retry_after));
                // Calls the store counted for a request refused here are given back.
                if let (Some(StoreSaid::Counted { calls, reserved_at_ms }), Some(store)) = (self.store_said.take(), &shared.config.store) {
                    if store.protocol == tollgate_core::fleet::Protocol::Tollgate {
                        outbox::push(store.queued(true, shared.rate_limits.fleet_refund(store, &calls, reserved_at_ms)));
                    }
                }
            }
        }
        let enforce_limit = limited.is_some() && !shared.dry_run();
        if enforce {
            judgement.refuse_batch(&messages, "another message in the batch was denied");
        } else if enforce_limit {
            judgement.refuse_batch(&messages, "another message in the batch was rate limited");
        } else if let Some(step) = self.approval_gate(host, &messages, &mut judgement) {
            // Approval (`approval.rs`): asked only about what the policy and limits passed.
            return step;
        }
        for (m, record) in messages.iter().zip(judgement.records.iter()) {
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
        let Judgement { records, rulings } = judgement;
        self.records = records;
        // Replies name what the client sent (`Unknown tool: alpha__echo`).
        let messages = match routed {
            Some(routed) => routed.restore(messages),
            None => messages,
        };
        if enforce || enforce_limit {
            let denied = judge::denied_requests(&messages, &rulings);
            let reply = match (&limited, pin_reply) {
                (Some((limit_id, retry_after)), _) if !enforce => replies::rate_limited(&denied, self.batch, limit_id, *retry_after),
                // `changed_tool: deny`: the error names the changed definition.
                (_, Some(pinned)) => pinned,
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
        self.forward(host)
    }

    // ----- response -----------------------------------------------------------------------

    /// Failed closed: this chunk is dropped; the stream's end carries a JSON-RPC error.
    fn drop_chunk(&self, host: &dyn Host, body_size: usize, end_of_stream: bool, message: &str) {
        self.replace_response(host, body_size, &[]);
        if end_of_stream {
            let error = response::response_error(&self.expect, &self.records, message);
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
        let dry_run = self.shared.dry_run();
        let error = response::unfilterable(&self.expect, &mut self.records, content_type, dry_run);
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

    /// The reader of this exchange's server messages.
    fn reader<'a>(&'a mut self, host: &'a dyn Host) -> Reader<'a> {
        Reader {
            pins: self.shared.pinning.as_ref().map(|p| (p, host)),
            expect: &self.expect,
            records: &mut self.records,
            policy: self.shared.policy.as_ref(),
            subject: Subject { identity: self.identity.as_ref(), server: &self.server },
            router: self.router.as_deref(),
            held: matches!(self.response, ResponseMode::JsonBuffer),
            post: self.http_method == "POST",
        }
    }

    /// Rewrites one SSE chunk (see [`Reader::sse_chunk`]); an event too large ends the stream.
    fn sse_chunk(&mut self, host: &dyn Host, chunk: &[u8]) -> Vec<u8> {
        let ResponseMode::Sse(mut parser) = std::mem::replace(&mut self.response, ResponseMode::Pass) else {
            return chunk.to_vec();
        };
        let (out, readable) = self.reader(host).sse_chunk(&mut parser, chunk);
        self.response = if readable { ResponseMode::Sse(parser) } else { ResponseMode::Dropped };
        out
    }

    // ----- replies, records, metrics ------------------------------------------------------

    fn refuse_message(&mut self, host: &dyn Host, id: Option<&RawValue>, refusal: &Invalid) -> Step {
        let reply = replies::refusal(400, id, refusal.code, &refusal.message);
        self.records.clear();
        self.refuse_request(host, reply, Decision::Error, &refusal.message)
    }

    /// Refuses the whole request before (or instead of) per-message records.
    fn refuse_request(&mut self, host: &dyn Host, reply: Reply, decision: Decision, error: &str) -> Step {
        let mut record = MessageRecord::new(decision);
        record.error = Some(message::truncate(error, 512).to_string());
        self.refuse_request_with(host, reply, record)
    }

    /// [`Exchange::refuse_request`] with the record made by the caller.
    fn refuse_request_with(&mut self, host: &dyn Host, reply: Reply, record: MessageRecord) -> Step {
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
        self.phase = Phase::Replied;
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
            // The caller: the principal (the agent, until identities name agents apart).
            let caller = self.identity.as_ref().map_or("none", |i| self.shared.caller_labels.label(&i.principal));
            let labels = [("server", self.server.as_str()), ("tool", tool), ("caller", caller), ("decision", decision)];
            self.metrics.inc(host, "tollgate.mcp.calls", &labels);
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
        let request_id = self.request_id.take();
        let facts = ExchangeFacts {
            server: &self.server,
            http_method: &self.http_method,
            revision: self.unsupported_revision.as_deref().unwrap_or(self.revision.as_str()),
            session_id: self.session_id.as_deref(),
            envelope: Envelope { request_id: request_id.as_deref(), trace: self.trace.as_ref(), identity: self.identity.as_ref() },
            status: self.status,
            start_ms: self.start_ms,
            batch: self.batch,
            limits_degraded: self.limits_degraded,
        };
        let (out, errors) = record::serialize(&facts, &self.records, host.now_millis());
        for e in errors {
            host.log(LogLevel::Error, &format!("tollgate-mcp: audit record not serializable: {e}"));
        }
        audit::emit_json(host, &self.config().audit, &out);
    }

    // ----- session binding (sessions.rs decides) --------------------------------------------

    /// Checks the request's session id: `Some` when refused (404, never forwarded).
    fn admit_session(&mut self, host: &dyn Host) -> Option<Step> {
        let presented = host.request_header("mcp-session-id");
        let shared = self.shared.clone();
        self.session_server = self.server.clone();
        match sessions::admit(host, &shared.sessions, &self.session_server, self.identity.as_ref(), presented.as_deref()) {
            sessions::Admit::Pass => None,
            sessions::Admit::Forward(server_id) => {
                if let Err(e) = host.set_header(HeaderMap::Request, "mcp-session-id", Some(&server_id)) {
                    // The bound id must never reach the server in place of its own: refuse.
                    let why = format!("cannot rewrite the session id: {e}");
                    let reply = replies::refusal(500, None, codes::INTERNAL_ERROR, "gateway could not forward the session");
                    return Some(self.refuse_request(host, reply, Decision::Error, &why));
                }
                self.session_id = Some(message::truncate(&server_id, 128).to_string());
                None
            }
            sessions::Admit::Refuse { server_id, why, label } => {
                self.session_id = server_id;
                self.metrics.inc(host, "tollgate.mcp.session_refused", &[("server", &self.server), ("why", label)]);
                let mut record = MessageRecord::new(Decision::Deny);
                record.detail.reason = Some(sessions::REASON.into());
                record.error = Some(why);
                Some(self.refuse_request_with(host, sessions::not_found(), record))
            }
        }
    }

    /// Binds a session id the server issued; the record names the server's own id.
    fn issue_session(&mut self, host: &dyn Host) {
        let issued = host.response_header("mcp-session-id");
        let shared = self.shared.clone();
        match sessions::issue(host, &shared.sessions, &self.session_server, self.identity.as_ref(), issued.as_deref()) {
            sessions::Issue::Pass => {}
            sessions::Issue::Bound { client_id, server_id } => {
                host.try_set_header(HeaderMap::Response, "mcp-session-id", Some(&client_id));
                self.session_id = Some(message::truncate(&server_id, 128).to_string());
            }
            sessions::Issue::Strip { why } => {
                host.log(LogLevel::Error, &format!("tollgate-mcp: session id not passed to the client: {why}"));
                host.try_set_header(HeaderMap::Response, "mcp-session-id", None);
                self.metrics.inc(host, "tollgate.mcp.session_refused", &[("server", &self.server), ("why", "unbindable")]);
                if let Some(rec) = self.records.first_mut() {
                    rec.error.get_or_insert(why);
                }
            }
        }
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
        // OAuth protected-resource metadata: answered here, before any credential is asked.
        if let Some(step) = self.serve_metadata(host) {
            return step;
        }
        self.request_id = host.request_header(audit::REQUEST_ID_HEADER);
        self.server = self.resolve_server(host);
        self.router = self.shared.routers.get(&self.server).cloned();
        self.session_id = message::session_id(host.request_header("mcp-session-id").as_deref());
        // Take part in the trace: the audit records carry the inbound trace id, the upstream
        // gets the gateway's span as its parent.
        self.trace = Some(trace::join_request(host, None));

        if let Some(step) = self.refuse_failed_token(host) {
            return step;
        }
        let identity = identity::resolve(host, &self.config().identity);
        match identity {
            Ok(id) => self.identity = id,
            Err(IdentityError::UnknownApiKey) => {
                let reply = replies::unauthorized(true, self.config().resource_metadata.as_deref());
                return self.refuse_request(host, reply, Decision::Deny, "unknown API key");
            }
            Err(IdentityError::Gateway(why)) => {
                delegation::count(&self.metrics, host, why.label());
                let reply = delegation::refusal(why, self.config().resource_metadata.as_deref());
                return self.refuse_request(host, reply, Decision::Deny, why.reason());
            }
        }
        if self.identity.as_ref().is_some_and(|i| i.delegation.is_some()) {
            delegation::count(&self.metrics, host, "accepted");
        }
        if self.identity.is_none() && self.config().require_identity {
            let reply = replies::unauthorized(false, self.config().resource_metadata.as_deref());
            return self.refuse_request(host, reply, Decision::Deny, "no identity");
        }
        // DNS rebinding (checked once the caller is known, so the record names it): a browser page of another origin never reaches the server.
        if let Some(origin) = host.request_header("origin") {
            if !origin_allowed(self.config().allowed_origins.as_deref(), &origin) {
                let reply = replies::refusal(403, None, codes::INVALID_REQUEST, "Origin not allowed");
                let reason = format!("origin `{}` not allowed", message::truncate(&origin, 256));
                return self.refuse_request(host, reply, Decision::Deny, &reason);
            }
        }
        // Session binding (once the caller is known): only the caller and server a session
        // was issued to may use it; the server sees its own id.
        if let Some(step) = self.admit_session(host) {
            return step;
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
        self.keep_subject_token(host);
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
        match self.phase {
            // Held until the store answers (the body has ended; nothing more should come).
            Phase::Replied | Phase::AwaitingStore(_) | Phase::AwaitingApproval(_)
            | Phase::AwaitingCredential => return Step::Pause,
            Phase::Passed => return Step::Continue,
            Phase::Reading if self.http_method != "POST" => return Step::Continue,
            Phase::Reading => {}
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
        if matches!(self.phase, Phase::Replied) {
            return Step::Continue;
        }
        self.status = host.response_header(":status").and_then(|s| s.trim().parse().ok());
        self.issue_session(host);
        if end_of_stream {
            self.finish(host);
            return Step::Continue;
        }
        let content_type = host.response_header("content-type");
        let head = response::Head {
            is_get: self.http_method == "GET",
            expect: &self.expect,
            policy: self.shared.policy.is_some() || self.shared.pinning.is_some(),
            dry_run: self.shared.dry_run(),
            content_type: content_type.as_deref(),
            encoded: !message::is_identity_encoding(host.response_header("content-encoding").as_deref()),
            max_sse_event_bytes: self.config().max_sse_event_bytes,
        };
        match response::plan(&head) {
            Plan::Pass => {}
            Plan::Unfilterable => self.unfilterable_list(host, content_type.as_deref()),
            Plan::DropEncoded => {
                // Cannot read it, so cannot filter it: never pass it.
                host.log(LogLevel::Warn, "tollgate-mcp: encoded MCP response cannot be filtered; dropped");
                self.fail_response_headers(host);
                self.response = ResponseMode::Dropped;
            }
            Plan::Read { mode, rewrite } => {
                if rewrite {
                    host.try_set_header(HeaderMap::Response, "content-length", None);
                    host.try_set_header(HeaderMap::Response, "cache-control", Some("private"));
                }
                self.response = mode;
            }
        }
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if matches!(self.phase, Phase::Replied) {
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
                    let _ = self.reader(host).inspect_json(&copy);
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
                if let Some(new) = self.reader(host).inspect_json(&body) {
                    self.replace_response(host, body_size, &new);
                }
            }
            ResponseMode::Sse(_) => {
                let chunk = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
                let out = self.sse_chunk(host, &chunk);
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

    /// The store's answer for a held `tools/call`: the body is judged again with it.
    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, answer: GrpcAnswer<'_>) {
        let awaiting = match std::mem::replace(&mut self.phase, Phase::Passed) {
            Phase::AwaitingStore(a) if a.token == token => a,
            other => {
                self.phase = other;
                return;
            }
        };
        let shared = self.shared.clone();
        let read = tollgate_core::fleet::read_answer(answer, awaiting.calls.len());
        let said = match read {
            Ok(answer) => match shared.rate_limits.fleet_answered(&awaiting.calls, &answer) {
                Ok(()) => StoreSaid::Counted {
                    reserved_at_ms: answer.reserved_at_ms.unwrap_or_else(|| host.now_millis()),
                    calls: awaiting.calls.clone(),
                },
                Err(refused) => StoreSaid::Refused { limit_id: refused.limit_id.to_string(), retry_after_secs: refused.retry_after_secs },
            },
            Err(why) => {
                let cluster = shared.config.store.as_ref().map_or("", |s| s.cluster.as_str());
                host.log(LogLevel::Warn, &format!("tollgate-mcp: the limits store `{cluster}` did not answer: {why}"));
                self.limits_degraded = !shared.rate_limits.fails_closed(&awaiting.calls);
                match shared.rate_limits.fleet_failed(host, &awaiting.calls) {
                    Ok(_) => StoreSaid::Degraded,
                    Err(refused) => StoreSaid::Refused { limit_id: refused.limit_id.to_string(), retry_after_secs: refused.retry_after_secs },
                }
            }
        };
        self.store_said = Some(said);
        if self.judge_body(host, &awaiting.body) == Step::Continue {
            if let Err(e) = host.resume(Direction::Request) {
                host.log(LogLevel::Error, &format!("tollgate-mcp: cannot resume the request: {e}"));
            }
        }
    }

    /// A callout's answer: the approval service's (`approval_glue.rs`) or the token endpoint's
    /// for a request held for its upstream credential (`credentials.rs`), told apart by token.
    fn on_http_call_response(&mut self, host: &dyn Host, token: u32, answer: tollgate_core::stream::HttpAnswer<'_>) {
        if !self.approval_answered(host, token, answer) {
            self.credential_answer(host, token, answer);
        }
    }

    /// Stream end (including resets): emits the audit record if nothing did yet.
    fn on_log(&mut self, host: &dyn Host) {
        self.finish(host);
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;

#[path = "approval_glue.rs"]
mod approval_glue;
#[path = "credentials.rs"]
mod credentials;

/// Whether a request's `Origin` may call: no allow-list configured, or the origin listed
/// (exactly, or as `scheme://host:*` for any port of that host).
pub fn origin_allowed(allowed: Option<&[String]>, origin: &str) -> bool {
    let Some(allowed) = allowed else { return true };
    allowed.iter().any(|a| match a.strip_suffix(":*") {
        Some(base) => origin.strip_prefix(base).and_then(|rest| rest.strip_prefix(':')).is_some_and(|port| {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }),
        None => a == origin,
    })
}

#[cfg(test)]
mod origin_tests {
    use super::origin_allowed;

    #[test]
    fn origins_match_exactly_or_by_any_port_and_absent_lists_allow_all() {
        let allowed = vec!["https://app.example.com".to_string(), "http://localhost:*".to_string()];
        assert!(origin_allowed(Some(&allowed), "https://app.example.com"));
        assert!(origin_allowed(Some(&allowed), "http://localhost:6274"));
        assert!(!origin_allowed(Some(&allowed), "http://localhost"));
        assert!(!origin_allowed(Some(&allowed), "http://localhost:6274.evil.com"));
        assert!(!origin_allowed(Some(&allowed), "http://localhost.evil.com:80"));
        assert!(!origin_allowed(Some(&allowed), "https://app.example.com.evil.com"));
        assert!(!origin_allowed(Some(&allowed), "null"));
        assert!(!origin_allowed(Some(&[]), "https://app.example.com"));
        assert!(origin_allowed(None, "https://anything.example"));
    }
}
