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
//! | `errors` | counter | team, model, provider, error_type (`rate_limited` for limit refusals) |
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

use crate::limits::{Denial, Estimate};
use crate::usage::Tokens;
use serde::Serialize;
use tollgate_core::host::Host;
use tollgate_core::metrics::Metrics;

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

/// Token counts as recorded: the normalized counts plus their total.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
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
    /// Client API: openai_chat, openai_responses, anthropic_messages, gemini.
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
    pub limit: Option<&'a Denial>,
    /// Limits this request took over their cap: real usage above its reservation.
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    pub limits_overshot: &'a [&'a str],
}

/// Label values of one request's metrics.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub team: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
}

/// Records one finished request's metrics.
pub fn emit_metrics(host: &dyn Host, metrics: &Metrics, labels: Labels<'_>, detail: &LlmDetail<'_>, duration_ms: u64) {
    let base = [("team", labels.team), ("model", labels.model), ("provider", labels.provider)];
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
            let labels = [("token_type", kind), base[0], base[1], base[2]];
            metrics.add(host, TOKEN_USAGE, &labels, value);
        }
    }
    if let Some(cost) = detail.cost_micro_usd {
        metrics.add(host, COST, &base, cost);
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
mod tests {
    use super::*;
    use tollgate_core::host::MemoryHost;

    #[test]
    fn metrics_carry_labels_in_a_fixed_order() {
        let host = MemoryHost::new();
        let metrics = Metrics::new();
        let detail = LlmDetail {
            tokens: Tokens { input: 10, output: 4, cached_input: 2, ..Default::default() }.into(),
            cost_micro_usd: Some(7),
            estimated: true,
            error_type: Some("http_429"),
            ttft_ms: Some(12),
            ..Default::default()
        };
        let labels = Labels { team: "pay.ments", model: "gpt-4o", provider: "a" };
        emit_metrics(&host, &metrics, labels, &detail, 30);
        emit_metrics(&host, &metrics, labels, &detail, 30);
        assert_eq!(host.metric("tollgate.llm.gen_ai_client_requests.team.pay_ments.model.gpt-4o.provider.a"), Some(2));
        assert_eq!(
            host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.input.team.pay_ments.model.gpt-4o.provider.a"),
            Some(20)
        );
        assert_eq!(
            host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.cached_input.team.pay_ments.model.gpt-4o.provider.a"),
            Some(4)
        );
        assert_eq!(host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.reasoning.team.pay_ments.model.gpt-4o.provider.a"), None);
        assert_eq!(host.metric("tollgate.llm.cost_micro_usd.team.pay_ments.model.gpt-4o.provider.a"), Some(14));
        assert_eq!(host.metric("tollgate.llm.errors.team.pay_ments.model.gpt-4o.provider.a.error_type.http_429"), Some(2));
        assert_eq!(host.metric("tollgate.llm.usage_estimated.team.pay_ments.model.gpt-4o.provider.a"), Some(2));
        assert_eq!(host.metric("tollgate.llm.gen_ai_client_operation_duration.team.pay_ments.model.gpt-4o.provider.a"), Some(30));
    }


    #[test]
    fn detail_serializes_flat_with_tokens_object() {
        let detail = LlmDetail { api: Some("openai_chat"), tokens: Tokens { input: 1, output: 2, ..Default::default() }.into(), ..Default::default() };
        let v = serde_json::to_value(&detail).unwrap();
        assert_eq!(v["api"], "openai_chat");
        assert_eq!(v["tokens"]["total"], 3);
        assert_eq!(v["estimated"], false);
        assert!(v.get("cost_micro_usd").is_none());
    }
}
