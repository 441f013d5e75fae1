//! One HTTP exchange through the A2A filter: the per-request state machine, written against
//! the `Host` trait so it runs natively against `MemoryHost` in unit tests. `filter.rs` only
//! maps proxy-wasm callbacks onto it.
//!
//! Request: classify from the headers; JSON-RPC and REST bodies are buffered (headers held)
//! only to read the method and ids; then one decision: identity, delegation context, trace,
//! loop/depth, authorization — and the upstream headers are set while still held.
//! Response: JSON and SSE bodies stream through untouched while ids and state are read
//! incrementally; only agent cards are buffered (capped) to be rewritten.

use crate::authz::{self, OriginatorCheck, Subject, ANONYMOUS};
use crate::card::{self, Mapping};
use crate::chain::{self, Inbound, Presented, Refusal, Trust};
use crate::classify::{self, Binding, BodyClass, Dialect, Head, Method};
use crate::config::{Config, Effect};
use crate::listing;
use crate::session::{self, RequestIds, ResponseTracker};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::rc::Rc;
use tollgate_core::exchange::{HttpExchange, Step};
use tollgate_core::filter_state::Published;
use tollgate_core::audit::{self, Decision, Layer, Record};
use tollgate_core::config::ConfigError;
use tollgate_core::host::{BodyBuffer, HeaderMap, Host, HostExt, LogLevel};
use tollgate_core::identity::{self, Identity, IdentityError};
use tollgate_core::metrics::Metrics;
use tollgate_core::reply;
use tollgate_core::shared_table::{Put, SharedTable};
use tollgate_core::trace::{self, TraceParent, TraceStep};

/// JSON-RPC error codes the gateway uses. A2A itself uses -32001..-32009 and MCP -32000,
/// -32002 and -32042, so these sit in the free part of the server range.
pub mod codes {
    pub const DELEGATION_LOOP: i64 = -32050;
    pub const MAX_DEPTH: i64 = -32051;
    pub const FORBIDDEN: i64 = -32052;
    pub const UNAUTHENTICATED: i64 = -32053;
    pub const TOO_LARGE: i64 = -32054;
    pub const UNFILTERABLE: i64 = -32055;
}

pub const ERROR_DOMAIN: &str = "tollgate";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// State built once from the configuration, shared by every exchange of a VM.
pub struct Shared {
    pub config: Config,
    pub table: SharedTable,
    /// Request headers that may carry the caller's credential, removed before the agent
    /// unless `forward_credentials` (computed once here).
    pub credential_headers: Vec<String>,
    /// `delegation.signing_key`, prepared once for signing and verifying.
    pub signing_key: Option<chain::HmacKey>,
}

pub fn build(mut config: Config) -> Result<Shared, ConfigError> {
    config.compile()?;
    let table = SharedTable::new("tollgate.a2a.conv", config.conversations.capacity, config.conversations.ttl_secs);
    let credential_headers = config.identity.credential_headers();
    let signing_key = match config.delegation.signing_key.as_deref() {
        Some(k) => Some(chain::HmacKey::new(k.as_bytes()).ok_or_else(|| ConfigError::field("delegation.signing_key", "unusable as an HMAC key"))?),
        None => None,
    };
    Ok(Shared { config, table, credential_headers, signing_key })
}


#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not A2A (and not a POST to an agent): passed on, without gateway-owned headers (and,
    /// on agent routes, credentials), unrecorded.
    Passthrough,
    /// Holding headers until the body is complete.
    AwaitBody,
    /// Forwarded upstream; following the response.
    Forwarded,
    /// Answered locally (refused).
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deny {
    Refusal(Refusal),
    Forbidden,
    NotOriginator,
    Unauthenticated,
    TooLarge,
    /// Not JSON, or an empty body (JSON-RPC Parse error, -32700).
    Parse,
    /// JSON but not a valid JSON-RPC request (a response included), duplicate keys.
    Invalid,
    /// A JSON-RPC batch (A2A has none).
    Batch,
    /// A POST whose content type is not JSON (the SDK would still run it).
    MediaType,
    /// A path with an invalid or ambiguous percent-escape.
    BadPath,
    /// An HTTP method A2A does not use (PUT, PATCH...) on an agent route.
    HttpMethod,
    /// A `ListTasks` answer that had to be filtered to the caller's tasks but could not be
    /// (too large, encoded, not JSON, ambiguous): replaced, never passed.
    Unfilterable,
    /// Under `allow_originator`, a call naming a task the gateway has no record of at this
    /// agent: answered as the agent answers an unknown task (A2A `TaskNotFoundError`), never
    /// forwarded.
    TaskNotFound,
}

/// A2A's own error domain and `TaskNotFoundError` (a2a-sdk's shapes: JSON-RPC -32001, REST
/// 404 `NOT_FOUND`, reason `TASK_NOT_FOUND`).
const A2A_DOMAIN: &str = "a2a-protocol.org";
const TASK_NOT_FOUND_CODE: i64 = -32001;
const TASK_NOT_FOUND_MESSAGE: &str = "Task not found";

impl Deny {
    fn reason(self) -> &'static str {
        match self {
            Deny::Refusal(r) => r.reason(),
            Deny::Forbidden => "A2A_FORBIDDEN",
            Deny::NotOriginator => "A2A_NOT_TASK_ORIGINATOR",
            Deny::Unauthenticated => "A2A_UNAUTHENTICATED",
            Deny::TooLarge => "A2A_REQUEST_TOO_LARGE",
            Deny::Parse | Deny::Invalid | Deny::Batch | Deny::MediaType | Deny::BadPath | Deny::HttpMethod => "A2A_INVALID_REQUEST",
            Deny::Unfilterable => "A2A_RESPONSE_UNFILTERABLE",
            Deny::TaskNotFound => "A2A_TASK_NOT_FOUND",
        }
    }
    fn rpc_code(self) -> i64 {
        match self {
            Deny::Refusal(Refusal::Loop) => codes::DELEGATION_LOOP,
            Deny::Refusal(Refusal::MaxDepth) => codes::MAX_DEPTH,
            Deny::Forbidden | Deny::NotOriginator => codes::FORBIDDEN,
            Deny::Unauthenticated => codes::UNAUTHENTICATED,
            Deny::TooLarge => codes::TOO_LARGE,
            Deny::Parse => reply::codes::PARSE_ERROR,
            Deny::Invalid | Deny::Batch | Deny::MediaType | Deny::BadPath | Deny::HttpMethod => reply::codes::INVALID_REQUEST,
            Deny::Unfilterable => codes::UNFILTERABLE,
            Deny::TaskNotFound => TASK_NOT_FOUND_CODE,
        }
    }
    /// HTTP status for JSON-RPC replies: 200 (the error is in the body) except where the
    /// transport itself failed.
    fn rpc_http_status(self) -> u32 {
        match self {
            Deny::Unauthenticated => 401,
            Deny::TooLarge => 413,
            Deny::MediaType => 415,
            Deny::BadPath => 400,
            Deny::HttpMethod => 405,
            Deny::Unfilterable => 502,
            _ => 200,
        }
    }
    /// HTTP status and google.rpc status for REST and card replies.
    fn rest_status(self) -> (u32, &'static str) {
        match self {
            Deny::Refusal(Refusal::Loop) => (409, "ABORTED"),
            Deny::Refusal(Refusal::MaxDepth) => (400, "FAILED_PRECONDITION"),
            Deny::Forbidden | Deny::NotOriginator => (403, "PERMISSION_DENIED"),
            Deny::Unauthenticated => (401, "UNAUTHENTICATED"),
            Deny::TooLarge => (413, "RESOURCE_EXHAUSTED"),
            Deny::Parse | Deny::Invalid | Deny::Batch | Deny::BadPath => (400, "INVALID_ARGUMENT"),
            Deny::MediaType => (415, "INVALID_ARGUMENT"),
            Deny::HttpMethod => (405, "UNIMPLEMENTED"),
            Deny::Unfilterable => (502, "INTERNAL"),
            Deny::TaskNotFound => (404, "NOT_FOUND"),
        }
    }
    /// A refusal the filter reports as an error (the request or answer was unusable), not a
    /// policy decision.
    fn is_error(self) -> bool {
        !matches!(self, Deny::Refusal(_) | Deny::Forbidden | Deny::NotOriginator | Deny::TaskNotFound)
    }
    fn message(self) -> &'static str {
        match self {
            Deny::Refusal(Refusal::Loop) => "delegation loop: the target agent is already in this call's delegation chain",
            Deny::Refusal(Refusal::MaxDepth) => "delegation chain too deep: the maximum number of hops is reached",
            Deny::Forbidden => "this caller may not call this method on this agent",
            Deny::NotOriginator => "only the identity that created the task may do this",
            Deny::Unauthenticated => "unknown credential",
            Deny::TooLarge => "request body too large",
            Deny::Parse => "Parse error: the request body is not JSON",
            Deny::Invalid => "invalid JSON-RPC request",
            Deny::Batch => "JSON-RPC batches are not part of A2A",
            Deny::MediaType => "A2A requests must be JSON (Content-Type application/json or application/a2a+json)",
            Deny::BadPath => "invalid or ambiguous percent-escape in the request path",
            Deny::HttpMethod => "A2A uses only GET, POST and DELETE: this HTTP method is refused on agent routes",
            Deny::Unfilterable => "the agent's task list could not be filtered to the caller's own tasks, so it was not passed on",
            Deny::TaskNotFound => TASK_NOT_FOUND_MESSAGE,
        }
    }
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    #[serde(rename = "@type")]
    type_url: &'static str,
    reason: &'a str,
    domain: &'static str,
    metadata: std::collections::BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct RestError<'a> {
    error: RestErrorBody<'a>,
}

#[derive(Serialize)]
struct RestErrorBody<'a> {
    code: u32,
    status: &'static str,
    message: &'a str,
    details: [ErrorInfo<'a>; 1],
}

/// What the conversation table stores per contextId / (agent, taskId) / referenced taskId
/// (JSON), borrowed from the stored bytes when read and from the exchange when written.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Entry<'a> {
    /// The traceparent the gateway sent upstream on the hop that recorded it.
    #[serde(borrow)]
    tp: Cow<'a, str>,
    /// Task entries: the agent that owns the task.
    #[serde(default, borrow, deserialize_with = "borrowed", skip_serializing_if = "Option::is_none")]
    agent: Option<Cow<'a, str>>,
    /// Task entries: who created it (on-behalf-of user, else caller).
    #[serde(default, borrow, deserialize_with = "borrowed", skip_serializing_if = "Option::is_none")]
    orig: Option<Cow<'a, str>>,
}

/// An optional string borrowed from the input when it has no escapes (serde borrows a bare
/// `Cow` field, but copies one inside an `Option`).
fn borrowed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'de>>::deserialize(d)?.map(|t| t.0))
}

impl<'a> Entry<'a> {
    fn trace(tp: &'a str) -> Self {
        Entry { tp: Cow::Borrowed(tp), agent: None, orig: None }
    }
}

fn ctx_key(id: &str) -> String {
    ["ctx:", id].concat()
}
/// A task as one agent knows it: task ids are unique only per agent, so two agents returning
/// the same id are two entries (ownership and originator never leak between them).
/// `task:<agent length>:<agent>:<id>`.
fn task_key(agent: &str, id: &str) -> String {
    let mut key = String::with_capacity(agent.len() + id.len() + 16);
    key.push_str("task:");
    chain::push_decimal(&mut key, agent.len() as u64);
    key.push(':');
    key.push_str(agent);
    key.push(':');
    key.push_str(id);
    key
}
/// A task id → trace only (for `referenceTaskIds`, which do not say which agent owns them):
/// never used for ownership or originator decisions.
fn task_ref_key(id: &str) -> String {
    ["tref:", id].concat()
}

/// A value that may go into a header as is (ids come from request and response bodies).
fn header_safe(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.chars().any(char::is_control))
}

#[derive(Debug, Default)]
struct CardState {
    /// Rewriting is under way (response held).
    buffering: bool,
    /// The card is a JSON-RPC result (extended card), not the whole body.
    in_result: bool,
    public_base: Option<String>,
    public_prefix: String,
    upstream_prefix: String,
    /// Outcome for the audit record: rewritten, unchanged, signed_kept, signatures_removed,
    /// too_large, encoded, not_json, error.
    result: Option<&'static str>,
    urls_rewritten: u32,
}

/// A `ListTasks` answer being cut down to the acting identity's own tasks.
#[derive(Debug, Default)]
struct ListState {
    /// The identity whose tasks may be shown (on-behalf-of user, else caller).
    owner: String,
    /// The answer is held until complete.
    buffering: bool,
    /// Why the answer cannot be filtered, found from its headers (replaced at its first bytes).
    unfilterable: Option<&'static str>,
    /// The answer was replaced by an error: whatever else arrives is dropped.
    replaced: bool,
    /// Tasks withheld from the answer (for the audit record).
    withheld: Option<u32>,
}

pub struct Exchange {
    shared: Rc<Shared>,
    metrics: Rc<Metrics>,
    phase: Phase,
    start_nanos: u64,
    head: Head,
    dialect: Dialect,
    binding: Option<Binding>,
    method: Option<Method>,
    raw_method: Option<String>,
    rpc_id: Option<Box<RawValue>>,
    ids: RequestIds,
    identity: Option<Identity>,
    identity_failed: bool,
    presented: Presented,
    traceparent_in: Option<String>,
    tracestate_in: Option<String>,
    target: String,
    caller: String,
    trust: Trust,
    on_behalf_of: Option<String>,
    hop: Option<u32>,
    chain: Vec<String>,
    trace: Option<TraceStep>,
    trace_source: &'static str,
    decision: Decision,
    deny: Option<Deny>,
    rule_id: Option<String>,
    status: Option<u32>,
    tracker: Option<ResponseTracker>,
    card: Option<CardState>,
    list: Option<ListState>,
    /// The request's HTTP method, kept for the record only when it was refused for it.
    refused_http_method: Option<String>,
    ttfe_nanos: Option<u64>,
    recorded_ctx: bool,
    /// The response's contextId was handled (recorded, or already recorded by the request).
    recorded_response_ctx: bool,
    recorded_task: bool,
    /// The tracker version `record_response_ids` last handled.
    recorded_version: Option<u32>,
    /// The tracker version (0 without one) the tags were last published at.
    published_version: Option<u32>,
    finished: bool,
    published: Published,
    request_id: Option<String>,
}

/// The request headers the filter reads, from one listing of the map (the values moved out)
/// instead of a lookup per name. As with single lookups, the first of repeated headers wins.
#[derive(Default)]
struct RequestHead {
    request_id: Option<String>,
    method: Option<String>,
    path: Option<String>,
    content_type: Option<String>,
    a2a_version: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    presented: Presented,
    /// Every `x-tollgate-a2a-*` header name present (gateway-owned: removed).
    gateway_owned: Vec<String>,
}

impl RequestHead {
    fn read(host: &dyn Host) -> RequestHead {
        let mut head = RequestHead::default();
        let Ok(headers) = host.headers(HeaderMap::Request) else { return head };
        for (name, value) in headers {
            let lower;
            let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name.as_str()
            };
            let gateway_owned = key.starts_with(chain::PREFIX);
            let slot = match key {
                "x-request-id" => Some(&mut head.request_id),
                ":method" => Some(&mut head.method),
                ":path" => Some(&mut head.path),
                "content-type" => Some(&mut head.content_type),
                "a2a-version" => Some(&mut head.a2a_version),
                "traceparent" => Some(&mut head.traceparent),
                "tracestate" => Some(&mut head.tracestate),
                chain::HOP => Some(&mut head.presented.hop),
                chain::CHAIN => Some(&mut head.presented.chain),
                chain::ON_BEHALF_OF => Some(&mut head.presented.on_behalf_of),
                chain::SIG => Some(&mut head.presented.sig),
                _ => None,
            };
            if let Some(slot) = slot.filter(|slot| slot.is_none()) {
                *slot = Some(value);
            }
            if gateway_owned {
                head.gateway_owned.push(name);
            }
        }
        // An empty value counts as absent (a repeated header's later value never stands in).
        for value in [
            &mut head.traceparent,
            &mut head.tracestate,
            &mut head.presented.hop,
            &mut head.presented.chain,
            &mut head.presented.on_behalf_of,
            &mut head.presented.sig,
        ] {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        head
    }
}

