use super::*;
use crate::api::ClientApi;
use crate::config::load_with;
use crate::usage::Framing;
use serde_json::json;
use tollgate_core::host::MemoryHost;

fn state() -> State {
    let cfg = json!({
        "providers": [{"name": "prov-a"}],
        "models": [{"model": "*", "provider": "prov-a"}],
        "prices": [{"model": "gpt-*", "input": 1000, "output": 2000}],
        "require_identity": false
    });
    load_with(cfg.to_string().as_bytes(), &|_| None).unwrap()
}

/// A chat completion forwarded as `gpt-4o` and answered with `status`.
fn forwarded(status: Option<u32>) -> ExchangeFacts {
    ExchangeFacts {
        started_nanos: 5_000_000_000,
        request_id: Some("rid".into()),
        api: Some(ClientApi::OpenaiChat),
        model: Some("gpt-4o".into()),
        upstream_model: Some("gpt-4o".into()),
        provider: Some("prov-a".into()),
        request_bytes: 40,
        phase: Phase::Forwarded,
        response_status: status,
        response_headers_nanos: status.map(|_| 5_020_000_000),
        ..Default::default()
    }
}

fn tracker(body: &[u8]) -> UsageTracker {
    let mut t = UsageTracker::new(ClientApi::OpenaiChat, Framing::Json, 1 << 16);
    t.feed(body);
    t
}

