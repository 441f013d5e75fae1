//! The audit record of one A2A call (core schema, layer `a2a`) and its metrics, built by pure
//! functions over [`ExchangeFacts`], the plain value in which the exchange keeps what it has
//! seen and decided: [`build`] makes the record, [`labels`] the metric labels; the exchange
//! only writes them ([`emit_metrics`]), and the filter-state tags ([`Tags`]).
//!
//! | stat (prefix `tollgate.a2a.`) | kind | labels |
//! |---|---|---|
//! | `requests` | counter | none: every request the filter sees |
//! | `calls` | counter | target, method, state |
//! | `denied` | counter | target, reason |
//! | `cards` | counter | target, result |
//! | `duration_ms`, `ttfe_ms` | histogram | target, method |

use crate::chain::Trust;
use crate::classify::{Binding, Dialect, Method};
use crate::replies::Refusal;
use crate::session::{self, RequestIds, ResponseIds, ResponseTracker};
use serde::Serialize;
use tollgate_core::observe::audit::{Decision, Envelope, Layer, Record};
use tollgate_core::observe::filter_state::Published;
use tollgate_core::host::Host;
use tollgate_core::identity::Identity;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::wire::trace::TraceStep;

pub const REQUESTS: &str = "tollgate.a2a.requests";
pub const CALLS: &str = "tollgate.a2a.calls";
pub const DENIED: &str = "tollgate.a2a.denied";
pub const CARDS: &str = "tollgate.a2a.cards";
pub const DURATION: &str = "tollgate.a2a.duration_ms";
pub const TTFE: &str = "tollgate.a2a.ttfe_ms";

/// What one exchange has seen and decided, as plain data: everything its record, its metrics
/// and its replies are built from.
#[derive(Debug)]
pub struct ExchangeFacts {
    pub start_nanos: u64,
    pub request_id: Option<String>,
    pub dialect: Dialect,
    pub binding: Option<Binding>,
    pub method: Option<Method>,
    /// The JSON-RPC method as sent.
    pub raw_method: Option<String>,
    pub ids: RequestIds,
    pub identity: Option<Identity>,
    pub target: String,
    pub caller: String,
    pub trust: Trust,
    pub on_behalf_of: Option<String>,
    pub hop: Option<u32>,
    pub chain: Vec<String>,
    pub trace: Option<TraceStep>,
    /// `inbound`, `conversation` or `new`.
    pub trace_source: &'static str,
    /// Why the gateway answered itself (the request, or a `ListTasks` answer it replaced).
    pub refusal: Option<Refusal>,
    pub rule_id: Option<String>,
    /// The status sent to the client (the gateway's, else the agent's).
    pub status: Option<u32>,
    /// The request's HTTP method, kept only when it was refused for it.
    pub refused_http_method: Option<String>,
    /// The first SSE event, or a JSON body's first byte.
    pub ttfe_nanos: Option<u64>,
    /// Why a push-notification webhook URL was refused (`push::Why::as_str`).
    pub push_url_refused: Option<&'static str>,
    /// gRPC calls: the status sent to the client (the gateway's refusal, else the agent's).
    pub grpc_status: Option<i64>,
    /// What the gateway credential issued with the call carries over (`credential.rs`).
    pub carried: crate::credential::Carried,
}

impl Default for ExchangeFacts {
    fn default() -> Self {
        ExchangeFacts {
            start_nanos: 0,
            request_id: None,
            dialect: Dialect::V03,
            binding: None,
            method: None,
            raw_method: None,
            ids: RequestIds::default(),
            identity: None,
            target: String::new(),
            caller: crate::authz::ANONYMOUS.to_string(),
            trust: Trust::None,
            on_behalf_of: None,
            hop: None,
            chain: Vec::new(),
            trace: None,
            trace_source: "new",
            refusal: None,
            rule_id: None,
            status: None,
            refused_http_method: None,
            ttfe_nanos: None,
            push_url_refused: None,
            grpc_status: None,
            carried: Default::default(),
        }
    }
}