impl Exchange {
    pub fn new(shared: Rc<Shared>, metrics: Rc<Metrics>) -> Self {
        Exchange {
            shared,
            metrics,
            phase: Phase::Passthrough,
            start_nanos: 0,
            head: Head::Other,
            dialect: Dialect::V03,
            binding: None,
            method: None,
            raw_method: None,
            rpc_id: None,
            ids: RequestIds::default(),
            identity: None,
            identity_failed: false,
            presented: Presented::default(),
            traceparent_in: None,
            tracestate_in: None,
            target: String::new(),
            caller: ANONYMOUS.to_string(),
            trust: Trust::None,
            on_behalf_of: None,
            hop: None,
            chain: Vec::new(),
            trace: None,
            trace_source: "new",
            decision: Decision::Allow,
            deny: None,
            rule_id: None,
            status: None,
            tracker: None,
            card: None,
            list: None,
            refused_http_method: None,
            ttfe_nanos: None,
            recorded_ctx: false,
            recorded_response_ctx: false,
            recorded_task: false,
            recorded_version: None,
            published_version: None,
            finished: false,
            published: Published::default(),
            request_id: None,
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    // ----- request -----------------------------------------------------------------------

    /// The agent this route leads to: route metadata, else (if allowed) the cluster name.
    /// `None`: not an agent route (the filter then only removes the gateway-owned headers).
    fn route_target(&self, host: &dyn Host) -> Option<String> {
        let r = &self.config().routes;
        let from_metadata = host.property_string(&["xds", "route_metadata", "filter_metadata", &r.metadata_namespace, &r.agent_key]);
        from_metadata.or_else(|| if r.cluster_fallback { host.property_string(&["xds", "cluster_name"]) } else { None })
    }

    fn route_metadata(&self, host: &dyn Host, key: &str) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        let ns = &self.config().routes.metadata_namespace;
        host.property_string(&["xds", "route_metadata", "filter_metadata", ns, key])
    }

    fn jwt_claim(&self, host: &dyn Host, claim: &str) -> Option<String> {
        tollgate_core::identity::jwt_claim(host, self.config().identity.jwt.as_ref()?, claim)
    }

    /// Reads the live entry under `key` (`None`: absent or unreadable) through `read`.
    fn lookup<T>(&self, host: &dyn Host, key: &str, read: impl FnOnce(Entry<'_>) -> T) -> Option<T> {
        let raw = self.shared.table.get(host, key)?;
        serde_json::from_slice(&raw).ok().map(read)
    }

    fn store(&self, host: &dyn Host, key: &str, entry: &Entry<'_>) {
        self.store_unless(host, key, entry, |_| false);
    }

    /// Stores `entry` unless the live entry under `key` makes `keep` true (judged and
    /// written in one compare-and-swap once the slot exists, see
    /// [`SharedTable::put_unless`]; an entry that does not parse is replaced).
    fn store_unless(&self, host: &dyn Host, key: &str, entry: &Entry<'_>, keep: impl Fn(Entry<'_>) -> bool) -> Put {
        let put = match serde_json::to_vec(entry) {
            Ok(bytes) => self.shared.table.put_unless(host, key, &bytes, |raw| serde_json::from_slice(raw).is_ok_and(&keep)),
            Err(_) => Put::Failed,
        };
        if put == Put::Failed {
            host.log(LogLevel::Debug, &format!("tollgate-a2a: conversation table did not store {key}"));
        }
        put
    }

    /// Takes part in the trace: the inbound traceparent if valid, else the conversation's
    /// recorded trace (contextId, taskId, referenceTaskIds), else a new trace.
    fn participate(&mut self, host: &dyn Host) {
        if self.trace.is_some() {
            return;
        }
        let inbound = self.traceparent_in.as_deref();
        let state = self.tracestate_in.as_deref();
        // A valid inbound traceparent is the usual case: tried first, so it is parsed once (a
        // step that had to start a new trace says it was not valid).
        let first = inbound.map(|tp| trace::participate(host, Some(tp), state, None));
        if first.as_ref().is_some_and(|step| !step.started) {
            self.trace_source = "inbound";
            self.trace = first;
            return;
        }
        let ids = &self.ids;
        let keys = ids
            .context_id
            .iter()
            .map(|c| ctx_key(c))
            .chain(ids.task_id.iter().map(|t| task_key(&self.target, t)))
            .chain(ids.reference_task_ids.iter().map(|r| task_ref_key(r)));
        let fallback = keys.into_iter().find_map(|k| self.lookup(host, &k, |e| TraceParent::parse(&e.tp))).flatten();
        self.trace_source = if fallback.is_some() { "conversation" } else { "new" };
        self.trace = match (first, fallback) {
            // No valid inbound trace and none recorded: the first step already started one.
            (Some(step), None) => Some(step),
            (_, fallback) => Some(trace::participate(host, inbound, state, fallback)),
        };
    }

    /// The caller's agent identity when its principal is a trusted agent.
    fn trusted_agent(&self) -> Option<String> {
        let principal = &self.identity.as_ref()?.principal;
        self.config()
            .delegation
            .trusted_agents
            .iter()
            .find(|a| &a.principal == principal)
            .map(|a| a.agent.clone().unwrap_or_else(|| a.principal.clone()))
    }

    fn decide(&mut self, host: &dyn Host) -> Step {
        self.participate(host);
        if self.identity_failed {
            return self.deny(host, Deny::Unauthenticated);
        }
        // Delegation context: believed only from trusted agents or with a valid signature.
        let agent = self.trusted_agent();
        let signature_ok = agent.is_none()
            && !self.presented.is_empty()
            && self.shared.signing_key.as_ref().is_some_and(|key| {
                chain::verify(key, &self.presented, host.now_nanos() / 1_000_000_000)
            });
        let inbound = if self.binding == Some(Binding::Card) {
            Inbound::untrusted()
        } else {
            chain::accept(&self.presented, agent.as_deref(), signature_ok)
        };
        self.trust = inbound.trust;
        self.caller = inbound
            .caller_agent
            .clone()
            .or_else(|| self.identity.as_ref().map(|i| i.principal.clone()))
            .unwrap_or_else(|| ANONYMOUS.to_string());
        self.on_behalf_of = inbound
            .on_behalf_of
            .clone()
            .or_else(|| self.config().on_behalf_of.jwt_claim.clone().and_then(|c| self.jwt_claim(host, &c)))
            .or_else(|| if inbound.caller_agent.is_none() { self.identity.as_ref().map(|i| i.principal.clone()) } else { None });

        if self.binding == Some(Binding::Card) {
            let verdict = authz::evaluate(
                &self.config().authz,
                &Subject { caller: &self.caller, on_behalf_of: self.on_behalf_of.as_deref(), target: &self.target, method: "AgentCard" },
            );
            self.rule_id = verdict.rule_id;
            if verdict.effect == Effect::Deny {
                return self.deny(host, Deny::Forbidden);
            }
            self.prepare_card(host);
            self.set_upstream_headers(host, false);
            self.phase = Phase::Forwarded;
            return Step::Continue;
        }

        // A call continuing a task the target owns is not a loop. Keyed by the target: a task
        // id some other agent returned says nothing about this one. Read: (target owns it,
        // originator).
        let task_entry = self.ids.task_id.as_deref().and_then(|t| {
            self.lookup(host, &task_key(&self.target, t), |e| {
                (e.agent.as_deref() == Some(self.target.as_str()), e.orig.map(Cow::into_owned))
            })
        });
        let continues = task_entry.as_ref().is_some_and(|(owns, _)| *owns);
        match chain::decide(&inbound, &self.target, self.config().delegation.max_hops, continues) {
            Ok(out) => {
                self.hop = Some(out.hop);
                self.chain = out.chain;
            }
            Err(refusal) => {
                self.hop = Some(inbound.hop.saturating_add(1));
                self.chain = inbound.chain.clone();
                self.chain.push(self.target.clone());
                return self.deny(host, Deny::Refusal(refusal));
            }
        }
        // A JSON-RPC method A2A does not define (an extension's, or junk): checked like any
        // call (identity, chain, rules by its name) and recorded, never passed silently.
        let method_name = match (self.method, self.raw_method.as_deref()) {
            (Some(m), _) => m.name(),
            (None, Some(raw)) => raw,
            (None, None) => "unknown",
        };
        let verdict = authz::evaluate(
            &self.config().authz,
            &Subject { caller: &self.caller, on_behalf_of: self.on_behalf_of.as_deref(), target: &self.target, method: method_name },
        );
        self.rule_id = verdict.rule_id;
        match verdict.effect {
            Effect::Allow => {}
            Effect::Deny => return self.deny(host, Deny::Forbidden),
            Effect::AllowOriginator => {
                let acting = self.on_behalf_of.as_deref().unwrap_or(&self.caller);
                match authz::originator_check(method_name, acting) {
                    // A task the gateway has no record of (created by calling the agent
                    // directly or through another Envoy, or its entry expired) is nobody's
                    // here: answered as an unknown task, never forwarded.
                    OriginatorCheck::Task if task_entry.is_none() && self.ids.task_id.is_some() => {
                        return self.deny(host, Deny::TaskNotFound);
                    }
                    OriginatorCheck::Task => {
                        let originator = task_entry.as_ref().and_then(|(_, o)| o.as_deref());
                        if !authz::originator_allows(acting, originator) {
                            return self.deny(host, Deny::NotOriginator);
                        }
                    }
                    OriginatorCheck::Refuse => return self.deny(host, Deny::NotOriginator),
                    OriginatorCheck::FilterList => {
                        self.list = Some(ListState { owner: acting.to_string(), ..ListState::default() });
                    }
                }
            }
        }
        if self.card.is_some() {
            self.prepare_card(host);
        }
        self.set_upstream_headers(host, true);
        // A client-chosen contextId is known now: later turns and downstream hops find it.
        if let (Some(ctx), Some(step)) = (&self.ids.context_id, &self.trace) {
            self.store(host, &ctx_key(ctx), &Entry::trace(&step.traceparent));
            self.recorded_ctx = true;
        }
        self.set_filter_state(host);
        self.phase = Phase::Forwarded;
        Step::Continue
    }

    /// Refuses a request on an agent route that is not a classifiable A2A call (or whose
    /// path or body is ambiguous). An unknown credential is reported as such first.
    fn refuse_unclassified(&mut self, host: &dyn Host, binding: Binding, why: Deny) -> Step {
        self.binding = Some(binding);
        self.participate(host);
        if self.identity_failed {
            return self.deny(host, Deny::Unauthenticated);
        }
        self.deny(host, why)
    }

    fn prepare_card(&mut self, host: &dyn Host) {
        let configured = self.config().cards.public_base_url.clone();
        let trust_xfp = self.config().cards.trust_forwarded_proto;
        let public_prefix_meta = self.route_metadata(host, &self.config().routes.public_prefix_key.clone());
        let upstream_prefix_meta = self.route_metadata(host, &self.config().routes.upstream_prefix_key.clone());
        let xfp = if trust_xfp { host.request_header("x-forwarded-proto") } else { None };
        let base = card::public_base(
            configured.as_deref(),
            xfp.as_deref(),
            host.request_header(":scheme").as_deref(),
            host.request_header(":authority").as_deref(),
        );
        if let Some(card_state) = self.card.as_mut() {
            card_state.public_base = base;
            if let Some(p) = public_prefix_meta {
                card_state.public_prefix = p;
            }
            card_state.public_prefix = card::normalize_prefix(&card_state.public_prefix);
            card_state.upstream_prefix = card::normalize_prefix(upstream_prefix_meta.as_deref().unwrap_or("/"));
        }
    }

    fn set_upstream_headers(&self, host: &dyn Host, a2a_call: bool) {
        if let Some(step) = &self.trace {
            host.try_set_header(HeaderMap::Request, "traceparent", Some(&step.traceparent));
            host.try_set_header(HeaderMap::Request, "tracestate", step.tracestate.as_deref());
        }
        if !a2a_call {
            return;
        }
        let hop = self.hop.unwrap_or(1);
        let chain_value = chain::encode_chain(&self.chain);
        host.try_set_header(HeaderMap::Request, chain::HOP, Some(&hop.to_string()));
        host.try_set_header(HeaderMap::Request, chain::CHAIN, Some(&chain_value));
        host.try_set_header(HeaderMap::Request, chain::CALLER, header_safe(Some(&self.caller)));
        host.try_set_header(HeaderMap::Request, chain::ON_BEHALF_OF, header_safe(self.on_behalf_of.as_deref()));
        if let Some(key) = &self.shared.signing_key {
            let expiry = chain::context_expiry(host.now_nanos(), self.config().delegation.context_ttl_secs);
            let sig = chain::sign(key, hop, &chain_value, self.on_behalf_of.as_deref(), expiry);
            host.try_set_header(HeaderMap::Request, chain::SIG, Some(&sig));
        }
        host.try_set_header(HeaderMap::Request, chain::CONTEXT_ID, header_safe(self.ids.context_id.as_deref()));
        host.try_set_header(HeaderMap::Request, chain::TASK_ID, header_safe(self.ids.task_id.as_deref()));
        host.try_set_header(HeaderMap::Request, chain::MESSAGE_ID, header_safe(self.ids.message_id.as_deref()));
    }

    fn set_filter_state(&mut self, host: &dyn Host) {
        // The request's values are final once published (decided, or refused); after that
        // only what the response reveals changes (the tracker's version).
        let version = self.tracker.as_ref().map_or(0, |t| t.version);
        if self.published_version == Some(version) {
            return;
        }
        self.published_version = Some(version);
        let tracked = self.tracker.as_ref().map(|t| &t.ids);
        let hop = self.hop.map(|h| h.to_string());
        let values = [
            ("tollgate.a2a.method", self.method.map(Method::name)),
            ("tollgate.a2a.target", Some(self.target.as_str())),
            ("tollgate.a2a.hop", hop.as_deref()),
            ("tollgate.a2a.trace_id", self.trace.as_ref().map(|t| t.trace_id.as_str())),
            ("tollgate.a2a.message_id", self.ids.message_id.as_deref()),
            ("tollgate.a2a.context_id", self.ids.context_id.as_deref().or(tracked.and_then(|t| t.context_id.as_deref()))),
            ("tollgate.a2a.task_id", self.ids.task_id.as_deref().or(tracked.and_then(|t| t.task_id.as_deref()))),
            ("tollgate.a2a.task_state", tracked.and_then(|t| t.state.as_deref())),
        ];
        for (key, value) in values {
            self.published.set(host, key, value);
        }
    }

    fn deny(&mut self, host: &dyn Host, why: Deny) -> Step {
        self.phase = Phase::Denied;
        let (status, body) = self.refusal(why);
        let allow: &[(&str, &str)] = if why == Deny::HttpMethod { &[("allow", "GET, POST, DELETE")] } else { &[] };
        if let Err(e) = reply::send_json(host, status, allow, &body) {
            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot send local reply: {e}"));
        }
        Step::Pause
    }

    /// Records the refusal `why` and returns its HTTP status and body, in the shape of the
    /// call's binding and dialect.
    fn refusal(&mut self, why: Deny) -> (u32, Vec<u8>) {
        self.decision = if why.is_error() { Decision::Error } else { Decision::Deny };
        self.deny = Some(why);
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("target", self.target.clone());
        if let Some(hop) = self.hop {
            metadata.insert("hop", hop.to_string());
        }
        if !self.chain.is_empty() {
            metadata.insert("chain", self.chain.join(","));
        }
        if let Some(m) = self.method {
            metadata.insert("method", m.name().to_string());
        }
        let info = if why == Deny::TaskNotFound {
            // A2A's own answer, as the agent gives it: nothing says the gateway answered.
            ErrorInfo { type_url: ERROR_INFO_TYPE, reason: "TASK_NOT_FOUND", domain: A2A_DOMAIN, metadata: Default::default() }
        } else {
            ErrorInfo { type_url: ERROR_INFO_TYPE, reason: why.reason(), domain: ERROR_DOMAIN, metadata }
        };
        let (status, body) = match self.binding {
            Some(Binding::JsonRpc) => {
                let body = match self.dialect {
                    Dialect::V10 => reply::rpc_error_body(self.rpc_id.as_deref(), why.rpc_code(), why.message(), Some([info])),
                    // The 0.3 TaskNotFoundError carries `"data": null`.
                    Dialect::V03 if why == Deny::TaskNotFound => {
                        reply::rpc_error_body(self.rpc_id.as_deref(), why.rpc_code(), why.message(), Some(serde_json::Value::Null))
                    }
                    Dialect::V03 => reply::rpc_error_body(self.rpc_id.as_deref(), why.rpc_code(), why.message(), Some(info)),
                };
                (why.rpc_http_status(), body)
            }
            _ => {
                let (status, grpc) = why.rest_status();
                let body = RestError { error: RestErrorBody { code: status, status: grpc, message: why.message(), details: [info] } };
                (status, serde_json::to_vec(&body).unwrap_or_default())
            }
        };
        self.status = Some(status);
        (status, body)
    }

    // ----- response ----------------------------------------------------------------------

    fn card_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        let max = self.shared.config.cards.max_bytes;
        let signed = self.shared.config.cards.signed;
        let Some(card_state) = self.card.as_mut() else { return Step::Continue };
        if body_size > max {
            card_state.buffering = false;
            card_state.result = Some("too_large");
            return Step::Continue;
        }
        if !end_of_stream {
            return Step::Pause;
        }
        card_state.buffering = false;
        let body = host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default();
        let Some(base) = card_state.public_base.as_deref() else { return Step::Continue };
        let mapping = Mapping { public_base: base, public_prefix: &card_state.public_prefix, upstream_prefix: &card_state.upstream_prefix };
        match card::rewrite_body(&body, &mapping, signed, card_state.in_result) {
            Ok((new_body, outcome)) => {
                card_state.urls_rewritten = outcome.urls_rewritten;
                card_state.result = Some(if outcome.signed && !outcome.signatures_removed {
                    "signed_kept"
                } else if outcome.signatures_removed {
                    "signatures_removed"
                } else if new_body.is_some() {
                    "rewritten"
                } else {
                    "unchanged"
                });
                if let Some(new_body) = new_body {
                    match host.set_body(BodyBuffer::Response, 0, body_size, &new_body) {
                        Ok(()) => host.try_set_header(HeaderMap::Response, "content-length", Some(&new_body.len().to_string())),
                        Err(e) => {
                            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace card body: {e}"));
                            card_state.result = Some("error");
                        }
                    }
                }
            }
            Err(e) => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: card not rewritten (not JSON: {e})"));
                card_state.result = Some("not_json");
            }
        }
        Step::Continue
    }

    /// Holds a `ListTasks` answer until complete, then removes the tasks the acting identity
    /// did not originate. What cannot be filtered is replaced by an error (fail closed).
    fn list_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        let max = self.shared.config.limits.max_list_response_bytes;
        let Some(list) = self.list.as_mut() else { return Step::Continue };
        if list.replaced {
            // The error went out in place of the answer: the rest of the answer never does.
            if body_size > 0 {
                if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, b"") {
                    host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot drop the rest of a task list: {e}"));
                }
            }
            return Step::Continue;
        }
        let mut why = list.unfilterable;
        if why.is_none() && body_size > max {
            why = Some("too large");
        }
        if why.is_none() && !end_of_stream {
            return Step::Pause;
        }
        let body = if why.is_none() { host.body(BodyBuffer::Response, 0, body_size).ok().flatten().unwrap_or_default() } else { Vec::new() };
        if why.is_none() {
            let rest = self.binding == Some(Binding::Rest);
            let owner = list.owner.clone();
            let target = self.target.clone();
            let owns = |id: &str| {
                self.lookup(host, &task_key(&target, id), |e| authz::originator_allows(&owner, e.orig.as_deref())).unwrap_or(false)
            };
            match listing::filter_task_list(&body, rest, owns) {
                Ok(filtered) => {
                    let final_body = match filtered.body {
                        Some(new_body) => match host.set_body(BodyBuffer::Response, 0, body_size, &new_body) {
                            Ok(()) => {
                                host.try_set_header(HeaderMap::Response, "content-length", Some(&new_body.len().to_string()));
                                Some(new_body)
                            }
                            Err(e) => {
                                host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace a task list: {e}"));
                                why = Some("cannot replace the body");
                                None
                            }
                        },
                        None => Some(body),
                    };
                    if let (Some(final_body), Some(list)) = (final_body, self.list.as_mut()) {
                        list.buffering = false;
                        list.withheld = Some(filtered.withheld);
                        // The answer as it goes out: its JSON-RPC error code, if any.
                        let mut tracker = ResponseTracker::json(rest);
                        tracker.feed(&final_body);
                        tracker.finish();
                        self.tracker = Some(tracker);
                        self.ttfe_nanos = Some(host.now_nanos());
                        if end_of_stream {
                            self.response_done(host);
                        }
                        return Step::Continue;
                    }
                }
                Err(e) => {
                    host.log(LogLevel::Info, &format!("tollgate-a2a: task list not filterable: {e}"));
                    why = Some("not readable");
                }
            }
        }
        // Fail closed: the error replaces what arrived; whatever follows is dropped.
        host.log(LogLevel::Info, &format!("tollgate-a2a: task list replaced by an error ({})", why.unwrap_or("unknown")));
        let (status, error) = self.refusal(Deny::Unfilterable);
        if let Err(e) = host.set_body(BodyBuffer::Response, 0, body_size, &error) {
            host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot replace a task list: {e}"));
        }
        host.try_set_header(HeaderMap::Response, ":status", Some(&status.to_string()));
        host.try_set_header(HeaderMap::Response, "content-type", Some("application/json"));
        host.try_set_header(HeaderMap::Response, "content-encoding", None);
        host.try_set_header(HeaderMap::Response, "content-length", Some(&error.len().to_string()));
        if let Some(list) = self.list.as_mut() {
            list.buffering = false;
            list.replaced = true;
        }
        Step::Continue
    }

    fn response_done(&mut self, host: &dyn Host) {
        if let Some(tracker) = self.tracker.as_mut() {
            let progress = tracker.finish();
            if progress.first_event && self.ttfe_nanos.is_none() {
                self.ttfe_nanos = Some(host.now_nanos());
            }
        }
        self.record_response_ids(host);
    }

    /// Records what the response revealed: contextId → trace (later turns join it), and a
    /// new task → trace, owner agent and originator (continuations, originator rules).
    fn record_response_ids(&mut self, host: &dyn Host) {
        let Some(method) = self.method else { return };
        if !method.returns_task() {
            return;
        }
        let Some(step) = self.trace.as_ref() else { return };
        let Some(tracker) = self.tracker.as_ref() else { return };
        // This runs for every chunk that revealed ids, at the end of the body and at log
        // time: only a change since the last run has anything to record.
        if self.recorded_version == Some(tracker.version) {
            return;
        }
        self.recorded_version = Some(tracker.version);
        let tp = step.traceparent.as_str();
        // The response's contextId (set once per response): recorded once, unless the
        // request already recorded that same one.
        if let Some(ctx) = tracker.ids.context_id.as_deref() {
            if !self.recorded_response_ctx {
                self.recorded_response_ctx = true;
                if !self.recorded_ctx || self.ids.context_id.as_deref() != Some(ctx) {
                    self.store(host, &ctx_key(ctx), &Entry::trace(tp));
                    self.recorded_ctx = true;
                }
            }
        }
        if let Some(task) = tracker.ids.task_id.as_deref() {
            // Only a message that started a new task makes its sender the originator.
            let created = matches!(method, Method::SendMessage | Method::SendStreamingMessage) && self.ids.task_id.is_none();
            if created && !self.recorded_task {
                self.recorded_task = true;
                let orig = self.on_behalf_of.as_deref().unwrap_or(&self.caller);
                let key = task_key(&self.target, task);
                // A live entry with another originator is never replaced: an agent returning
                // an id it already gave someone else must not hand that task to this caller.
                let entry = Entry { tp: Cow::Borrowed(tp), agent: Some(Cow::Borrowed(&self.target)), orig: Some(Cow::Borrowed(orig)) };
                if self.store_unless(host, &key, &entry, |existing| existing.orig.as_deref() != Some(orig)) == Put::Kept {
                    host.log(LogLevel::Info, &format!("tollgate-a2a: task id {task} at {} already recorded for another originator; kept", self.target));
                }
                // The first trace recorded for a referenced task stays.
                self.store_unless(host, &task_ref_key(task), &Entry::trace(tp), |_| true);
            }
        }
        self.set_filter_state(host);
    }

    // ----- end of stream -------------------------------------------------------------------

}

