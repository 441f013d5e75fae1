//! The audit record of one LLM request (core schema, layer `llm`) and its metrics.
//!
//! Metric names follow the OpenTelemetry GenAI conventions where one exists; label values
//! are encoded in the stat name in a fixed order (`token_type`, `team`, `model`,
//! `provider`, `error_type`) and turned back into Prometheus labels by the `stats_tags`
//! shipped in `envoy/llm.yaml`:
//!
//! | stat (prefix `tollgate.llm.`) | kind | labels |
//! |---|---|---|
//! | `requests` | counter | none: every request the filter sees |
//! | `gen_ai_client_requests` | counter | team, model, provider |
//! | `gen_ai_client_token_usage` | counter | token_type (input, output, cached_input, cache_creation, reasoning), team, model, provider |
//! | `cost_micro_usd` | counter | team, model, provider |
//! | `errors` | counter | team, model, provider, error_type (`rate_limited` for limit refusals, `exceeds_limit` for a request over a cap by itself) |
//! | `limit_refusals` | counter | limit, team: requests refused by a limit or budget |
//! | `limit_overshoots` | counter | limit, team: requests whose real usage, above their reservation, took a counter over its cap |
//! | `usage_estimated` | counter | team, model, provider |
//! | `gen_ai_client_operation_duration` | histogram (ms) | team, model, provider |
//! | `gen_ai_server_time_to_first_token` | histogram (ms) | team, model, provider |
//!
//! `model` is the requested model name once it matched a route (`none` before that or for
//! unknown models), at most `max_model_labels` distinct names per VM (then `other`), so
//! clients cannot create unbounded series; `team` is the identity's team or `none`, at most
//! `max_team_labels` distinct teams per VM (JWT and header identities choose their team);
//! `provider` is the provider entry's name or `none`; `limit` is a configured limit id.

//!
//! The record is built by pure functions over [`ExchangeFacts`], the plain value in which the
//! exchange keeps what it has seen: [`accounting`] (tokens, estimate, cost), [`outcome`]
//! (decision, status, error) and [`build`] (the record itself). `exchange.rs` only writes it.

use crate::api::{self, ClientApi, Operation, RefusalKind};
use crate::config::State;
use crate::cost::cost_micro_usd;
use crate::limits::{Exceeded, Estimate};
use crate::usage::{self, Tokens, UsageTracker};
use serde::Serialize;
use tollgate_core::observe::audit::{Decision, Envelope, Layer, Record};
use tollgate_core::host::Host;
use tollgate_core::identity::Identity;
use tollgate_core::observe::metrics::Metrics;
use tollgate_core::wire::trace::TraceStep;

pub const REQUESTS: &str = "tollgate.llm.requests";
pub const LABELLED_REQUESTS: &str = "tollgate.llm.gen_ai_client_requests";
pub const TOKEN_USAGE: &str = "tollgate.llm.gen_ai_client_token_usage";
pub const COST: &str = "tollgate.llm.cost_micro_usd";
pub const ERRORS: &str = "tollgate.llm.errors";
pub const ESTIMATED: &str = "tollgate.llm.usage_estimated";
pub const DURATION: &str = "tollgate.llm.gen_ai_client_operation_duration";
pub const TTFT: &str = "tollgate.llm.gen_ai_server_time_to_first_token";
pub const LIMIT_REFUSALS: &str = "tollgate.llm.limit_refusals";
pub const LIMIT_OVERSHOOTS: &str = "tollgate.llm.limit_overshoots";
pub const GUARDRAIL_HITS: &str = "tollgate.llm.guardrail_hits";

/// Token counts as recorded: the normalized counts plus their total.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
    pub total: u64,
}

impl From<Tokens> for TokenCounts {
    fn from(t: Tokens) -> Self {
        TokenCounts {
            input: t.input,
            output: t.output,
            cached_input: t.cached_input,
            cache_creation: t.cache_creation,
            reasoning: t.reasoning,
            total: t.total(),
        }
    }
}