impl ExchangeFacts {
    /// What every record of this call carries (request id, trace, identity).
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope { request_id: self.request_id.as_deref(), trace: self.trace.as_ref(), identity: self.identity.as_ref() }
    }

    /// The identity the call acts as: the on-behalf-of user, else the caller.
    pub fn acting(&self) -> &str {
        self.on_behalf_of.as_deref().unwrap_or(&self.caller)
    }

    /// The method as the record names it: `AgentCard`, the 1.0 name, else as sent.
    pub fn method_name(&self) -> &str {
        match (self.binding, self.method) {
            (Some(Binding::Card), _) => "AgentCard",
            (_, Some(m)) => m.name(),
            (_, None) => self.raw_method.as_deref().unwrap_or("unknown"),
        }
    }

    /// The method as a metric label: bounded, so unknown JSON-RPC methods are `unknown`.
    pub fn method_label(&self) -> &'static str {
        match (self.binding, self.method) {
            (Some(Binding::Card), _) => "AgentCard",
            (_, Some(m)) => m.name(),
            (_, None) => "unknown",
        }
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CardAudit<'a> {
    pub result: &'a str,
    pub urls_rewritten: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base: Option<&'a str>,
}

/// What the response side adds to the record.
#[derive(Debug, Default)]
pub struct ResponseFacts<'a> {
    pub tracker: Option<&'a ResponseTracker>,
    /// The card rewrite's outcome (card fetches and extended cards).
    pub card: Option<CardAudit<'a>>,
    /// A filtered `ListTasks`: how many of the agent's tasks were withheld.
    pub tasks_withheld: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Detail<'a> {
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
    /// A refused push-notification webhook: why (`loopback`, `metadata`, `private`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    push_url_refused: Option<&'a str>,
    /// gRPC calls: the `grpc-status` the client got.
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<i64>,
}

pub fn ms_between(from: u64, to: u64) -> u64 {
    to.saturating_sub(from) / 1_000_000
}

/// The call's state label: `denied`, `error` (a JSON-RPC error answer), else the task's
/// final state (bounded), else `none`.
pub fn state_label(facts: &ExchangeFacts, tracker: Option<&ResponseTracker>) -> &'static str {
    let tracked = tracker.map(|t| &t.ids);
    if facts.refusal.is_some() {
        "denied"
    } else if tracked.is_some_and(|t| t.error_code.is_some()) {
        "error"
    } else {
        tracked.and_then(|t| t.state.as_deref()).map(session::state_label).unwrap_or("none")
    }
}

/// The audit record as of `now_nanos`.
pub fn build<'a>(facts: &'a ExchangeFacts, response: ResponseFacts<'a>, now_nanos: u64) -> Record<'a, Detail<'a>> {
    let tracked: Option<&'a ResponseIds> = response.tracker.map(|t| &t.ids);
    let rpc_error_code = facts
        .refusal
        .filter(|_| facts.binding == Some(Binding::JsonRpc))
        .map(Refusal::rpc_code)
        .or(tracked.and_then(|t| t.error_code));
    let detail = Detail {
        binding: facts.binding.map(Binding::as_str).unwrap_or("jsonrpc"),
        dialect: facts.dialect.as_str(),
        method: facts.method_name(),
        jsonrpc_method: facts.raw_method.as_deref(),
        target: &facts.target,
        caller: &facts.caller,
        caller_trust: facts.trust.as_str(),
        on_behalf_of: facts.on_behalf_of.as_deref(),
        hop: facts.hop,
        chain: &facts.chain,
        message_id: facts.ids.message_id.as_deref(),
        context_id: facts.ids.context_id.as_deref().or(tracked.and_then(|t| t.context_id.as_deref())),
        task_id: facts.ids.task_id.as_deref().or(tracked.and_then(|t| t.task_id.as_deref())),
        reference_task_ids: &facts.ids.reference_task_ids,
        task_state: tracked.and_then(|t| t.state.as_deref()),
        rpc_error_code,
        reason: facts.refusal.map(Refusal::reason),
        streaming: response.tracker.is_some_and(ResponseTracker::is_stream),
        events: response.tracker.map(|t| t.events),
        ttfe_ms: facts.ttfe_nanos.map(|t| ms_between(facts.start_nanos, t)),
        trace_source: facts.trace_source,
        card: response.card.filter(|_| facts.refusal.is_none()),
        message_parts: facts.ids.parts.as_deref(),
        http_method: facts.refused_http_method.as_deref(),
        tasks_withheld: response.tasks_withheld,
        push_url_refused: facts.push_url_refused,
        grpc_status: facts.grpc_status,
    };
    let mut record = Record::of_request(Layer::A2a, facts.start_nanos / 1_000_000, facts.envelope(), detail);
    record.decision = match facts.refusal {
        None => Decision::Allow,
        Some(why) if why.is_error() => Decision::Error,
        Some(_) => Decision::Deny,
    };
    record.rule_id = facts.rule_id.as_deref();
    record.status = facts.status;
    record.duration_ms = Some(ms_between(facts.start_nanos, now_nanos));
    record.error = facts.refusal.map(Refusal::message);
    record
}