impl HttpExchange for Exchange {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        self.metrics.inc(host, "tollgate.a2a.requests", &[]);
        self.start_nanos = host.now_nanos();
        let head = RequestHead::read(host);
        // Envoy's request id (`request.id`) is the x-request-id header it set or kept.
        self.request_id = head.request_id;
        // The caller's copy of the gateway-owned context is read, then removed from every
        // request whatever it turns out to be: only the gateway's own values reach an agent.
        self.presented = head.presented;
        for name in &head.gateway_owned {
            host.try_set_header(HeaderMap::Request, name, None);
        }
        let Some(target) = self.route_target(host) else {
            self.phase = Phase::Passthrough;
            return Step::Continue;
        };
        self.target = target;
        let method = head.method.unwrap_or_default();
        let path = head.path.unwrap_or_default();
        let content_type = head.content_type;
        self.dialect = Dialect::from_header(head.a2a_version.as_deref());
        self.traceparent_in = head.traceparent;
        self.tracestate_in = head.tracestate;
        match identity::resolve(host, &self.shared.config.identity) {
            Ok(id) => self.identity = id,
            Err(IdentityError::UnknownApiKey) => self.identity_failed = true,
        }
        if !self.config().forward_credentials {
            identity::strip_credentials(host, &self.shared.credential_headers);
        }
        // A2A uses GET, POST and DELETE only: anything else (PUT, PATCH...) is refused, never
        // passed unclassified (the agent's server might still run the body it carries).
        if !classify::http_method_allowed(&method, !end_of_stream) {
            host.log(LogLevel::Info, &format!("tollgate-a2a: refused HTTP method {method:?} on an agent route"));
            let binding = if tollgate_core::text::media_type_is(content_type.as_deref(), "application/json") {
                Binding::JsonRpc
            } else {
                Binding::Rest
            };
            self.refused_http_method = Some(method);
            return self.refuse_unclassified(host, binding, Deny::HttpMethod);
        }
        let post = method.eq_ignore_ascii_case("POST");
        self.head = match classify::classify_head(&method, &path, content_type.as_deref()) {
            Ok(head) => head,
            Err(e) => {
                host.log(LogLevel::Info, &format!("tollgate-a2a: refused path {path:?}: {e:?}"));
                return self.refuse_unclassified(host, Binding::Rest, Deny::BadPath);
            }
        };
        match self.head.clone() {
            Head::Card { prefix, .. } => {
                self.binding = Some(Binding::Card);
                self.card = Some(CardState { public_prefix: prefix, ..CardState::default() });
                self.decide(host)
            }
            Head::Rest { method, task_id, base, .. } => {
                self.binding = Some(Binding::Rest);
                self.method = Some(method);
                self.ids.task_id = task_id;
                if method == Method::GetExtendedAgentCard {
                    self.card = Some(CardState { public_prefix: base, ..CardState::default() });
                }
                if end_of_stream {
                    self.decide(host)
                } else {
                    self.phase = Phase::AwaitBody;
                    Step::Pause
                }
            }
            // A POST to an agent that is not A2A is refused, never passed unchecked: the SDK
            // runs a JSON-RPC body whatever its content type says.
            // An empty body is not JSON: a Parse error, as the agent answers.
            Head::JsonPost if end_of_stream => self.refuse_unclassified(host, Binding::JsonRpc, Deny::Parse),
            Head::JsonPost => {
                self.phase = Phase::AwaitBody;
                Step::Pause
            }
            Head::Other if post => self.refuse_unclassified(host, Binding::JsonRpc, Deny::MediaType),
            Head::Other => {
                // Neither A2A nor a POST (another GET, OPTIONS...): passed on, without the
                // caller's credentials and gateway-owned headers, unrecorded.
                self.phase = Phase::Passthrough;
                Step::Continue
            }
        }
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.phase != Phase::AwaitBody {
            return Step::Continue;
        }
        if body_size > self.config().limits.max_request_body_bytes {
            if self.binding.is_none() {
                self.binding = Some(Binding::JsonRpc);
            }
            self.participate(host);
            return self.deny(host, Deny::TooLarge);
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let body = match host.body(BodyBuffer::Request, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                host.log(LogLevel::Warn, &format!("tollgate-a2a: cannot read request body: {e}"));
                Vec::new()
            }
        };
        // Duplicate keys: the agent's parser may read another method or id than ours
        // (JSON-RPC bodies are checked while they are classified).
        if !body.is_empty() && matches!(self.head, Head::Rest { .. }) {
            if let Err(e) = tollgate_core::jsonrpc::check_no_duplicate_keys(&body) {
                host.log(LogLevel::Info, &format!("tollgate-a2a: refused ambiguous request: {e}"));
                let binding = *self.binding.get_or_insert(Binding::JsonRpc);
                return self.refuse_unclassified(host, binding, Deny::Invalid);
            }
        }
        match self.head {
            Head::Rest { .. } => {
                if let Some(method) = self.method {
                    if let Ok(ids) = session::request_ids(&body, method, self.dialect, self.config().log_message_parts) {
                        let path_task = self.ids.task_id.take();
                        self.ids = ids;
                        self.ids.task_id = path_task.or(self.ids.task_id.take());
                    }
                }
                self.decide(host)
            }
            Head::JsonPost => match classify::classify_rpc(&body) {
                Ok(call) => {
                    self.binding = Some(Binding::JsonRpc);
                    self.method = call.method;
                    self.raw_method = Some(call.raw_method.to_string());
                    self.rpc_id = call.id.map(|r| r.to_owned());
                    if let Some(method) = call.method {
                        if method == Method::GetExtendedAgentCard {
                            let path = host.request_header(":path").unwrap_or_else(|| "/".into());
                            let prefix = classify::decode_path(&path).map(|p| classify::encode_path(&p)).unwrap_or_else(|_| "/".into());
                            self.card = Some(CardState { public_prefix: prefix, in_result: true, ..CardState::default() });
                        }
                        if let Some(params) = call.params {
                            match session::request_ids(params.get().as_bytes(), method, self.dialect, self.config().log_message_parts) {
                                Ok(ids) => self.ids = ids,
                                Err(e) => host.log(LogLevel::Debug, &format!("tollgate-a2a: params not read: {e}")),
                            }
                        }
                    }
                    self.decide(host)
                }
                Err(class) => {
                    let why = match &class {
                        BodyClass::Batch => Deny::Batch,
                        BodyClass::Parse(msg) => {
                            host.log(LogLevel::Info, &format!("tollgate-a2a: refused unparseable JSON-RPC: {msg}"));
                            Deny::Parse
                        }
                        BodyClass::Invalid { why, .. } => {
                            host.log(LogLevel::Info, &format!("tollgate-a2a: refused invalid JSON-RPC: {why}"));
                            Deny::Invalid
                        }
                        BodyClass::Ambiguous { why, .. } => {
                            host.log(LogLevel::Info, &format!("tollgate-a2a: refused ambiguous request: {why}"));
                            Deny::Invalid
                        }
                    };
                    // The error answers the request's id when it could be read (JSON-RPC).
                    self.rpc_id = class.into_id();
                    self.refuse_unclassified(host, Binding::JsonRpc, why)
                }
            },
            _ => Step::Continue,
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Step {
        if self.phase != Phase::Forwarded {
            return Step::Continue;
        }
        self.status = host.response_header(":status").and_then(|s| s.parse().ok());
        let content_type = host.response_header("content-type").unwrap_or_default().to_ascii_lowercase();
        let encoded = host.response_header("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let is_json = content_type.contains("json");
        if let Some(card_state) = self.card.as_mut() {
            let rewrite = self.shared.config.cards.rewrite;
            if !rewrite || self.status != Some(200) || end_of_stream {
                card_state.result = Some("unchanged");
            } else if !is_json {
                card_state.result = Some("not_json");
            } else if encoded {
                card_state.result = Some("encoded");
            } else if card_state.public_base.is_none() {
                card_state.result = Some("no_public_base");
            } else if host
                .response_header("content-length")
                .and_then(|l| l.trim().parse::<usize>().ok())
                .is_some_and(|l| l > self.shared.config.cards.max_bytes)
            {
                card_state.result = Some("too_large");
            } else {
                card_state.buffering = true;
                return Step::Pause;
            }
            if self.binding == Some(Binding::Card) {
                return Step::Continue;
            }
        }
        if let Some(list) = self.list.as_mut() {
            // Only a successful answer with a body lists tasks; errors pass.
            if self.status.is_some_and(|s| (200..300).contains(&s)) && !end_of_stream {
                let max = self.shared.config.limits.max_list_response_bytes;
                let too_large = host
                    .response_header("content-length")
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .is_some_and(|l| l > max);
                list.unfilterable = if !is_json {
                    Some("not JSON")
                } else if encoded {
                    Some("content-encoding")
                } else if too_large {
                    Some("too large")
                } else {
                    None
                };
                // Held until complete (or, unfilterable, until its first bytes are replaced).
                list.buffering = true;
                return Step::Pause;
            }
        }
        if self.binding != Some(Binding::Card) && self.method.is_some() {
            let rest = self.binding == Some(Binding::Rest);
            if content_type.starts_with("text/event-stream") {
                self.tracker = Some(ResponseTracker::sse(rest, self.shared.config.limits.max_sse_event_bytes));
            } else if is_json {
                self.tracker = Some(ResponseTracker::json(rest));
            }
        }
        if end_of_stream {
            self.response_done(host);
        }
        Step::Continue
    }

    fn on_response_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Step {
        if self.phase != Phase::Forwarded {
            return Step::Continue;
        }
        if self.card.as_ref().is_some_and(|c| c.buffering) {
            return self.card_body(host, body_size, end_of_stream);
        }
        if self.list.as_ref().is_some_and(|l| l.buffering || l.replaced) {
            return self.list_body(host, body_size, end_of_stream);
        }
        if self.tracker.is_some() {
            // Time to first event: a JSON body's first byte; an SSE stream's first whole event.
            if self.ttfe_nanos.is_none() && body_size > 0 && self.tracker.as_ref().is_some_and(|t| !t.is_stream()) {
                self.ttfe_nanos = Some(host.now_nanos());
            }
            let chunk = if body_size > 0 { host.body(BodyBuffer::Response, 0, body_size).ok().flatten() } else { None };
            let mut progress = session::Progress::default();
            if let (Some(tracker), Some(chunk)) = (self.tracker.as_mut(), chunk.as_deref()) {
                progress = tracker.feed(chunk);
            }
            if progress.first_event && self.ttfe_nanos.is_none() {
                self.ttfe_nanos = Some(host.now_nanos());
            }
            if progress.new_ids {
                self.record_response_ids(host);
            }
        }
        if end_of_stream {
            self.response_done(host);
        }
        Step::Continue
    }

    /// Called once when the stream ends (access-log time): audit record and metrics.
    fn on_log(&mut self, host: &dyn Host) {
        if self.finished || matches!(self.phase, Phase::Passthrough | Phase::AwaitBody) {
            return;
        }
        self.finished = true;
        if self.phase == Phase::Forwarded {
            self.response_done(host);
        }
        let now = host.now_nanos();
        let duration_ms = now.saturating_sub(self.start_nanos) / 1_000_000;
        let ttfe_ms = self.ttfe_nanos.map(|t| t.saturating_sub(self.start_nanos) / 1_000_000);
        let untracked = session::ResponseIds::default();
        let tracked = self.tracker.as_ref().map_or(&untracked, |t| &t.ids);
        let method_name = match (self.binding, self.method) {
            (Some(Binding::Card), _) => "AgentCard",
            (_, Some(m)) => m.name(),
            (_, None) => self.raw_method.as_deref().unwrap_or("unknown"),
        };
        let state = if self.deny.is_some() {
            "denied"
        } else if tracked.error_code.is_some() {
            "error"
        } else {
            tracked.state.as_deref().map(session::state_label).unwrap_or("none")
        };
        // Metric labels stay bounded: unknown JSON-RPC methods are counted as `unknown`.
        let method_label = match (self.binding, self.method) {
            (Some(Binding::Card), _) => "AgentCard",
            (_, Some(m)) => m.name(),
            (_, None) => "unknown",
        };
        let context_id = self.ids.context_id.as_deref().or(tracked.context_id.as_deref());
        let task_id = self.ids.task_id.as_deref().or(tracked.task_id.as_deref());
        let rpc_error_code = self.deny.filter(|_| self.binding == Some(Binding::JsonRpc)).map(Deny::rpc_code).or(tracked.error_code);
        let card = self.card.as_ref().filter(|_| self.deny.is_none()).map(|c| CardAudit {
            result: c.result.unwrap_or("unchanged"),
            urls_rewritten: c.urls_rewritten,
            public_base: c.public_base.as_deref(),
        });
        let parts = self.ids.parts.as_deref();
        let detail = Detail {
            binding: self.binding.map(Binding::as_str).unwrap_or("jsonrpc"),
            dialect: self.dialect.as_str(),
            method: method_name,
            jsonrpc_method: self.raw_method.as_deref(),
            target: &self.target,
            caller: &self.caller,
            caller_trust: self.trust.as_str(),
            on_behalf_of: self.on_behalf_of.as_deref(),
            hop: self.hop,
            chain: &self.chain,
            message_id: self.ids.message_id.as_deref(),
            context_id,
            task_id,
            reference_task_ids: &self.ids.reference_task_ids,
            task_state: tracked.state.as_deref(),
            rpc_error_code,
            reason: self.deny.map(Deny::reason),
            streaming: self.tracker.as_ref().is_some_and(ResponseTracker::is_stream),
            events: self.tracker.as_ref().map(|t| t.events),
            ttfe_ms,
            trace_source: self.trace_source,
            card,
            message_parts: parts,
            http_method: self.refused_http_method.as_deref(),
            tasks_withheld: self.list.as_ref().and_then(|l| l.withheld),
        };
        let timestamp_ms = self.start_nanos / 1_000_000;
        let mut record = Record::new(Layer::A2a, timestamp_ms, detail);
        record.request_id = self.request_id.as_deref();
        if let Some(step) = &self.trace {
            record.trace_id = Some(&step.trace_id);
            record.span_id = Some(&step.span_id);
            record.parent_span_id = step.parent_span_id.as_deref();
        }
        record.identity = self.identity.as_ref();
        record.decision = self.decision;
        record.rule_id = self.rule_id.as_deref();
        record.status = self.status;
        record.duration_ms = Some(duration_ms);
        record.error = self.deny.map(Deny::message);
        audit::emit(host, &self.shared.config.audit, &record);
        self.set_filter_state(host);

        let target = self.target.as_str();
        self.metrics.inc(host, "tollgate.a2a.calls", &[("target", target), ("method", method_label), ("state", state)]);
        self.metrics.record(host, "tollgate.a2a.duration_ms", &[("target", target), ("method", method_label)], duration_ms);
        if let Some(t) = ttfe_ms {
            self.metrics.record(host, "tollgate.a2a.ttfe_ms", &[("target", target), ("method", method_label)], t);
        }
        if let Some(why) = self.deny {
            self.metrics.inc(host, "tollgate.a2a.denied", &[("target", target), ("reason", why.reason())]);
        }
        if let Some(c) = self.card.as_ref().and_then(|c| c.result) {
            self.metrics.inc(host, "tollgate.a2a.cards", &[("target", target), ("result", c)]);
        }
    }
}

#[derive(Serialize)]
struct CardAudit<'a> {
    result: &'a str,
    urls_rewritten: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_base: Option<&'a str>,
}

#[derive(Serialize)]
struct Detail<'a> {
    binding: &'a str,
    dialect: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonrpc_method: Option<&'a str>,
    target: &'a str,
    caller: &'a str,
    caller_trust: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_behalf_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hop: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    chain: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    reference_task_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    task_state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc_error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    streaming: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttfe_ms: Option<u64>,
    trace_source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<CardAudit<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_parts: Option<&'a str>,
    /// The HTTP method of a request refused for it (PUT, PATCH...).
    #[serde(skip_serializing_if = "Option::is_none")]
    http_method: Option<&'a str>,
    /// `ListTasks` filtered to the caller's tasks: how many of the agent's were withheld.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_withheld: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tollgate_core::hash::sha256_hex;
    use tollgate_core::host::MemoryHost;
    use tollgate_core::testing::{callback, drive_ending, Ending};