/// The LLM-specific part of the audit record, flattened next to the core envelope.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LlmDetail<'a> {
    /// Client API: openai_chat, openai_responses, openai_embeddings, anthropic_messages,
    /// gemini; for the model list the shape answered: openai_models, anthropic_models,
    /// gemini_models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<&'static str>,
    /// OpenTelemetry `gen_ai.operation.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a str>,
    /// The model the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// The model sent to the provider (differs for aliases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    pub stream: bool,
    /// The client's requested maximum output tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// `stream_options.include_usage` was added by the gateway.
    pub usage_injected: bool,
    pub tokens: TokenCounts,
    /// Token counts are estimates: the provider's final usage never arrived.
    pub estimated: bool,
    /// Cost in micro-dollars; absent when no price matched the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
    /// Whether a price matched the (upstream) model of a forwarded request; `false`: its
    /// cost is unknown and counted as 0 (`unpriced: zero`). Absent when nothing was forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priced: Option<bool>,
    /// Request start to response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    /// Request start to the first generated content (first body bytes for JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The response ended normally (false: client went away or the stream broke off).
    pub completed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<&'a str>,
    /// What admission reserved on the matching limits (absent when no limit applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Estimate>,
    /// The limit that refused the request (then `rule_id` is its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'a Exceeded>,
    /// Limits this request took over their cap: real usage above its reservation.
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    pub limits_overshot: &'a [&'a str],
    /// The fleet-wide store could not answer: `fail_open_local` limits counted on this
    /// Envoy only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub limits_degraded: bool,
    /// A virtual model: the deployment that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<&'a str>,
    /// A virtual model: every attempt, in order (deployment, status, duration, error).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub attempts: &'a [crate::deployments::Attempt],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_saved_micro_usd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moderation: Option<&'a ModerationFact>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub guardrails: &'a [GuardFinding],
}

/// Why the filter answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub refusal: RefusalKind,
    /// The record's `error_type` (and `rule_id`, unless a limit refused).
    pub error_type: &'static str,
    pub message: String,
    /// Set when a limit refused the request (boxed: it is rare and large).
    pub limit: Option<Box<Exceeded>>,
}

impl Refusal {
    pub fn new(refusal: RefusalKind, error_type: &'static str, message: impl Into<String>) -> Self {
        Refusal { refusal, error_type, message: message.into(), limit: None }
    }
}

/// Where a request stands.
#[derive(Debug, Default)]
pub enum Phase {
    /// Headers held, body not yet judged.
    #[default]
    Deciding,
    /// Answered locally; the request never went upstream.
    Refused(Refusal),
    /// Sent to the provider; the response streams through.
    Forwarded,
    /// Answered by the gateway itself, successfully (the model list, `endpoints.rs`).
    Answered,
}

/// What one exchange has seen, as plain data: everything its records are built from.
#[derive(Debug, Default)]
pub struct ExchangeFacts {
    pub started_nanos: u64,
    pub request_id: Option<String>,
    pub trace: Option<TraceStep>,
    pub api: Option<ClientApi>,
    /// What the request asks for (generate, embeddings, count_tokens, the model list).
    pub operation: Operation,
    pub identity: Option<Identity>,
    /// The requested model (cut to a sane length).
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    /// Set once the model matched a route (then `model` may be a metric label).
    pub provider: Option<String>,
    pub stream: bool,
    pub max_output_tokens: Option<u64>,
    pub usage_injected: bool,
    pub request_bytes: u64,
    pub phase: Phase,
    pub response_status: Option<u32>,
    pub response_headers_nanos: Option<u64>,
    pub first_token_nanos: Option<u64>,
    /// The start of an upstream error body (for the record's message).
    pub error_body: Vec<u8>,
    pub response_bytes: u64,
    /// The response ended normally.
    pub response_complete: bool,
    /// The estimate reserved at admission (when a limit applied).
    pub reserved: Option<Estimate>,
    /// Ids of the limits this request took over their cap (set at reconciliation).
    pub overshot: Vec<String>,
    /// The fleet-wide store could not answer and `fail_open_local` limits were counted on
    /// this Envoy only.
    pub limits_degraded: bool,
    /// A virtual model: the deployments planned, in order.
    pub planned: Vec<String>,
    /// The deployment that answered.
    pub deployment: Option<String>,
    /// Every attempt Envoy made (virtual models; from the attempt role).
    pub attempts: Vec<crate::deployments::Attempt>,
    /// The response cache's part: `hit` (answered from it), `miss` (looked up, not found),
    /// `bypass` (eligible for storing only); absent: not eligible.
    pub cache: Option<&'static str>,
    /// A hit: what the cached answer cost when it was first asked.
    pub cache_saved_micro_usd: Option<u64>,
    /// The external moderation call's outcome.
    pub moderation: Option<ModerationFact>,
    /// What the guardrail policies found (never the matched text).
    pub guardrails: Vec<GuardFinding>,
    /// A guardrail ended the streamed answer with the API's error event.
    pub guard_blocked_stream: bool,
    /// A guardrail replaced the JSON answer with a refusal: (status, message).
    pub guard_blocked_answer: Option<(u16, String)>,
}

/// One detector's matches in one message, under one policy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuardFinding {
    pub policy: String,
    pub action: &'static str,
    #[serde(flatten)]
    pub hit: crate::guard::action::GuardHit,
}

/// What the external moderation said, as the record shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModerationFact {
    /// `clean`, `flagged`, or `failed` (no usable answer; then `on_failure` decided).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    pub latency_ms: u64,
}