#[test]
fn accounting_uses_reported_usage_and_prices_it() {
    let state = state();
    let mut facts = forwarded(Some(200));
    let t = tracker(br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
    let a = accounting(&facts, Some(&t), &state);
    assert_eq!(a, Accounting { tokens: Tokens { input: 3, output: 4, ..Default::default() }, estimated: false, cost_micro_usd: Some(3 * 1000 + 4 * 2000), priced: Some(true) });
    // No price for the model: no cost.
    facts.upstream_model = Some("claude-3".into());
    assert_eq!(accounting(&facts, Some(&t), &state).cost_micro_usd, None);
}

#[test]
fn accounting_estimates_a_response_that_never_came_and_zeroes_errors_and_refusals() {
    let state = state();
    // Forwarded, no response headers: the input is estimated (40 bytes / 4).
    let a = accounting(&forwarded(None), None, &state);
    assert_eq!((a.tokens.input, a.tokens.output, a.estimated, a.cost_micro_usd), (10, 0, true, Some(10_000)));
    // An upstream error: nothing counted, but priced (at zero).
    let t = tracker(br#"{"usage":{"prompt_tokens":3}}"#);
    let a = accounting(&forwarded(Some(500)), Some(&t), &state);
    assert_eq!((a.tokens, a.estimated, a.cost_micro_usd), (Tokens::default(), false, Some(0)));
    // Refused: nothing at all.
    let refused = ExchangeFacts { phase: Phase::Refused(Refusal::new(RefusalKind::Forbidden, "model_not_allowed", "no")), ..forwarded(None) };
    assert_eq!(accounting(&refused, None, &state), Accounting::default());
}

#[test]
fn outcomes_of_refusals_errors_and_broken_responses() {
    let refused = |refusal, error_type| ExchangeFacts { phase: Phase::Refused(Refusal::new(refusal, error_type, "why")), ..Default::default() };
    let o = outcome(&refused(RefusalKind::Unauthenticated, "unknown_key"));
    assert_eq!(o, Outcome { decision: Decision::Deny, status: Some(401), error: Some("why".into()), error_type: Some("unknown_key".into()) });
    assert_eq!(outcome(&refused(RefusalKind::BadRequest, "invalid_request")).decision, Decision::Error);
    let ok = ExchangeFacts { response_complete: true, ..forwarded(Some(200)) };
    assert_eq!(outcome(&ok), Outcome { decision: Decision::Allow, status: Some(200), error: None, error_type: None });
    let cut = forwarded(Some(200));
    assert_eq!((outcome(&cut).error.as_deref(), outcome(&cut).error_type.as_deref()), (Some("response ended before completion"), Some("incomplete")));
    let failed = ExchangeFacts { error_body: br#"{"error":{"message":"down"}}"#.to_vec(), response_complete: true, ..forwarded(Some(503)) };
    let o = outcome(&failed);
    assert_eq!((o.decision, o.status, o.error.as_deref(), o.error_type.as_deref()), (Decision::Allow, Some(503), Some("down"), Some("http_503")));
    let o = outcome(&ExchangeFacts { error_body: b"<html>".to_vec(), ..failed });
    assert_eq!(o.error.as_deref(), Some("HTTP 503"));
}

#[test]
fn the_record_is_built_from_facts() {
    let mut facts = ExchangeFacts { response_complete: true, first_token_nanos: Some(5_030_000_000), ..forwarded(Some(200)) };
    facts.overshot = vec!["tpm".into()];
    let overshot: Vec<&str> = facts.overshot.iter().map(String::as_str).collect();
    let accounting = Accounting { tokens: Tokens { input: 1, output: 2, ..Default::default() }, estimated: false, cost_micro_usd: Some(9), priced: Some(true) };
    let outcome = outcome(&facts);
    let rec = build(&facts, &outcome, accounting, &overshot, 5_100_000_000);
    let v = serde_json::to_value(&rec).unwrap();
    assert_eq!((v["layer"].as_str(), v["decision"].as_str(), v["status"].as_u64()), (Some("llm"), Some("allow"), Some(200)));
    assert_eq!((v["timestamp_ms"].as_u64(), v["duration_ms"].as_u64(), v["ttfb_ms"].as_u64(), v["ttft_ms"].as_u64()), (Some(5000), Some(100), Some(20), Some(30)));
    assert_eq!((v["api"].as_str(), v["operation"].as_str(), v["provider"].as_str()), (Some("openai_chat"), Some("chat"), Some("prov-a")));
    assert_eq!((v["tokens"]["total"].as_u64(), v["cost_micro_usd"].as_u64(), v["completed"].as_bool()), (Some(3), Some(9), Some(true)));
    assert_eq!(v["limits_overshot"], json!(["tpm"]));
    assert!(v.get("rule_id").is_none_or(|r| r.is_null()), "{v}");
    // A refusal names its error type as the rule, or the limit that refused.
    let refused = ExchangeFacts { phase: Phase::Refused(Refusal::new(RefusalKind::NotFound, "unknown_model", "no such model")), ..Default::default() };
    let outcome = super::outcome(&refused);
    let v = serde_json::to_value(build(&refused, &outcome, Accounting::default(), &[], 0)).unwrap();
    assert_eq!((v["rule_id"].as_str(), v["error"].as_str(), v["completed"].as_bool()), (Some("unknown_model"), Some("no such model"), Some(true)));
}

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
    let labels = Labels { team: "pay.ments", model: "fast", provider: "a", upstream_model: "claude-3.5-sonnet", key: "k1", agent: "bot" };
    emit_metrics(&host, &metrics, labels, &detail, 30);
    emit_metrics(&host, &metrics, labels, &detail, 30);
    assert_eq!(host.metric("tollgate.llm.gen_ai_client_requests.team.pay_ments.model.fast.provider.a"), Some(2));
    assert_eq!(
        host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.input.team.pay_ments.model.fast.provider.a.upstream_model.claude-3.5-sonnet.key.k1.agent.bot"),
        Some(20)
    );
    assert_eq!(
        host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.cached_input.team.pay_ments.model.fast.provider.a.upstream_model.claude-3.5-sonnet.key.k1.agent.bot"),
        Some(4)
    );
    assert_eq!(host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.reasoning.team.pay_ments.model.fast.provider.a.upstream_model.claude-3.5-sonnet.key.k1.agent.bot"), None);
    assert_eq!(host.metric("tollgate.llm.cost_micro_usd.team.pay_ments.model.fast.provider.a.upstream_model.claude-3.5-sonnet.key.k1.agent.bot"), Some(14));
    assert_eq!(host.metric("tollgate.llm.errors.team.pay_ments.model.fast.provider.a.error_type.http_429"), Some(2));
    assert_eq!(host.metric("tollgate.llm.usage_estimated.team.pay_ments.model.fast.provider.a"), Some(2));
    assert_eq!(host.metric("tollgate.llm.gen_ai_client_operation_duration.team.pay_ments.model.fast.provider.a"), Some(30));
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

#[test]
fn key_and_agent_labels_are_capped_by_their_own_fields() {
    let cfg = json!({"max_key_labels": 1, "max_agent_labels": 2, "max_model_labels": 1});
    let state = load_with(cfg.to_string().as_bytes(), &|_| None).unwrap();
    assert_eq!((state.key_labels.label("k1"), state.key_labels.label("k2")), ("k1", "other"));
    let agents: Vec<&str> = ["a", "b", "c"].iter().map(|a| state.agent_labels.label(a)).collect();
    assert_eq!(agents, ["a", "b", "other"]);
    // The served model has a cap of its own, of `max_model_labels`' size.
    assert_eq!(state.model_labels.label("fast"), "fast");
    assert_eq!(state.upstream_model_labels.label("gpt-4o-mini"), "gpt-4o-mini");
    assert_eq!(state.upstream_model_labels.label("gpt-4.1"), "other");
    // A bad value names the field.
    let err = load_with(br#"{"max_agent_labels": -1}"#, &|_| None).err().unwrap();
    assert!(err.0.contains("max_agent_labels"), "{}", err.0);
}