    const KEY: &str = "0123456789abcdef0123456789abcdef-test";

    fn shared(config: Value) -> Rc<Shared> {
        let config: Config = tollgate_core::config::load(config.to_string().as_bytes()).unwrap();
        Rc::new(build(config).unwrap())
    }

    /// One Envoy's worth of state: the shared-data table survives across requests.
    struct Gateway {
        shared: Rc<Shared>,
        metrics: Rc<Metrics>,
        table: std::cell::RefCell<std::collections::BTreeMap<String, (Vec<u8>, u32)>>,
        clock: std::cell::Cell<u64>,
        /// Requests record no host calls (profiling warm-up).
        quiet: std::cell::Cell<bool>,
    }

    struct Call {
        host: MemoryHost,
        ex: Exchange,
        step: Step,
    }

    impl Call {
        fn upstream(&self, name: &str) -> Option<String> {
            self.host.request_header(name)
        }
        fn reply(&self) -> Option<(u32, Value)> {
            self.host.local_reply.borrow().clone().map(|(s, _, b)| (s, serde_json::from_slice(&b).unwrap()))
        }
    }

    impl Gateway {
        fn new(config: Value) -> Self {
            Gateway {
                shared: shared(config),
                metrics: Rc::new(Metrics::new()),
                table: Default::default(),
                clock: std::cell::Cell::new(1_700_000_000_000_000_000),
                quiet: std::cell::Cell::new(false),
            }
        }