impl ExchangeFacts {
    /// What every record of this request carries (request id, trace, identity).
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope { request_id: self.request_id.as_deref(), trace: self.trace.as_ref(), identity: self.identity.as_ref() }
    }
    pub fn forwarded(&self) -> bool {
        matches!(self.phase, Phase::Forwarded)
    }
    /// Answered locally (refused, or the gateway's own endpoint): nothing went upstream.
    pub fn local(&self) -> bool {
        matches!(self.phase, Phase::Refused(_) | Phase::Answered)
    }
    pub fn refused(&self) -> Option<&Refusal> {
        match &self.phase {
            Phase::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// Tokens (reported, else estimated), whether they are estimates, and the cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    pub tokens: Tokens,
    pub estimated: bool,
    pub cost_micro_usd: Option<u64>,
    /// Whether a price matched the model (`None`: nothing forwarded).
    pub priced: Option<bool>,
}

/// What the record shows a request used. Zero when nothing was forwarded or the provider
/// answered an error; an estimate of the input when the response never came.
pub fn accounting(facts: &ExchangeFacts, usage: Option<&UsageTracker>, state: &State) -> Accounting {
    let forwarded = facts.forwarded();
    let ok_response = forwarded && facts.response_status.is_some_and(|s| s < 400);
    let bpt = state.estimate_bytes_per_token;
    let report = match (usage, ok_response) {
        (Some(tracker), true) => Some(tracker.report(facts.request_bytes, bpt)),
        // Forwarded, but no response at all (client went away before the headers).
        _ if forwarded && facts.response_status.is_none() => {
            Some(usage::reported_or_estimated(None, false, facts.request_bytes, 0, bpt))
        }
        _ => None,
    };
    // A translated answer: its provider's own report, read before translation (the client's
    // API may have no field for part of it), when the answering attempt has one.
    let provider_report = facts.attempts.last().and_then(|a| a.tokens).filter(|_| ok_response);
    let tokens = match provider_report {
        Some(t) => Tokens {
            input: t.input,
            output: t.output,
            cached_input: t.cached_input,
            cache_creation: t.cache_creation,
            reasoning: t.reasoning,
        },
        None => report.map(|r| r.tokens).unwrap_or_default(),
    };
    let estimated = provider_report.is_none() && report.is_some_and(|r| r.estimated);
    let price_model = facts.upstream_model.as_deref().or(facts.model.as_deref());
    let price = match (forwarded, price_model) {
        (true, Some(model)) => Some(state.prices.lookup(model)),
        _ => None,
    };
    let cost_micro_usd = price.flatten().map(|p| cost_micro_usd(&tokens, p));
    Accounting { tokens, estimated, cost_micro_usd, priced: price.map(|p| p.is_some()) }
}

/// The record's verdict: decision, status, error message and error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub status: Option<u32>,
    pub error: Option<String>,
    pub error_type: Option<String>,
}

pub fn outcome(facts: &ExchangeFacts) -> Outcome {
    if let Some((status, message)) = &facts.guard_blocked_answer {
        return Outcome {
            decision: Decision::Deny,
            status: Some(u32::from(*status)),
            error: Some(message.clone()),
            error_type: Some("guardrail_blocked".into()),
        };
    }
    if facts.guard_blocked_stream {
        return Outcome {
            decision: Decision::Deny,
            status: facts.response_status,
            error: Some("a guardrail ended the streamed answer".into()),
            error_type: Some("guardrail_blocked".into()),
        };
    }
    let forwarded = facts.forwarded();
    if let Some(r) = facts.refused() {
        let decision = match r.refusal {
            RefusalKind::Unauthenticated
            | RefusalKind::Forbidden
            | RefusalKind::NotPriced
            | RefusalKind::RateLimited(_)
            | RefusalKind::ExceedsLimit
            | RefusalKind::Guarded(_) => {
                Decision::Deny
            }
            _ => Decision::Error,
        };
        return Outcome {
            decision,
            status: Some(r.refusal.status()),
            error: Some(r.message.clone()),
            error_type: Some(r.error_type.to_string()),
        };
    }
    let upstream_error = match facts.response_status {
        Some(s) if s >= 400 && forwarded => {
            Some(api::upstream_error_message(&facts.error_body).unwrap_or_else(|| format!("HTTP {s}")))
        }
        _ => None,
    };
    let status_error_type = facts.response_status.filter(|s| *s >= 400).map(|s| format!("http_{s}"));
    let incomplete = forwarded && !facts.response_complete;
    Outcome {
        decision: Decision::Allow,
        status: facts.response_status,
        error: upstream_error.or_else(|| incomplete.then(|| "response ended before completion".to_string())),
        error_type: status_error_type.or_else(|| incomplete.then(|| "incomplete".to_string())),
    }
}