/// Records one finished call's metrics.
pub fn emit_metrics(host: &dyn Host, metrics: &Metrics, facts: &ExchangeFacts, record: &Record<'_, Detail<'_>>, state: &str, card_result: Option<&str>) {
    let target = facts.target.as_str();
    let method = facts.method_label();
    let duration_ms = record.duration_ms.unwrap_or(0);
    metrics.inc(host, CALLS, &[("target", target), ("method", method), ("state", state)]);
    metrics.record(host, DURATION, &[("target", target), ("method", method)], duration_ms);
    if let Some(t) = record.detail.ttfe_ms {
        metrics.record(host, TTFE, &[("target", target), ("method", method)], t);
    }
    if let Some(why) = facts.refusal {
        metrics.inc(host, DENIED, &[("target", target), ("reason", why.reason())]);
    }
    if let Some(c) = card_result {
        metrics.inc(host, CARDS, &[("target", target), ("result", c)]);
    }
}

/// The filter-state tags, written only when they change.
#[derive(Debug, Default)]
pub struct Tags {
    /// `filter_state_tags: false`: nothing is published.
    off: bool,
    published: Published,
    /// The tracker version (0 without one) the tags were last published at: the request's
    /// values are final once published, after that only what the response reveals changes.
    version: Option<u32>,
}

impl Tags {
    /// Tags that publish nothing unless `on` (`filter_state_tags`).
    pub fn new(on: bool) -> Self {
        Tags { off: !on, ..Tags::default() }
    }

    pub fn publish(&mut self, host: &dyn Host, facts: &ExchangeFacts, tracker: Option<&ResponseTracker>) {
        if self.off {
            return;
        }
        let version = tracker.map_or(0, |t| t.version);
        if self.version == Some(version) {
            return;
        }
        self.version = Some(version);
        let tracked = tracker.map(|t| &t.ids);
        let hop = facts.hop.map(|h| h.to_string());
        let values = [
            ("tollgate.a2a.method", facts.method.map(Method::name)),
            ("tollgate.a2a.target", Some(facts.target.as_str())),
            ("tollgate.a2a.hop", hop.as_deref()),
            ("tollgate.a2a.trace_id", facts.trace.as_ref().map(|t| t.trace_id.as_str())),
            ("tollgate.a2a.message_id", facts.ids.message_id.as_deref()),
            ("tollgate.a2a.context_id", facts.ids.context_id.as_deref().or(tracked.and_then(|t| t.context_id.as_deref()))),
            ("tollgate.a2a.task_id", facts.ids.task_id.as_deref().or(tracked.and_then(|t| t.task_id.as_deref()))),
            ("tollgate.a2a.task_state", tracked.and_then(|t| t.state.as_deref())),
        ];
        for (key, value) in values {
            self.published.set(host, key, value);
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