        /// Runs the request side: headers (and body, when given) through the exchange.
        fn request(&self, agent: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Call {
            let mut all = vec![(":method", method), (":path", path), (":authority", "gw:10000"), (":scheme", "http")];
            if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                all.push(("content-type", "application/json"));
            }
            all.extend_from_slice(headers);
            let host = MemoryHost::with_request_headers(&all);
            host.quiet.set(self.quiet.get());
            *host.shared.borrow_mut() = self.table.borrow().clone();
            self.clock.set(self.clock.get() + 1_000_000_000);
            *host.clock_nanos.borrow_mut() = self.clock.get();
            host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], agent.as_bytes());
            let mut ex = Exchange::new(self.shared.clone(), self.metrics.clone());
            let mut step = callback(&host, |h| ex.on_request_headers(h, body.is_none()));
            if let (Some(body), Step::Pause) = (body, step) {
                if host.local_reply.borrow().is_none() {
                    *host.request_body.borrow_mut() = body.to_vec();
                    step = callback(&host, |h| ex.on_request_body(h, body.len(), true));
                }
            }
            *host.headers_sent.borrow_mut() = true;
            Call { host, ex, step }
        }

        /// Runs the response side with the body in `chunks`, then the log callback.
        fn respond(&self, call: &mut Call, content_type: &str, chunks: &[&[u8]]) -> Vec<Step> {
            *call.host.response_headers.borrow_mut() =
                vec![(":status".into(), "200".into()), ("content-type".into(), content_type.into())];
            let mut steps = vec![callback(&call.host, |h| call.ex.on_response_headers(h, chunks.is_empty()))];
            for (i, chunk) in chunks.iter().enumerate() {
                *call.host.response_body.borrow_mut() = chunk.to_vec();
                steps.push(callback(&call.host, |h| call.ex.on_response_body(h, chunk.len(), i + 1 == chunks.len())));
                *self.table.borrow_mut() = call.host.shared.borrow().clone();
            }
            self.finish(call);
            steps
        }

        fn finish(&self, call: &mut Call) {
            callback(&call.host, |h| call.ex.on_log(h));
            *self.table.borrow_mut() = call.host.shared.borrow().clone();
        }
    }

    fn audit(call: &Call) -> Value {
        serde_json::from_slice(&call.host.prop(&["tollgate.audit"]).expect("audit record")).unwrap()
    }

    fn send_body(method: &str, message: Value) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": {"message": message}}).to_string().into_bytes()
    }

    fn v10_message(extra: Value) -> Value {
        let mut m = json!({"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "secret words"}]});
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        m
    }

    const V10: (&str, &str) = ("a2a-version", "1.0");

    fn task_json(ctx: &str, task: &str, state: &str) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "id": "r1", "result": {"task": {"id": task, "contextId": ctx, "status": {"state": state}}}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn send_message_is_tagged_and_the_next_turn_joins_the_trace() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut first = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
        assert_eq!(first.step, Step::Continue);
        let tp = TraceParent::parse(&first.upstream("traceparent").unwrap()).unwrap();
        assert_eq!(first.upstream("a2a-version").as_deref(), Some("1.0"), "never altered");
        assert_eq!(first.upstream(chain::HOP).as_deref(), Some("1"));
        assert_eq!(first.upstream(chain::CHAIN).as_deref(), Some("agent-a"));
        assert_eq!(first.upstream(chain::MESSAGE_ID).as_deref(), Some("m1"));
        let response = task_json("ctx-1", "task-1", "TASK_STATE_COMPLETED");
        let (a, b) = response.split_at(40);
        let steps = gw.respond(&mut first, "application/json", &[a, b]);
        assert!(steps.iter().all(|s| *s == Step::Continue), "JSON responses are never held");
        let rec = audit(&first);
        assert_eq!(rec["layer"], "a2a");
        assert_eq!(rec["method"], "SendMessage");
        assert_eq!(rec["dialect"], "1.0");
        assert_eq!(rec["context_id"], "ctx-1");
        assert_eq!(rec["task_id"], "task-1");
        assert_eq!(rec["task_state"], "completed");
        assert_eq!(rec["message_id"], "m1");
        assert_eq!(rec["trace_id"], tp.trace_id.as_str());
        assert_eq!(rec["span_id"], tp.parent_id.as_str(), "the gateway's span is the upstream's parent");
        assert!(rec.get("parent_span_id").is_none());
        assert_eq!(rec["trace_source"], "new");
        assert!(rec.get("message_parts").is_none(), "message content is not logged by default");
        assert!(!rec.to_string().contains("secret words"));
        assert_eq!(first.host.prop(&["tollgate.a2a.context_id"]).as_deref(), Some(&b"ctx-1"[..]));
        assert_eq!(gw.metrics_value(&first.host, "tollgate.a2a.calls.target.agent-a.method.SendMessage.state.completed"), Some(1));

        // Turn 2: same contextId, no traceparent.
        let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-1"})));
        let mut second = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
        let tp2 = TraceParent::parse(&second.upstream("traceparent").unwrap()).unwrap();
        assert_eq!(tp2.trace_id, tp.trace_id);
        assert_eq!(second.upstream(chain::CONTEXT_ID).as_deref(), Some("ctx-1"));
        gw.respond(&mut second, "application/json", &[&task_json("ctx-1", "task-2", "TASK_STATE_COMPLETED")]);
        let rec2 = audit(&second);
        assert_eq!(rec2["trace_id"], tp.trace_id.as_str());
        assert_eq!(rec2["parent_span_id"], tp.parent_id.as_str());
        assert_eq!(rec2["trace_source"], "conversation");
    }

    impl Gateway {
        fn metrics_value(&self, host: &MemoryHost, name: &str) -> Option<i64> {
            host.metric(name)
        }
    }

    #[test]
    fn valid_inbound_traceparent_wins_and_invalid_is_replaced() {
        let gw = Gateway::new(json!({}));
        let inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let body = send_body("message/send", json!({"kind": "message", "messageId": "m", "role": "user", "parts": []}));
        let mut call = gw.request("a", "POST", "/", &[("traceparent", inbound), ("tracestate", "v=1")], Some(&body));
        let out = call.upstream("traceparent").unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"));
        assert_eq!(call.upstream("tracestate").as_deref(), Some("v=1"));
        gw.finish(&mut call);
        let rec = audit(&call);
        assert_eq!(rec["parent_span_id"], "00f067aa0ba902b7");
        assert_eq!(rec["dialect"], "0.3");
        assert_eq!(rec["jsonrpc_method"], "message/send");
        let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        let call = gw.request("a", "POST", "/", &[("traceparent", bad), ("tracestate", "v=1")], Some(&body));
        assert!(!call.upstream("traceparent").unwrap().contains("4bf92f35"));
        assert_eq!(call.upstream("tracestate"), None, "a new trace drops tracestate");
        // An invalid traceparent on a known conversation joins the conversation's trace.
        let mut first = gw.request("a", "POST", "/", &[V10], Some(&send_body("SendMessage", v10_message(json!({"contextId": "c-t"})))));
        gw.finish(&mut first);
        let trace_id = audit(&first)["trace_id"].clone();
        let again = send_body("SendMessage", v10_message(json!({"contextId": "c-t"})));
        let mut next = gw.request("a", "POST", "/", &[V10, ("traceparent", bad), ("tracestate", "v=1")], Some(&again));
        assert_eq!(next.upstream("tracestate"), None);
        gw.finish(&mut next);
        let rec = audit(&next);
        assert_eq!((rec["trace_id"].clone(), rec["trace_source"].as_str()), (trace_id, Some("conversation")));
    }

    /// Copies what the gateway sent upstream to an agent onto that agent's next call, as the
    /// demo agent does (traceparent and x-tollgate-*).
    fn forwarded(call: &Call) -> Vec<(String, String)> {
        call.host
            .request_headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == "traceparent" || k.starts_with("x-tollgate-"))
            .cloned()
            .collect()
    }

    fn with(headers: &[(String, String)], extra: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut out = headers.to_vec();
        out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        out
    }

    fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn signed_chain_counts_hops_and_refuses_loops_and_depth() {
        let gw = Gateway::new(json!({"delegation": {"signing_key": KEY, "max_hops": 3}}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let hop1 = gw.request("agent-a", "POST", "/agents/a/", &[V10], Some(&body));
        assert!(hop1.upstream(chain::SIG).unwrap().starts_with("v1."));
        let h = with(&forwarded(&hop1), &[V10]);
        let mut hop2 = gw.request("agent-b", "POST", "/agents/b/", &refs(&h), Some(&body));
        assert_eq!(hop2.step, Step::Continue);
        assert_eq!(hop2.upstream(chain::HOP).as_deref(), Some("2"));
        assert_eq!(hop2.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b"));
        assert_eq!(hop2.upstream(chain::CALLER).as_deref(), Some("agent-a"));
        gw.finish(&mut hop2);
        let rec2 = audit(&hop2);
        assert_eq!(rec2["caller"], "agent-a");
        assert_eq!(rec2["caller_trust"], "signature");
        assert_eq!(rec2["hop"], 2);
        assert_eq!(rec2["chain"], json!(["agent-a", "agent-b"]));

        // B calls A: a loop.
        let h = with(&forwarded(&hop2), &[V10]);
        let mut back = gw.request("agent-a", "POST", "/agents/a/", &refs(&h), Some(&body));
        assert_eq!(back.step, Step::Pause);
        let (status, reply) = back.reply().unwrap();
        assert_eq!(status, 200);
        assert_eq!(reply["id"], "r1");
        assert_eq!(reply["error"]["code"], codes::DELEGATION_LOOP);
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_DELEGATION_LOOP");
        assert_eq!(reply["error"]["data"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
        gw.finish(&mut back);
        let rec = audit(&back);
        assert_eq!(rec["decision"], "deny");
        assert_eq!(rec["reason"], "A2A_DELEGATION_LOOP");
        assert_eq!(rec["rpc_error_code"], codes::DELEGATION_LOOP);
        assert_eq!(rec["hop"], 3);

        // B calls C (hop 3, allowed), C calls D: hop 4 > 3.
        let hop3 = gw.request("agent-c", "POST", "/agents/c/", &refs(&h), Some(&body));
        assert_eq!(hop3.upstream(chain::HOP).as_deref(), Some("3"));
        let h = with(&forwarded(&hop3), &[]);
        let hop4 = gw.request("agent-d", "POST", "/agents/d/", &refs(&h), Some(&body));
        let (_, reply) = hop4.reply().unwrap();
        assert_eq!(reply["error"]["code"], codes::MAX_DEPTH);
        assert!(reply["error"]["data"].is_object(), "0.3 (no A2A-Version): one ErrorInfo object");
        assert_eq!(reply["error"]["data"]["reason"], "A2A_MAX_DEPTH");
    }

    #[test]
    fn untrusted_context_is_replaced() {
        let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let forged = [V10, (chain::HOP, "7"), (chain::CHAIN, "x,y"), (chain::ON_BEHALF_OF, "ceo"), (chain::SIG, "v1.99999999999.00"), ("x-tollgate-a2a-other", "z")];
        let mut call = gw.request("agent-a", "POST", "/", &forged, Some(&body));
        assert_eq!(call.upstream(chain::HOP).as_deref(), Some("1"));
        assert_eq!(call.upstream(chain::CHAIN).as_deref(), Some("agent-a"));
        assert_eq!(call.upstream(chain::ON_BEHALF_OF), None);
        assert_eq!(call.upstream("x-tollgate-a2a-other"), None);
        gw.finish(&mut call);
        assert_eq!(audit(&call)["caller_trust"], "none");
    }

    #[test]
    fn trusted_agent_by_api_key_and_on_behalf_of() {
        let gw = Gateway::new(json!({
            "identity": {"api_keys": {"keys": [
                {"sha256": sha256_hex(b"key-a"), "name": "a", "principal": "svc-a"},
                {"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}},
            "delegation": {"trusted_agents": [{"principal": "svc-a", "agent": "agent-a"}]}
        }));
        let body = send_body("SendMessage", v10_message(json!({})));
        let user = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-u"), (chain::HOP, "5")], Some(&body));
        assert_eq!(user.upstream(chain::HOP).as_deref(), Some("1"), "a user is not trusted to set the hop");
        assert_eq!(user.upstream(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
        let mut h = forwarded(&user);
        h.push(("x-api-key".into(), "key-a".into()));
        let mut agent = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
        assert_eq!(agent.upstream(chain::HOP).as_deref(), Some("2"));
        assert_eq!(agent.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b"));
        assert_eq!(agent.upstream(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
        gw.finish(&mut agent);
        let rec = audit(&agent);
        assert_eq!(rec["caller"], "agent-a");
        assert_eq!(rec["caller_trust"], "identity");
        assert_eq!(rec["on_behalf_of"], "alice");
        assert_eq!(rec["identity"]["principal"], "svc-a");

        let bad = gw.request("agent-b", "POST", "/", &[V10, ("x-api-key", "nope")], Some(&body));
        let (status, reply) = bad.reply().unwrap();
        assert_eq!(status, 401);
        assert_eq!(reply["error"]["code"], codes::UNAUTHENTICATED);
    }

    #[test]
    fn only_the_originator_may_cancel() {
        let gw = Gateway::new(json!({
            "identity": {"api_keys": {"keys": [
                {"sha256": sha256_hex(b"key-alice"), "name": "a", "principal": "alice"},
                {"sha256": sha256_hex(b"key-bob"), "name": "b", "principal": "bob"}]}},
            "authz": {"rules": [{"id": "cancel-own", "methods": ["CancelTask"], "effect": "allow_originator"}]}
        }));
        let body = send_body("SendStreamingMessage", v10_message(json!({})));
        let mut create = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-alice")], Some(&body));
        let first_event = b"data: {\"result\": {\"task\": {\"id\": \"t-1\", \"contextId\": \"c-1\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n";
        gw.respond(&mut create, "text/event-stream", &[first_event]);
        let cancel = json!({"jsonrpc": "2.0", "id": 9, "method": "CancelTask", "params": {"id": "t-1"}}).to_string();
        let mut bob = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-bob")], Some(cancel.as_bytes()));
        let (status, reply) = bob.reply().unwrap();
        assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(codes::FORBIDDEN)));
        assert_eq!(reply["id"], 9);
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
        gw.finish(&mut bob);
        assert_eq!(audit(&bob)["rule_id"], "cancel-own");
        let alice = gw.request("agent-a", "POST", "/", &[V10, ("x-api-key", "key-alice")], Some(cancel.as_bytes()));
        assert_eq!(alice.step, Step::Continue);
        assert!(alice.reply().is_none());
        // Unknown task: refused (fail closed).
        let other = json!({"jsonrpc": "2.0", "id": 9, "method": "tasks/cancel", "params": {"id": "t-x"}}).to_string();
        assert!(gw.request("agent-a", "POST", "/", &[("x-api-key", "key-alice")], Some(other.as_bytes())).reply().is_some());
    }

    #[test]
    fn streams_pass_chunk_by_chunk_and_ids_are_recorded_at_the_first_event() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendStreamingMessage", v10_message(json!({})));
        let mut call = gw.request("agent-a", "POST", "/", &[V10, ("accept", "text/event-stream")], Some(&body));
        *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
        assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Continue);
        let events = [
            "data: {\"result\": {\"task\": {\"id\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_SUBMITTED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
            "data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_WORKING\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
            "data: {\"result\": {\"statusUpdate\": {\"taskId\": \"t\", \"contextId\": \"c\", \"status\": {\"state\": \"TASK_STATE_INPUT_REQUIRED\"}}}, \"id\": \"r1\", \"jsonrpc\": \"2.0\"}\n\n",
        ];
        *call.host.response_body.borrow_mut() = events[0].as_bytes().to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, events[0].len(), false), Step::Continue);
        assert!(call.ex.lookup(&call.host, "ctx:c", |_| ()).is_some(), "a downstream hop can join while the stream is open");
        let (agent, orig) = call.ex.lookup(&call.host, &task_key("agent-a", "t"), |e| (e.agent.map(Cow::into_owned), e.orig.map(Cow::into_owned))).unwrap();
        assert_eq!(agent.as_deref(), Some("agent-a"));
        assert_eq!(orig.as_deref(), Some(ANONYMOUS));
        for e in &events[1..] {
            *call.host.response_body.borrow_mut() = e.as_bytes().to_vec();
            assert_eq!(call.ex.on_response_body(&call.host, e.len(), false), Step::Continue);
        }
        call.ex.on_response_body(&call.host, 0, true);
        call.ex.on_log(&call.host);
        let rec = audit(&call);
        assert_eq!(rec["task_state"], "input_required");
        assert_eq!(rec["events"], 3);
        assert_eq!(rec["streaming"], true);
        assert!(rec["ttfe_ms"].is_u64());
    }

    #[test]
    fn card_is_rewritten_with_its_length() {
        let gw = Gateway::new(json!({}));
        let mut call = gw.request("agent-echo", "GET", "/agents/echo/.well-known/agent-card.json", &[], None);
        assert_eq!(call.step, Step::Continue);
        let card = json!({"name": "echo", "url": "http://127.0.0.1:9101/",
            "supportedInterfaces": [{"url": "http://127.0.0.1:9101/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]})
        .to_string();
        *call.host.response_headers.borrow_mut() = vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), card.len().to_string()),
        ];
        assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Pause, "headers held until the card is rewritten");
        let (a, _) = card.as_bytes().split_at(10);
        *call.host.response_body.borrow_mut() = a.to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, a.len(), false), Step::Pause);
        *call.host.response_body.borrow_mut() = card.as_bytes().to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, card.len(), true), Step::Continue);
        let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
        assert_eq!(out["url"], "http://gw:10000/agents/echo/");
        assert_eq!(out["supportedInterfaces"][0]["url"], "http://gw:10000/agents/echo/");
        let len = call.host.response_header("content-length").unwrap();
        assert_eq!(len, call.host.response_body.borrow().len().to_string());
        call.ex.on_log(&call.host);
        let rec = audit(&call);
        assert_eq!(rec["method"], "AgentCard");
        assert_eq!(rec["card"]["result"], "rewritten");
        assert_eq!(rec["card"]["urls_rewritten"], 2);
    }

    #[test]
    fn signed_card_kept_or_stripped() {
        let card = json!({"url": "http://a:1/", "signatures": [{"protected": "p", "signature": "s"}]}).to_string();
        for (policy, result, changed) in [("keep", "signed_kept", false), ("strip", "signatures_removed", true)] {
            let gw = Gateway::new(json!({"cards": {"signed": policy, "public_base_url": "https://gw.example"}}));
            let mut call = gw.request("x", "GET", "/.well-known/agent-card.json", &[], None);
            *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
            call.ex.on_response_headers(&call.host, false);
            *call.host.response_body.borrow_mut() = card.as_bytes().to_vec();
            call.ex.on_response_body(&call.host, card.len(), true);
            let out = String::from_utf8(call.host.response_body.borrow().clone()).unwrap();
            assert_eq!(out != card, changed, "{policy}");
            if changed {
                assert!(out.contains("https://gw.example/") && !out.contains("signatures"));
            }
            call.ex.on_log(&call.host);
            assert_eq!(audit(&call)["card"]["result"], result);
        }
    }

    #[test]
    fn bodies_ending_with_trailers_are_decided_and_rewritten() {
        // A request refused by policy whose body ends with trailers: refused at the trailers.
        let gw = Gateway::new(json!({"authz": {"default": "deny"}}));
        let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/agents/a/"), ("content-type", "application/json"), V10]);
        host.set_prop(&["xds", "cluster_name"], b"a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        let body = send_body("SendMessage", v10_message(json!({})));
        let driven = drive_ending(&mut ex, &host, Some(&body), &[], &[], Ending::Trailers);
        assert_eq!(driven.request_trailers, Some(Step::Pause));
        let (_, _, reply) = host.local_reply.borrow().clone().expect("refused");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert!(reply.to_string().contains("A2A_FORBIDDEN"), "{reply}");
        assert_eq!(serde_json::from_slice::<Value>(&host.prop(&["tollgate.audit"]).unwrap()).unwrap()["decision"], "deny");
        // An allowed one gets its hop headers at the trailers.
        let gw = Gateway::new(json!({}));
        let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/agents/a/"), ("content-type", "application/json"), V10]);
        host.set_prop(&["xds", "cluster_name"], b"a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        let driven = drive_ending(&mut ex, &host, Some(&body), &[], &[], Ending::Trailers);
        assert_eq!(driven.request_trailers, Some(Step::Continue));
        assert_eq!(host.request_header(chain::HOP).as_deref(), Some("1"));
        // A card whose body ends with trailers is rewritten, its signatures stripped.
        let card = json!({"url": "http://a:1/", "signatures": [{"protected": "p", "signature": "s"}]}).to_string();
        let gw = Gateway::new(json!({"cards": {"signed": "strip", "public_base_url": "https://gw.example"}}));
        let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/.well-known/agent-card.json")]);
        host.set_prop(&["xds", "cluster_name"], b"a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        let json_ct = [(":status", "200"), ("content-type", "application/json")];
        let driven = drive_ending(&mut ex, &host, None, &json_ct, &[card.as_bytes()], Ending::Trailers);
        assert_eq!(driven.response_trailers, Some(Step::Continue));
        let out = String::from_utf8(host.response_body.borrow().clone()).unwrap();
        assert!(out.contains("https://gw.example/") && !out.contains("signatures"), "{out}");
    }

    #[test]
    fn forged_gateway_headers_never_pass_and_other_json_rpc_is_checked() {
        let gw = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}}}));
        let forged = [(chain::HOP, "9"), (chain::CHAIN, "x"), ("x-tollgate-a2a-anything", "y"), ("traceparent", "junk"), ("x-api-key", "key-u")];
        // Not A2A and not a POST: passed on, unrecorded, but without the forged context.
        let mut get = gw.request("a", "GET", "/agents/a/_seen", &forged, None);
        assert_eq!(get.step, Step::Continue);
        assert!(get.reply().is_none());
        assert_eq!((get.upstream(chain::HOP), get.upstream(chain::CHAIN), get.upstream("x-tollgate-a2a-anything")), (None, None, None));
        assert_eq!(get.upstream("traceparent").as_deref(), Some("junk"));
        gw.finish(&mut get);
        assert!(get.host.prop(&["tollgate.audit"]).is_none());
        // A JSON-RPC method A2A does not define: checked, re-issued headers, recorded.
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
        let mut call = gw.request("a", "POST", "/agents/a/", &forged, Some(body));
        assert_eq!(call.step, Step::Continue);
        assert_eq!(call.upstream(chain::HOP).as_deref(), Some("1"));
        assert_eq!(call.upstream(chain::CHAIN).as_deref(), Some("a"));
        assert_eq!(call.upstream("x-tollgate-a2a-anything"), None);
        assert_ne!(call.upstream("traceparent").as_deref(), Some("junk"));
        gw.finish(&mut call);
        let rec = audit(&call);
        assert_eq!((rec["method"].as_str(), rec["jsonrpc_method"].as_str()), (Some("tools/call"), Some("tools/call")));
        assert_eq!(rec["identity"]["principal"], "alice");
        assert_eq!(gw.metrics_value(&call.host, "tollgate.a2a.calls.target.a.method.unknown.state.none"), Some(1));
        let stolen = gw.request("a", "POST", "/agents/a/", &[("x-api-key", "stolen")], Some(body));
        assert_eq!(stolen.reply().unwrap().0, 401);
        // Rules see the method as sent; default deny still refuses it.
        let gw = Gateway::new(json!({"authz": {"default": "deny"}}));
        let (_, reply) = gw.request("a", "POST", "/", &[], Some(body)).reply().unwrap();
        assert_eq!(reply["error"]["data"]["reason"], "A2A_FORBIDDEN");
    }

    #[test]
    fn posts_that_are_not_a2a_are_refused() {
        let gw = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"key-u"), "name": "u", "principal": "alice"}]}}}));
        let cancel = br#"{"jsonrpc":"2.0","id":7,"method":"CancelTask","params":{"id":"t"}}"#;
        for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let mut headers = vec![V10, (chain::HOP, "5")];
            if let Some(ct) = ct {
                headers.push(("content-type", ct));
            }
            let host = MemoryHost::with_request_headers(&[&[(":method", "POST"), (":path", "/agents/a/")][..], &headers].concat());
            host.set_prop(&["xds", "cluster_name"], b"a");
            let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
            assert_eq!(ex.on_request_headers(&host, false), Step::Pause, "{ct:?}");
            let (status, _, body) = host.local_reply.borrow().clone().expect("refused before the body");
            let reply: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status, 415);
            assert_eq!(reply["error"]["code"], -32600);
            assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
            assert!(reply["id"].is_null());
            // The body never reaches the agent (the filter keeps refusing).
            *host.request_body.borrow_mut() = cancel.to_vec();
            ex.on_request_body(&host, cancel.len(), true);
            ex.on_log(&host);
            let rec: Value = serde_json::from_slice(&host.prop(&["tollgate.audit"]).unwrap()).unwrap();
            assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("error"), Some("A2A_INVALID_REQUEST")));
        }
        // An unknown credential is still reported as such.
        let call = gw.request("a", "POST", "/", &[("content-type", "text/plain"), ("x-api-key", "stolen")], Some(cancel));
        assert_eq!(call.reply().unwrap().0, 401);
        // Unparseable JSON, an empty body: -32700 (Parse error, as the agent answers), id null;
        // a JSON-RPC response or an invalid request: -32600, with its id when it can be read.
        // Without rules too, and in either dialect.
        for (body, code, id) in [
            (&b"not json at all"[..], -32700, Value::Null),
            (b"\xff\xfe{\x00}\x00", -32700, Value::Null),
            (b" ", -32700, Value::Null),
            (br#"{"jsonrpc":"2.0","id":"r-1","method":"GetTask""#, -32700, Value::Null),
            (br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, -32600, json!(1)),
            (br#"{"jsonrpc":"1.0","id":"r-2","method":"SendMessage","params":{}}"#, -32600, json!("r-2")),
            (br#"{"jsonrpc":"2.0","id":3,"params":{}}"#, -32600, json!(3)),
            (br#"{"jsonrpc":"2.0","id":true,"method":"GetTask"}"#, -32600, Value::Null),
            (b"42", -32600, Value::Null),
        ] {
            for headers in [&[V10][..], &[]] {
                let mut call = gw.request("a", "POST", "/", headers, Some(body));
                let (status, reply) = call.reply().expect("refused");
                assert_eq!((status, reply["error"]["code"].as_i64(), &reply["id"]), (200, Some(code), &id), "{body:?}");
                let info = if headers.is_empty() { &reply["error"]["data"] } else { &reply["error"]["data"][0] };
                assert_eq!(info["reason"], "A2A_INVALID_REQUEST");
                gw.finish(&mut call);
                assert_eq!((audit(&call)["decision"].as_str(), audit(&call)["rpc_error_code"].as_i64()), (Some("error"), Some(code)));
            }
        }
        let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/"), ("content-type", "application/json")]);
        host.set_prop(&["xds", "cluster_name"], b"a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, true), Step::Pause);
        let (status, _, body) = host.local_reply.borrow().clone().expect("an empty body is refused at its headers");
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(-32700)));
        // Duplicate keys are refused without rules too.
        let dup = br#"{"jsonrpc":"2.0","id":1,"method":"GetTask","method":"CancelTask","params":{"id":"t"}}"#;
        assert_eq!(gw.request("a", "POST", "/", &[], Some(dup)).reply().unwrap().1["error"]["code"], -32600);
        // Anywhere in the body: two context ids would put the message in either conversation.
        let nested = br#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"ROLE_USER","messageId":"m","contextId":"a","contextId":"b","parts":[]}}}"#;
        let (_, reply) = gw.request("a", "POST", "/", &[V10], Some(nested)).reply().expect("refused");
        assert_eq!(reply["error"]["code"], -32600);
    }

    #[test]
    fn batches_are_refused() {
        let gw = Gateway::new(json!({}));
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"CancelTask","params":{"id":"t"}},{"jsonrpc":"2.0","id":2,"method":"SendMessage","params":{}}]"#;
        let mut call = gw.request("a", "POST", "/", &[V10, (chain::HOP, "9")], Some(batch));
        assert_eq!(call.step, Step::Pause);
        let (status, reply) = call.reply().unwrap();
        assert_eq!((status, reply["error"]["code"].as_i64()), (200, Some(-32600)));
        assert_eq!(reply["error"]["message"], "JSON-RPC batches are not part of A2A");
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
        gw.finish(&mut call);
        assert_eq!(audit(&call)["reason"], "A2A_INVALID_REQUEST");
    }

    /// alice creates task `id` at `agent` (JSON response).
    fn create_task(gw: &Gateway, agent: &str, key: &str, task: &str) {
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut call = gw.request(agent, "POST", "/", &[V10, ("x-api-key", key)], Some(&body));
        assert_eq!(call.step, Step::Continue);
        gw.respond(&mut call, "application/json", &[&task_json("c", task, "TASK_STATE_WORKING")]);
    }

    fn originator_gateway() -> Gateway {
        Gateway::new(json!({
            "identity": {"api_keys": {"keys": [
                {"sha256": sha256_hex(b"key-alice"), "name": "a", "principal": "alice"},
                {"sha256": sha256_hex(b"key-mallory"), "name": "m", "principal": "mallory"}]}},
            "authz": {"rules": [{"id": "cancel-own", "methods": ["CancelTask"], "effect": "allow_originator"}]}
        }))
    }

    #[test]
    fn percent_encoded_rest_paths_are_classified_decoded() {
        let gw = originator_gateway();
        create_task(&gw, "agent-a", "key-alice", "t-1");
        for path in ["/agents/a/tasks/t-1%3Acancel", "/agents/a/tasks/t-1%3acancel", "/agents/a/%74asks/t%2D1:cancel"] {
            let call = gw.request("agent-a", "POST", path, &[V10, ("x-api-key", "key-mallory")], None);
            let (status, body) = call.reply().unwrap_or_else(|| panic!("{path} passed"));
            assert_eq!(status, 403, "{path}");
            assert_eq!(body["error"]["details"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
        }
        let alice = gw.request("agent-a", "POST", "/agents/a/tasks/t-1%3Acancel", &[V10, ("x-api-key", "key-alice")], None);
        assert_eq!(alice.step, Step::Continue);
        assert_eq!(alice.upstream(chain::TASK_ID).as_deref(), Some("t-1"));
        for path in ["/agents/a/tasks%2Ft-1:cancel", "/agents/a/tasks/t-1%3:cancel", "/agents/a/tasks/t%00:cancel"] {
            let mut call = gw.request("agent-a", "POST", path, &[V10, ("x-api-key", "key-alice"), (chain::HOP, "3")], None);
            let (status, body) = call.reply().unwrap_or_else(|| panic!("{path} passed"));
            assert_eq!(status, 400, "{path}");
            assert_eq!(body["error"]["details"][0]["reason"], "A2A_INVALID_REQUEST");
            gw.finish(&mut call);
            assert_eq!(audit(&call)["binding"], "rest");
        }
        // Not even a GET with an ambiguous path passes.
        assert_eq!(gw.request("agent-a", "GET", "/agents/a/x%2Fy", &[], None).reply().unwrap().0, 400);
    }

    #[test]
    fn task_ids_are_per_agent_and_a_live_entry_is_never_taken_over() {
        let gw = originator_gateway();
        create_task(&gw, "agent-a", "key-alice", "t-1");
        // Another agent returns the same id to mallory: her task there, not alice's.
        create_task(&gw, "agent-b", "key-mallory", "t-1");
        let cancel = json!({"jsonrpc": "2.0", "id": 9, "method": "CancelTask", "params": {"id": "t-1"}}).to_string();
        let cancel_as = |agent: &str, key: &str| gw.request(agent, "POST", "/", &[V10, ("x-api-key", key)], Some(cancel.as_bytes()));
        assert_eq!(cancel_as("agent-a", "key-mallory").reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
        assert_eq!(cancel_as("agent-b", "key-mallory").step, Step::Continue);
        assert_eq!(cancel_as("agent-a", "key-alice").step, Step::Continue);
        assert!(cancel_as("agent-b", "key-alice").reply().is_some());
        // agent-a itself hands mallory alice's id again: the entry is kept.
        create_task(&gw, "agent-a", "key-mallory", "t-1");
        assert!(cancel_as("agent-a", "key-mallory").reply().is_some());
        assert_eq!(cancel_as("agent-a", "key-alice").step, Step::Continue);
    }

    #[test]
    fn a_colliding_task_id_neither_excuses_nor_breaks_a_continuation() {
        let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut hop1 = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
        gw.respond(&mut hop1, "application/json", &[&task_json("c-a", "t-same", "TASK_STATE_INPUT_REQUIRED")]);
        let h = with(&forwarded(&hop1), &[V10]);
        let mut hop2 = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
        // agent-b returns the same task id (later, so it would have overwritten a's entry).
        gw.respond(&mut hop2, "application/json", &[&task_json("c-b", "t-same", "TASK_STATE_WORKING")]);
        let h = with(&forwarded(&hop2), &[V10]);
        let answer = send_body("SendMessage", v10_message(json!({"taskId": "t-same"})));
        assert_eq!(gw.request("agent-a", "POST", "/", &refs(&h), Some(&answer)).step, Step::Continue, "a owns t-same");
        // A third agent never returned t-same: no exemption there.
        let mut hop3 = gw.request("agent-c", "POST", "/", &refs(&h), Some(&body));
        gw.respond(&mut hop3, "application/json", &[&task_json("c-c", "t-other", "TASK_STATE_WORKING")]);
        let h = with(&forwarded(&hop3), &[V10]);
        let back_to_b = gw.request("agent-b", "POST", "/", &refs(&h), Some(&answer));
        assert_eq!(back_to_b.step, Step::Continue, "b owns t-same too (its own entry)");
        let fresh = send_body("SendMessage", v10_message(json!({"taskId": "t-other"})));
        let to_a = gw.request("agent-a", "POST", "/", &refs(&h), Some(&fresh));
        assert_eq!(to_a.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP, "t-other is agent-c's");
    }

    #[test]
    fn credentials_are_not_forwarded_unless_configured() {
        let keys = json!({"api_keys": {"headers": ["x-tollgate-key"], "keys": [
            {"sha256": sha256_hex(b"key-a"), "name": "a", "principal": "svc-a"}]}});
        let creds = [V10, ("x-tollgate-key", "key-a"), ("authorization", "Bearer other"), ("x-api-key", "x"), ("x-goog-api-key", "y")];
        let body = send_body("SendMessage", v10_message(json!({})));
        let gw = Gateway::new(json!({"identity": keys.clone(), "delegation": {"trusted_agents": [{"principal": "svc-a"}]}}));
        let mut call = gw.request("agent-b", "POST", "/", &creds, Some(&body));
        assert_eq!(call.step, Step::Continue);
        for h in ["x-tollgate-key", "authorization", "x-api-key", "x-goog-api-key"] {
            assert_eq!(call.upstream(h), None, "{h}");
        }
        gw.finish(&mut call);
        assert_eq!(audit(&call)["caller_trust"], "identity", "the key was read before it was removed");
        let card = gw.request("agent-b", "GET", "/.well-known/agent-card.json", &creds, None);
        assert_eq!(card.upstream("x-tollgate-key"), None);
        let other = gw.request("agent-b", "GET", "/health", &creds, None);
        assert_eq!(other.upstream("authorization"), None);
        let gw = Gateway::new(json!({"identity": keys, "forward_credentials": true}));
        let call = gw.request("agent-b", "POST", "/", &creds, Some(&body));
        assert_eq!(call.upstream("x-tollgate-key").as_deref(), Some("key-a"));
        assert_eq!(call.upstream("authorization").as_deref(), Some("Bearer other"));
    }

    #[test]
    fn ids_with_control_characters_never_become_headers() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({"contextId": "c\r\nx-evil: 1", "messageId": "m-ok"})));
        let call = gw.request("a", "POST", "/", &[V10], Some(&body));
        assert_eq!(call.step, Step::Continue);
        assert_eq!(call.upstream(chain::CONTEXT_ID), None);
        assert_eq!(call.upstream(chain::MESSAGE_ID).as_deref(), Some("m-ok"));
    }

    #[test]
    fn strict_mode_refuses_ambiguous_bodies() {
        let gw = Gateway::new(json!({"authz": {"rules": [{"methods": ["CancelTask"], "effect": "deny"}]}}));
        let dup = br#"{"jsonrpc":"2.0","id":1,"method":"GetTask","method":"CancelTask","params":{"id":"t"}}"#;
        let call = gw.request("a", "POST", "/", &[], Some(dup));
        assert_eq!(call.reply().unwrap().1["error"]["code"], -32600);
        let call = gw.request("a", "POST", "/", &[V10], Some(br#"{"jsonrpc":"2.0","id":1,"method":"CancelTask","params":{"id":"t"}}"#));
        let (_, reply) = call.reply().unwrap();
        assert_eq!(reply["error"]["data"][0]["reason"], "A2A_FORBIDDEN");
    }

    #[test]
    fn rest_calls_are_classified_and_refused_with_http_status() {
        let gw = Gateway::new(json!({"authz": {"rules": [{"targets": ["locked"], "effect": "deny"}]}}));
        let mut get = gw.request("agent-a", "GET", "/agents/a/tasks/t-5", &[V10], None);
        assert_eq!(get.step, Step::Continue);
        assert_eq!(get.upstream(chain::TASK_ID).as_deref(), Some("t-5"));
        gw.respond(&mut get, "application/a2a+json", &[br#"{"id":"t-5","contextId":"c-5","status":{"state":"TASK_STATE_WORKING"}}"#]);
        let rec = audit(&get);
        assert_eq!((rec["binding"].as_str(), rec["method"].as_str(), rec["task_state"].as_str()), (Some("rest"), Some("GetTask"), Some("working")));
        assert_eq!(rec["context_id"], "c-5");
        let send = gw.request("locked", "POST", "/message:send", &[V10], Some(br#"{"message":{"messageId":"m"}}"#));
        let (status, body) = send.reply().unwrap();
        assert_eq!(status, 403);
        assert_eq!(body["error"]["details"][0]["reason"], "A2A_FORBIDDEN");
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    }

    #[test]
    fn message_parts_logged_only_when_configured() {
        let gw = Gateway::new(json!({"log_message_parts": true}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut call = gw.request("a", "POST", "/", &[V10], Some(&body));
        gw.finish(&mut call);
        assert!(audit(&call)["message_parts"].as_str().unwrap().contains("secret words"));
    }

    #[test]
    fn oversized_request_is_refused_before_the_whole_body_arrives() {
        let gw = Gateway::new(json!({"limits": {"max_request_body_bytes": 64}}));
        let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/"), ("content-type", "application/json"), V10]);
        host.set_prop(&["xds", "cluster_name"], b"agent-a");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
        assert_eq!(ex.on_request_body(&host, 32, false), Step::Pause);
        assert!(host.local_reply.borrow().is_none());
        assert_eq!(ex.on_request_body(&host, 65, false), Step::Pause);
        assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(413));
        ex.on_log(&host);
        let rec: Value = serde_json::from_slice(&host.prop(&["tollgate.audit"]).unwrap()).unwrap();
        assert_eq!(rec["reason"], "A2A_REQUEST_TOO_LARGE");
        assert_eq!(rec["decision"], "error");
    }

    #[test]
    fn continuing_a_task_the_target_owns_is_not_a_loop() {
        let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut hop1 = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
        gw.respond(&mut hop1, "application/json", &[&task_json("c-a", "task-of-a", "TASK_STATE_INPUT_REQUIRED")]);
        let h = with(&forwarded(&hop1), &[V10]);
        let hop2 = gw.request("agent-b", "POST", "/", &refs(&h), Some(&body));
        let h = with(&forwarded(&hop2), &[V10]);
        // B answers A's input-required task: allowed. A fresh message to A: a loop.
        let answer = send_body("SendMessage", v10_message(json!({"taskId": "task-of-a", "contextId": "c-a"})));
        let back = gw.request("agent-a", "POST", "/", &refs(&h), Some(&answer));
        assert_eq!(back.step, Step::Continue);
        assert_eq!(back.upstream(chain::HOP).as_deref(), Some("3"));
        assert_eq!(back.upstream(chain::CHAIN).as_deref(), Some("agent-a,agent-b,agent-a"));
        let fresh = gw.request("agent-a", "POST", "/", &refs(&h), Some(&body));
        assert_eq!(fresh.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP);
        // A task id the table says belongs to another agent does not excuse the loop.
        let foreign = send_body("SendMessage", v10_message(json!({"taskId": "task-of-a"})));
        let at_b = gw.request("agent-b", "POST", "/", &refs(&h), Some(&foreign));
        assert_eq!(at_b.reply().unwrap().1["error"]["code"], codes::DELEGATION_LOOP);
    }

    #[test]
    fn on_behalf_of_from_a_jwt_claim() {
        let gw = Gateway::new(json!({
            "identity": {"jwt": {"payload_key": "payload"}},
            "on_behalf_of": {"jwt_claim": "act.sub"}
        }));
        let body = send_body("SendMessage", v10_message(json!({})));
        let all = [(":method", "POST"), (":path", "/"), ("content-type", "application/json"), V10];
        let host = MemoryHost::with_request_headers(&all);
        host.set_prop(&["xds", "cluster_name"], b"agent-a");
        let base = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"];
        host.set_prop(&[&base[..], &["sub"]].concat(), b"agent-app");
        host.set_prop(&[&base[..], &["act", "sub"]].concat(), b"alice");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
        *host.request_body.borrow_mut() = body.clone();
        assert_eq!(ex.on_request_body(&host, body.len(), true), Step::Continue);
        assert_eq!(host.request_header(chain::ON_BEHALF_OF).as_deref(), Some("alice"));
        assert_eq!(host.request_header(chain::CALLER).as_deref(), Some("agent-app"));
    }

    #[test]
    fn a_referenced_task_joins_its_trace() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut first = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
        gw.respond(&mut first, "application/json", &[&task_json("c-1", "t-1", "TASK_STATE_COMPLETED")]);
        let trace_id = audit(&first)["trace_id"].clone();
        let follow = send_body("SendMessage", v10_message(json!({"referenceTaskIds": ["unknown", "t-1"]})));
        let mut other = gw.request("agent-z", "POST", "/", &[V10], Some(&follow));
        gw.finish(&mut other);
        let rec = audit(&other);
        assert_eq!(rec["trace_id"], trace_id);
        assert_eq!(rec["trace_source"], "conversation");
        assert_eq!(rec["reference_task_ids"], json!(["unknown", "t-1"]));
    }

    #[test]
    fn rest_loop_is_a_409_and_the_cluster_names_an_agent_without_metadata() {
        let gw = Gateway::new(json!({"delegation": {"signing_key": KEY}}));
        let hop1 = gw.request("agent-a", "POST", "/a/message:send", &[V10], Some(br#"{"message":{"messageId":"m"}}"#));
        let h = with(&forwarded(&hop1), &[V10]);
        let back = gw.request("agent-a", "POST", "/a/message:send", &refs(&h), Some(br#"{"message":{"messageId":"m2"}}"#));
        let (status, body) = back.reply().unwrap();
        assert_eq!(status, 409);
        assert_eq!(body["error"]["details"][0]["reason"], "A2A_DELEGATION_LOOP");

        let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/tasks/t1"), V10]);
        host.set_prop(&["xds", "cluster_name"], b"agent_cluster");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, true), Step::Continue);
        assert_eq!(host.request_header(chain::CHAIN).as_deref(), Some("agent_cluster"));
        // A non-string metadata value (YAML `agent: y` is a boolean) is not an identity.
        host.set_prop(&["xds", "route_metadata", "filter_metadata", "tollgate", "agent"], &[1]);
        host.request_headers.borrow_mut().retain(|(k, _)| !k.starts_with("x-tollgate-") && k != "traceparent");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, true), Step::Continue);
        assert_eq!(host.request_header(chain::CHAIN).as_deref(), Some("agent_cluster"));

        // Without metadata and without the cluster fallback the route is not an agent's: the
        // request passes, but never with the caller's gateway-owned headers.
        let gw = Gateway::new(json!({"routes": {"cluster_fallback": false}}));
        let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/x"), ("content-type", "text/plain"), (chain::HOP, "9"), ("x-api-key", "k")]);
        host.set_prop(&["xds", "cluster_name"], b"agent_cluster");
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, false), Step::Continue);
        assert_eq!(host.request_header(chain::HOP), None);
        assert_eq!(host.request_header("x-api-key").as_deref(), Some("k"), "not an agent route: credentials untouched");
        assert!(host.local_reply.borrow().is_none());
    }

    #[test]
    fn what_a_response_reveals_is_recorded_and_published_once() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let mut call = gw.request("agent-a", "POST", "/", &[V10], Some(&body));
        let tp = call.upstream("traceparent").unwrap();
        call.host.calls.borrow_mut().clear();
        // Two chunks: the ids count once the document is complete, at the end of the body;
        // the tracker is consulted again there and at log time.
        let response = task_json("c-new", "t-new", "TASK_STATE_COMPLETED");
        let (a, b) = response.split_at(response.len() - 3);
        gw.respond(&mut call, "application/json", &[a, b]);
        let calls = call.host.calls.borrow().clone();
        let count = |prefix: &str| calls.iter().filter(|c| c.starts_with(prefix)).count();
        // One write each: the new context, the task (owner, originator) and its reference.
        assert_eq!(count("set_shared_data"), 3, "{calls:#?}");
        assert_eq!(count("set_property tollgate.a2a."), 3, "context_id, task_id, task_state: {calls:#?}");
        assert_eq!(call.ex.lookup(&call.host, "ctx:c-new", |e| e.tp.into_owned()).as_deref(), Some(tp.as_str()));
        assert_eq!(call.host.prop(&["tollgate.a2a.context_id"]).as_deref(), Some(&b"c-new"[..]));
        assert_eq!(call.host.prop(&["tollgate.a2a.task_state"]).as_deref(), Some(&b"completed"[..]));
    }

    #[test]
    fn request_headers_are_read_first_value_first_and_empty_as_absent() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({})));
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = [V10, ("traceparent", ""), ("traceparent", valid), ("x-request-id", "r-1"), ("x-request-id", "r-2")];
        let mut call = gw.request("agent-a", "POST", "/", &headers, Some(&body));
        gw.finish(&mut call);
        let rec = audit(&call);
        assert_eq!(rec["trace_source"], "new", "an empty first traceparent is no traceparent");
        assert_eq!(rec["request_id"], "r-1");
    }

    #[test]
    fn table_entries_keep_their_json_and_read_with_or_without_escapes() {
        for agent in ["agent-a", "odd \"agent\" \\ \u{e9}"] {
            let entry = Entry { tp: Cow::Borrowed("00-tp"), agent: Some(Cow::Borrowed(agent)), orig: Some(Cow::Borrowed("alice")) };
            let bytes = serde_json::to_vec(&entry).unwrap();
            let back: Entry<'_> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, entry);
            assert!(matches!(back.orig, Some(Cow::Borrowed(_))), "no escapes: borrowed");
        }
        // The stored form is unchanged (entries written by an earlier build still read).
        let bytes = serde_json::to_vec(&Entry::trace("00-tp")).unwrap();
        assert_eq!(bytes, br#"{"tp":"00-tp"}"#);
        let back: Entry<'_> = serde_json::from_slice(br#"{"tp":"t","agent":"a","orig":"o"}"#).unwrap();
        assert_eq!((back.agent.as_deref(), back.orig.as_deref()), (Some("a"), Some("o")));
        assert_eq!(task_key("agent-a", "t-1"), "task:7:agent-a:t-1");
        assert_eq!(ctx_key("c"), "ctx:c");
        assert_eq!(task_ref_key("t"), "tref:t");
    }

    // ----- originator-only task access, HTTP methods -------------------------------------

    const ALICE: (&str, &str) = ("authorization", "Bearer k-alice");
    const BOB: (&str, &str) = ("authorization", "Bearer k-bob");

    /// Alice and Bob known by API key; reading a task is its originator's alone (the shipped rule).
    fn owners_gateway(extra: Value) -> Gateway {
        let mut config = json!({
            "identity": {"api_keys": {"keys": [
                {"sha256": sha256_hex(b"k-alice"), "name": "alice", "principal": "alice"},
                {"sha256": sha256_hex(b"k-bob"), "name": "bob", "principal": "bob"}]}},
            "authz": {"rules": [{"id": "own-tasks", "effect": "allow_originator",
                "methods": ["GetTask", "ListTasks", "CancelTask", "SubscribeToTask", "*PushNotificationConfig*"]}]}
        });
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Gateway::new(config)
    }

    /// Creates task `task` at `agent` as the caller `who` says (no header: anonymous).
    fn create_task_as(gw: &Gateway, agent: &str, who: &[(&str, &str)], task: &str) {
        let body = send_body("SendMessage", v10_message(json!({})));
        let headers: Vec<(&str, &str)> = [V10].into_iter().chain(who.iter().copied()).collect();
        let mut call = gw.request(agent, "POST", "/", &headers, Some(&body));
        assert_eq!(call.step, Step::Continue);
        gw.respond(&mut call, "application/json", &[&task_json(&format!("ctx-{task}"), task, "TASK_STATE_COMPLETED")]);
    }

    fn rpc_body(method: &str, params: Value) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string().into_bytes()
    }

    /// Sends the whole response at once (a held answer is read as one buffer) and logs.
    fn respond_whole(gw: &Gateway, call: &mut Call, headers: &[(&str, &str)], body: &[u8]) -> (Step, Step) {
        let mut all = vec![(":status".to_string(), "200".to_string())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        *call.host.response_headers.borrow_mut() = all;
        let on_headers = callback(&call.host, |h| call.ex.on_response_headers(h, false));
        *call.host.response_body.borrow_mut() = body.to_vec();
        let on_body = callback(&call.host, |h| call.ex.on_response_body(h, body.len(), true));
        gw.finish(call);
        (on_headers, on_body)
    }

    fn task_list(ids: &[&str]) -> Value {
        let tasks: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "contextId": format!("ctx-{id}"), "status": {"state": "TASK_STATE_COMPLETED"},
                             "history": [{"messageId": "m", "role": "ROLE_USER", "parts": [{"text": format!("text of {id}")}]}]}))
            .collect();
        json!({"tasks": tasks, "nextPageToken": "", "pageSize": 50, "totalSize": ids.len()})
    }

    #[test]
    fn reading_a_task_is_its_originators_alone() {
        let gw = owners_gateway(json!({}));
        create_task_as(&gw, "echo", &[ALICE], "t-alice");
        create_task_as(&gw, "echo", &[], "t-anon");
        let calls: Vec<(&str, Value, bool)> = vec![
            ("GetTask", json!({"id": "t-alice"}), true),
            ("SubscribeToTask", json!({"id": "t-alice"}), true),
            ("CreateTaskPushNotificationConfig", json!({"taskId": "t-alice", "url": "http://hook"}), true),
            ("GetTaskPushNotificationConfig", json!({"taskId": "t-alice", "id": "cfg"}), true),
            ("ListTaskPushNotificationConfigs", json!({"taskId": "t-alice"}), true),
            ("DeleteTaskPushNotificationConfig", json!({"taskId": "t-alice", "id": "cfg"}), true),
            ("tasks/get", json!({"id": "t-alice"}), false),
            ("tasks/resubscribe", json!({"id": "t-alice"}), false),
            ("tasks/pushNotificationConfig/get", json!({"id": "t-alice"}), false),
            ("tasks/pushNotificationConfig/list", json!({"id": "t-alice"}), false),
        ];
        for (method, params, v10) in calls {
            let body = rpc_body(method, params);
            fn with(v10: bool, who: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
                (if v10 { vec![V10] } else { vec![] }).into_iter().chain(who.iter().copied()).collect()
            }
            for who in [&[BOB][..], &[][..]] {
                let mut refused = gw.request("echo", "POST", "/", &with(v10, who), Some(&body));
                let (status, reply) = refused.reply().unwrap_or_else(|| panic!("{method} by {who:?} passed"));
                assert_eq!(status, 200, "{method}");
                let error = &reply["error"];
                assert_eq!(error["code"], codes::FORBIDDEN, "{method}");
                let info = if v10 { &error["data"][0] } else { &error["data"] };
                assert_eq!(info["reason"], "A2A_NOT_TASK_ORIGINATOR", "{method}");
                gw.finish(&mut refused);
                assert_eq!((audit(&refused)["decision"].as_str(), audit(&refused)["rule_id"].as_str()), (Some("deny"), Some("own-tasks")));
            }
            let by_alice = gw.request("echo", "POST", "/", &with(v10, &[ALICE]), Some(&body));
            assert_eq!(by_alice.step, Step::Continue, "{method} by its originator");
            assert!(by_alice.reply().is_none());
        }
        // REST too; and a task created anonymously is nobody's (anonymous is not an identity).
        let by_bob = gw.request("echo", "GET", "/tasks/t-alice", &[V10, BOB], None);
        assert_eq!(by_bob.reply().map(|(s, b)| (s, b["error"]["details"][0]["reason"].clone())), Some((403, json!("A2A_NOT_TASK_ORIGINATOR"))));
        assert_eq!(gw.request("echo", "GET", "/tasks/t-alice:subscribe", &[V10, ALICE], None).step, Step::Continue);
        for who in [&[][..], &[ALICE][..]] {
            let anon_task = gw.request("echo", "GET", "/tasks/t-anon", &[&[V10][..], who].concat(), None);
            assert_eq!(anon_task.reply().map(|r| r.0), Some(403), "{who:?}");
        }
        let cancel = gw.request("echo", "POST", "/", &[V10], Some(&rpc_body("CancelTask", json!({"id": "t-anon"}))));
        assert_eq!(cancel.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR", "not even the anonymous");
    }

    #[test]
    fn a_task_the_gateway_has_no_record_of_is_not_found() {
        let gw = owners_gateway(json!({}));
        create_task_as(&gw, "echo", &[ALICE], "t-alice");
        // Unknown here (never seen, or created at another agent): A2A's TaskNotFoundError in the
        // agent's own shape, for anyone, never forwarded; the record says the gateway answered.
        for who in [&[ALICE][..], &[BOB], &[]] {
            for (method, params) in [
                ("GetTask", json!({"id": "t-unknown"})),
                ("CancelTask", json!({"id": "t-unknown"})),
                ("SubscribeToTask", json!({"id": "t-unknown"})),
                ("GetTaskPushNotificationConfig", json!({"taskId": "t-unknown", "id": "c"})),
            ] {
                let headers: Vec<_> = [V10].into_iter().chain(who.iter().copied()).collect();
                let mut call = gw.request("other", "POST", "/", &headers, Some(&rpc_body(method, params)));
                let (status, reply) = call.reply().unwrap_or_else(|| panic!("{method} forwarded"));
                assert_eq!(status, 200);
                assert_eq!(
                    reply,
                    json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32001, "message": "Task not found", "data": [
                        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "TASK_NOT_FOUND",
                         "domain": "a2a-protocol.org", "metadata": {}}]}}),
                    "{method}"
                );
                gw.finish(&mut call);
                let rec = audit(&call);
                assert_eq!(
                    (rec["decision"].as_str(), rec["reason"].as_str(), rec["rule_id"].as_str(), rec["rpc_error_code"].as_i64()),
                    (Some("deny"), Some("A2A_TASK_NOT_FOUND"), Some("own-tasks"), Some(-32001))
                );
            }
        }
        // 0.3: `"data": null`, as the SDK's 0.3 handler answers.
        let call = gw.request("echo", "POST", "/", &[ALICE], Some(&rpc_body("tasks/cancel", json!({"id": "t-unknown"}))));
        assert_eq!(
            call.reply().unwrap().1,
            json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32001, "message": "Task not found", "data": null}})
        );
        // REST: 404 NOT_FOUND.
        let call = gw.request("echo", "GET", "/tasks/t-unknown", &[V10, BOB], None);
        let (status, body) = call.reply().unwrap();
        assert_eq!(status, 404);
        assert_eq!((body["error"]["status"].as_str(), body["error"]["details"][0]["reason"].as_str()), (Some("NOT_FOUND"), Some("TASK_NOT_FOUND")));
        assert_eq!(body["error"]["details"][0]["domain"], "a2a-protocol.org");
        // A known task stays its originator's: another caller is refused as before, and a call
        // naming no task at all is not "not found".
        let bob = gw.request("echo", "POST", "/", &[V10, BOB], Some(&rpc_body("GetTask", json!({"id": "t-alice"}))));
        assert_eq!(bob.reply().unwrap().1["error"]["code"], codes::FORBIDDEN);
        let alice = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("GetTask", json!({"id": "t-alice"}))));
        assert_eq!(alice.step, Step::Continue);
        let nameless = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("GetTask", json!({}))));
        assert_eq!(nameless.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
        // Without allow_originator the agent answers for itself.
        let open = Gateway::new(json!({}));
        assert_eq!(open.request("echo", "POST", "/", &[V10], Some(&rpc_body("GetTask", json!({"id": "t-unknown"})))).step, Step::Continue);
    }

    #[test]
    fn list_tasks_shows_only_the_callers_own_tasks() {
        let gw = owners_gateway(json!({}));
        create_task_as(&gw, "echo", &[ALICE], "t-alice");
        create_task_as(&gw, "echo", &[BOB], "t-bob");
        create_task_as(&gw, "echo", &[], "t-anon");
        create_task_as(&gw, "other", &[ALICE], "t-other");
        let everything = ["t-alice", "t-bob", "t-anon", "t-other", "t-unknown"];

        // JSON-RPC: the answer is held, then cut down to Alice's tasks at this agent.
        let answer = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&everything)}).to_string();
        let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
        assert_eq!(call.step, Step::Continue);
        let steps = respond_whole(&gw, &mut call, &[("content-type", "application/json"), ("content-length", &answer.len().to_string())], answer.as_bytes());
        assert_eq!(steps, (Step::Pause, Step::Continue));
        let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
        let ids: Vec<&str> = out["result"]["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["t-alice"]);
        assert_eq!(out["result"]["totalSize"], 1);
        assert!(!out.to_string().contains("text of t-bob"));
        assert_eq!(call.host.response_header("content-length"), Some(call.host.response_body.borrow().len().to_string()));
        let rec = audit(&call);
        assert_eq!((rec["decision"].as_str(), rec["method"].as_str(), rec["tasks_withheld"].as_u64()), (Some("allow"), Some("ListTasks"), Some(4)));

        // REST `GET /tasks`: Bob sees Bob's.
        let answer = task_list(&everything).to_string();
        let mut call = gw.request("echo", "GET", "/tasks?pageSize=50", &[V10, BOB], None);
        assert_eq!(call.step, Step::Continue);
        respond_whole(&gw, &mut call, &[("content-type", "application/a2a+json")], answer.as_bytes());
        let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
        assert_eq!(out["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect::<Vec<_>>(), [json!("t-bob")]);

        // Anonymous: refused (an anonymous caller originates nothing it could list).
        let anon = gw.request("echo", "POST", "/", &[V10], Some(&rpc_body("ListTasks", json!({}))));
        assert_eq!(anon.reply().unwrap().1["error"]["data"][0]["reason"], "A2A_NOT_TASK_ORIGINATOR");
        let anon_rest = gw.request("echo", "GET", "/tasks", &[V10], None);
        assert_eq!(anon_rest.reply().map(|r| r.0), Some(403));

        // An error answer passes as it is; without the rule nothing is held or filtered.
        let error = br#"{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"no"}}"#;
        let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
        respond_whole(&gw, &mut call, &[("content-type", "application/json")], error);
        assert_eq!(&call.host.response_body.borrow()[..], &error[..]);
        assert_eq!(audit(&call)["rpc_error_code"], -32601);
        let open = Gateway::new(json!({}));
        let mut call = open.request("echo", "POST", "/", &[V10], Some(&rpc_body("ListTasks", json!({}))));
        let answer = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&everything)}).to_string();
        let steps = respond_whole(&open, &mut call, &[("content-type", "application/json")], answer.as_bytes());
        assert_eq!(steps, (Step::Continue, Step::Continue));
        assert_eq!(&call.host.response_body.borrow()[..], answer.as_bytes());
    }

    #[test]
    fn a_task_list_that_cannot_be_filtered_is_replaced_by_an_error() {
        let gw = owners_gateway(json!({"limits": {"max_list_response_bytes": 200}}));
        create_task_as(&gw, "echo", &[ALICE], "t-alice");
        let big = json!({"jsonrpc": "2.0", "id": 9, "result": task_list(&["t-alice", "t-bob"])}).to_string();
        let small = json!({"jsonrpc": "2.0", "id": 9, "result": {"tasks": [{"id": "t-bob"}]}}).to_string();
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
        let cases: [Case<'_>; 5] = [
            ("gzip", vec![("content-type", "application/json"), ("content-encoding", "gzip")], small.as_bytes()),
            ("not json", vec![("content-type", "text/plain")], small.as_bytes()),
            ("declared too large", vec![("content-type", "application/json"), ("content-length", "5000")], small.as_bytes()),
            ("too large", vec![("content-type", "application/json")], big.as_bytes()),
            ("ambiguous", vec![("content-type", "application/json")], br#"{"jsonrpc":"2.0","id":9,"result":{"tasks":[]},"result":{"tasks":[{"id":"t-bob"}]}}"#),
        ];
        for (what, headers, body) in cases {
            let mut call = gw.request("echo", "POST", "/", &[V10, ALICE], Some(&rpc_body("ListTasks", json!({}))));
            let steps = respond_whole(&gw, &mut call, &headers, body);
            assert_eq!(steps, (Step::Pause, Step::Continue), "{what}");
            let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(out["error"]["code"], codes::UNFILTERABLE, "{what}");
            assert_eq!(out["error"]["data"][0]["reason"], "A2A_RESPONSE_UNFILTERABLE", "{what}");
            assert_eq!(out["id"], 9, "{what}");
            assert_eq!(call.host.response_header(":status").as_deref(), Some("502"), "{what}");
            assert_eq!(call.host.response_header("content-encoding"), None, "{what}");
            let rec = audit(&call);
            assert_eq!((rec["decision"].as_str(), rec["reason"].as_str()), (Some("error"), Some("A2A_RESPONSE_UNFILTERABLE")), "{what}");
        }
        // Streamed past the limit: the error replaces what was held, the rest is dropped.
        let mut call = gw.request("echo", "GET", "/tasks", &[V10, ALICE], None);
        *call.host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "application/json".into())];
        assert_eq!(call.ex.on_response_headers(&call.host, false), Step::Pause);
        *call.host.response_body.borrow_mut() = big.as_bytes()[..150].to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, 150, false), Step::Pause);
        *call.host.response_body.borrow_mut() = big.as_bytes()[..250].to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, 250, false), Step::Continue);
        let out: Value = serde_json::from_slice(&call.host.response_body.borrow()).unwrap();
        assert_eq!((out["error"]["code"].clone(), out["error"]["status"].clone()), (json!(502), json!("INTERNAL")));
        *call.host.response_body.borrow_mut() = big.as_bytes()[250..].to_vec();
        assert_eq!(call.ex.on_response_body(&call.host, big.len() - 250, true), Step::Continue);
        assert!(call.host.response_body.borrow().is_empty(), "the rest of the list never goes out");
    }

    #[test]
    fn http_methods_a2a_does_not_use_are_refused_with_a_record() {
        let gw = Gateway::new(json!({}));
        let body = send_body("SendMessage", v10_message(json!({})));
        for method in ["PUT", "PATCH", "put"] {
            let mut call = gw.request("echo", method, "/", &[V10], Some(&body));
            assert_eq!(call.step, Step::Pause, "{method}");
            let (status, headers, reply) = call.host.local_reply.borrow().clone().expect("refused");
            let reply: Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(status, 405);
            assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET, POST, DELETE"), "{headers:?}");
            assert_eq!(reply["error"]["code"], -32600);
            assert_eq!(reply["error"]["data"][0]["reason"], "A2A_INVALID_REQUEST");
            assert_eq!(call.host.request_body.borrow().len(), 0, "the body was never read, let alone passed");
            gw.finish(&mut call);
            let rec = audit(&call);
            assert_eq!((rec["decision"].as_str(), rec["http_method"].as_str(), rec["binding"].as_str()), (Some("error"), Some(method), Some("jsonrpc")));
        }
        // Not JSON-RPC's media type: the HTTP+JSON error shape.
        let call = gw.request("echo", "PATCH", "/tasks/t-1", &[V10, ("content-type", "application/a2a+json")], Some(b"{}"));
        let (status, reply) = call.reply().unwrap();
        assert_eq!((status, reply["error"]["status"].as_str()), (405, Some("UNIMPLEMENTED")));
        assert_eq!(reply["error"]["details"][0]["reason"], "A2A_INVALID_REQUEST");
        // HEAD / OPTIONS without a body carry no call and pass; with one they are refused.
        for method in ["HEAD", "OPTIONS"] {
            let call = gw.request("echo", method, "/", &[], None);
            assert_eq!((call.step, call.reply().is_none()), (Step::Continue, true), "{method}");
            let call = gw.request("echo", method, "/", &[V10], Some(&body));
            assert_eq!(call.reply().map(|r| r.0), Some(405), "{method} with a body");
        }
        // An unknown credential is reported as such first; a non-agent route is not concerned.
        let keyed = Gateway::new(json!({"identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k"), "name": "k", "principal": "p"}]}}}));
        let call = keyed.request("echo", "PUT", "/", &[("x-api-key", "stolen")], Some(&body));
        assert_eq!(call.reply().map(|r| r.0), Some(401));
        let host = MemoryHost::with_request_headers(&[(":method", "PUT"), (":path", "/x"), ("content-type", "application/json")]);
        let gw = Gateway::new(json!({"routes": {"cluster_fallback": false}}));
        let mut ex = Exchange::new(gw.shared.clone(), gw.metrics.clone());
        assert_eq!(ex.on_request_headers(&host, false), Step::Continue);
    }

    #[test]
    fn a_send_message_stays_within_its_host_call_budget() {
        // Each host call costs about 1-2 µs inside Envoy (bench/README.md), more than most of
        // the filter's own work: this pins what one SendMessage with tagging, trace stitching
        // and a signed delegation context spends (the `make bench` workload).
        let gw = Gateway::new(json!({
            "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"k-1"), "name": "k", "principal": "svc"}]}},
            "delegation": {"signing_key": KEY}
        }));
        let body = send_body("SendMessage", v10_message(json!({"contextId": "ctx-1"})));
        let headers = [V10, ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("authorization", "Bearer k-1")];
        let warm = tollgate_core::testing::profile_rounds();
        for _ in 0..warm {
            gw.quiet.set(true);
            let mut call = gw.request("agent-a", "POST", "/agents/a/", &headers, Some(&body));
            gw.respond(&mut call, "application/json", &[&task_json("ctx-1", "task-warm", "TASK_STATE_COMPLETED")]);
        }
        gw.quiet.set(false);
        for round in 0..2 {
            let mut call = gw.request("agent-a", "POST", "/agents/a/", &headers, Some(&body));
            gw.respond(&mut call, "application/json", &[&task_json("ctx-1", &format!("task-{round}"), "TASK_STATE_COMPLETED")]);
            let calls = call.host.calls.borrow().clone();
            let named = |name: &str| calls.iter().filter(|c| c.split(' ').next() == Some(name)).count();
            assert_eq!(call.step, Step::Continue);
            assert!(call.reply().is_none());
            assert!(call.upstream(chain::SIG).is_some(), "the delegation context is signed");
            // Headers: one snapshot per callback that reads them, no single-header reads, and
            // the upstream headers written in at most two calls (credential strip, then the rest).
            assert_eq!(named("header"), 0, "{calls:#?}");
            assert!(named("headers") <= 3, "{calls:#?}");
            assert!(named("set_header") + named("set_headers") <= 2, "{calls:#?}");
            // Filter state: each tag once (8) plus the audit record.
            assert!(named("set_property") <= 9, "{calls:#?}");
            assert!(named("now_nanos") <= 5, "{calls:#?}");
            // The conversation table: a lookup probes at most 4 slots.
            assert!(named("shared_data") + named("set_shared_data") <= 16, "{calls:#?}");
            // The first round also defines its metrics (once per VM).
            let budget = if round == 0 { 38 } else { 32 };
            assert!(calls.len() <= budget, "{} host calls: {calls:#?}", calls.len());
        }
    }

}