pub fn ms_between(from: u64, to: u64) -> u64 {
    to.saturating_sub(from) / 1_000_000
}

/// The audit record as of `now_nanos`. `overshot` is `facts.overshot` as `&str`s.
pub fn build<'a>(
    facts: &'a ExchangeFacts,
    outcome: &'a Outcome,
    accounting: Accounting,
    overshot: &'a [&'a str],
    now_nanos: u64,
) -> Record<'a, LlmDetail<'a>> {
    let refused = facts.refused();
    let detail = LlmDetail {
        api: facts.api.map(|api| facts.operation.api_name(api)),
        operation: facts.api.map(|api| facts.operation.name(api)),
        team: facts.identity.as_ref().and_then(|i| i.team.as_deref()),
        model: facts.model.as_deref(),
        upstream_model: facts.upstream_model.as_deref(),
        provider: facts.provider.as_deref(),
        stream: facts.stream,
        max_output_tokens: facts.max_output_tokens,
        usage_injected: facts.usage_injected,
        tokens: accounting.tokens.into(),
        estimated: accounting.estimated,
        cost_micro_usd: accounting.cost_micro_usd,
        priced: accounting.priced,
        ttfb_ms: facts.response_headers_nanos.map(|t| ms_between(facts.started_nanos, t)),
        ttft_ms: facts.first_token_nanos.map(|t| ms_between(facts.started_nanos, t)),
        request_bytes: facts.request_bytes,
        response_bytes: facts.response_bytes,
        completed: refused.is_some() || facts.response_complete,
        error_type: outcome.error_type.as_deref(),
        reserved: facts.reserved,
        limit: refused.and_then(|r| r.limit.as_deref()),
        limits_overshot: overshot,
        limits_degraded: facts.limits_degraded,
        deployment: facts.deployment.as_deref(),
        attempts: &facts.attempts,
        cache: facts.cache,
        cache_saved_micro_usd: facts.cache_saved_micro_usd,
        moderation: facts.moderation.as_ref(),
        guardrails: &facts.guardrails,
    };
    let mut rec = Record::of_request(Layer::Llm, facts.started_nanos / 1_000_000, facts.envelope(), detail);
    rec.decision = outcome.decision;
    rec.rule_id = refused.map(|r| r.limit.as_ref().map(|l| l.id.as_str()).unwrap_or(r.error_type));
    rec.status = outcome.status;
    rec.duration_ms = Some(ms_between(facts.started_nanos, now_nanos));
    rec.error = outcome.error.as_deref();
    rec
}

/// Label values of one request's metrics.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub team: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    /// The model the provider served (`none` when it did not say), for cost and tokens.
    pub upstream_model: &'a str,
    /// The API key's configured name (`none` for other identities), for cost and tokens.
    pub key: &'a str,
    /// The calling agent (the principal), for cost and tokens.
    pub agent: &'a str,
}

/// Records one finished request's metrics. Cost and token series also carry
/// `upstream_model`, `key` and `agent`, so spend answers per served model and caller.
pub fn emit_metrics(host: &dyn Host, metrics: &Metrics, labels: Labels<'_>, detail: &LlmDetail<'_>, duration_ms: u64) {
    let base = [("team", labels.team), ("model", labels.model), ("provider", labels.provider)];
    let spend = [
        base[0],
        base[1],
        base[2],
        ("upstream_model", labels.upstream_model),
        ("key", labels.key),
        ("agent", labels.agent),
    ];
    metrics.inc(host, LABELLED_REQUESTS, &base);
    let t = &detail.tokens;
    for (kind, value) in [
        ("input", t.input),
        ("output", t.output),
        ("cached_input", t.cached_input),
        ("cache_creation", t.cache_creation),
        ("reasoning", t.reasoning),
    ] {
        if value > 0 {
            let labels = [("token_type", kind), spend[0], spend[1], spend[2], spend[3], spend[4], spend[5]];
            metrics.add(host, TOKEN_USAGE, &labels, value);
        }
    }
    if let Some(cost) = detail.cost_micro_usd {
        metrics.add(host, COST, &spend, cost);
    }
    if detail.estimated {
        metrics.inc(host, ESTIMATED, &base);
    }
    if let Some(error_type) = detail.error_type {
        metrics.inc(host, ERRORS, &[base[0], base[1], base[2], ("error_type", error_type)]);
    }
    if let Some(denial) = detail.limit {
        metrics.inc(host, LIMIT_REFUSALS, &[("limit", &denial.id), base[0]]);
    }
    for id in detail.limits_overshot {
        metrics.inc(host, LIMIT_OVERSHOOTS, &[("limit", id), base[0]]);
    }
    metrics.record(host, DURATION, &base, duration_ms);
    if let Some(ttft) = detail.ttft_ms {
        metrics.record(host, TTFT, &base, ttft);
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
