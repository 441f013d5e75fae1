//! The decisions with plain values: a compiled configuration, paths, bodies; no host.

use super::*;
use crate::config::load_with;
use serde_json::json;
use tollgate_core::identity::Source;

fn state(limits: serde_json::Value) -> State {
    let cfg = json!({
        "providers": [
            {"name": "prov-a", "credential": {"value": "sk-a"}, "headers": {"x-extra": "1"}},
            {"name": "prov-b", "apis": ["anthropic_messages", "gemini"], "credential": {"value": "sk-b"}}
        ],
        "models": [
            {"model": "gpt-*", "provider": "prov-a"},
            {"model": "fast", "provider": "prov-a", "upstream_model": "gpt-4o-mini"},
            {"model": "claude-*", "provider": "prov-b"},
            {"model": "gem-fast", "provider": "prov-b", "upstream_model": "gemini-2.0-flash"}
        ],
        "prices": [{"model": "gpt-*", "input": 1000, "output": 2000}],
        "default_max_output_tokens": 100,
        "limits": limits,
        "require_identity": false
    });
    load_with(cfg.to_string().as_bytes(), &|_| None).unwrap()
}

fn endpoint(path: &str) -> Endpoint {
    api::detect(path).unwrap()
}

fn refusal<T: std::fmt::Debug>(r: &Result<T, Refusal>) -> (RefusalKind, &'static str) {
    let r = r.as_ref().unwrap_err();
    (r.refusal, r.error_type)
}

#[test]
fn paths_and_methods() {
    let d = request_path("/v2/whatever?x=1", "POST");
    assert_eq!((d.endpoint, refusal(&d.verdict)), (None, (RefusalKind::NotFound, "unknown_path")));
    assert_eq!(d_message(&request_path("/v2/whatever?x=1", "POST")), "no LLM API at /v2/whatever");
    let d = request_path("/v1/chat/completions", "GET");
    assert_eq!(d.endpoint.map(|e| e.api), Some(ClientApi::OpenaiChat));
    assert_eq!(refusal(&d.verdict), (RefusalKind::MethodNotAllowed, "method_not_allowed"));
    assert_eq!(request_path("/v1/messages", "POST").verdict, Ok(None));
    // A Gemini key in the query: read as the header, and the path loses it.
    let d = request_path("/v1beta/models/gemini-x:streamGenerateContent?alt=sse&key=k%2B1", "POST");
    assert!(gemini_stream(d.endpoint.as_ref().unwrap()));
    assert_eq!(
        d.verdict,
        Ok(Some(QueryKey { key: "k+1".into(), path: "/v1beta/models/gemini-x:streamGenerateContent?alt=sse".into() }))
    );
}

fn d_message(d: &PathDecision) -> String {
    d.verdict.as_ref().unwrap_err().message.clone()
}

#[test]
fn callers_and_framing() {
    assert_eq!(refusal(&caller(Ok(None), true)), (RefusalKind::Unauthenticated, "missing_key"));
    assert_eq!(caller(Ok(None), false), Ok(None));
    assert_eq!(refusal(&caller(Err(IdentityError::UnknownApiKey), false)), (RefusalKind::Unauthenticated, "unknown_key"));
    let alice = Identity { principal: "alice".into(), team: None, groups: vec![], source: Source::ApiKey, key_name: None, allowed_models: None, delegation: None };
    assert_eq!(caller(Ok(Some(alice.clone())), true), Ok(Some(alice)));
    assert_eq!(refusal(&request_framing(true, None, 10)), (RefusalKind::BadRequest, "invalid_request"));
    assert_eq!(refusal(&request_framing(false, Some(" 11 "), 10)), (RefusalKind::TooLarge, "request_too_large"));
    assert_eq!(request_framing(false, Some("10"), 10), Ok(true));
    assert_eq!(request_framing(false, Some("junk"), 10), Ok(true));
    assert_eq!(request_framing(false, None, 10), Ok(false));
}

#[test]
fn bodies_are_refused_before_routing_or_at_it() {
    let state = state(json!([]));
    let chat = endpoint("/v1/chat/completions");
    let d = request_body(&state, &chat, b"[1]", None);
    assert_eq!((d.request.is_none(), refusal(&d.verdict)), (true, (RefusalKind::BadRequest, "invalid_request")));
    let d = request_body(&state, &chat, br#"{"model":"nope","stream":true,"max_tokens":5}"#, None);
    let request = d.request.as_ref().unwrap();
    assert_eq!((request.model.as_str(), request.stream, request.max_output_tokens, request.route.is_none()), ("nope", true, Some(5), true));
    assert_eq!(refusal(&d.verdict), (RefusalKind::NotFound, "unknown_model"));
    let d = request_body(&state, &chat, br#"{"model":"claude-3"}"#, None);
    assert_eq!(refusal(&d.verdict), (RefusalKind::NotFound, "unsupported_api"));
    assert!(d.request.unwrap().route.is_none());
    // Not on the key's list: refused, but the route is recorded.
    let only_claude = [Glob::new("claude-*")];
    let d = request_body(&state, &chat, br#"{"model":"fast"}"#, Some(&only_claude));
    assert_eq!(refusal(&d.verdict), (RefusalKind::Forbidden, "model_not_allowed"));
    let route = d.request.unwrap().route.unwrap();
    assert_eq!((route.provider.name.as_str(), route.upstream_model.as_str()), ("prov-a", "gpt-4o-mini"));
    // Model names are cut for records and messages.
    let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(400));
    assert_eq!(request_body(&state, &chat, long.as_bytes(), None).request.unwrap().model.len(), MAX_MODEL_CHARS);
}

#[test]
fn a_forwarded_body_plans_rewrites_credential_and_reservation() {
    let state = state(json!([{"id": "budget", "scope": "team", "cost_micro_usd_per_window": 10_000_000, "window_secs": 60, "models": ["gpt-*"]}]));
    let chat = endpoint("/v1/chat/completions");
    let body = br#"{"model":"fast","stream":true,"max_tokens":10}"#;
    let d = request_body(&state, &chat, body, None);
    let forward = d.verdict.unwrap();
    let est = (body.len() as u64).div_ceil(4);
    assert_eq!(forward.reserve, Some(Estimate { tokens: est + 10, cost_micro_usd: Some(est * 1000 + 10 * 2000) }));
    assert_eq!(
        forward.body,
        Ok(Some(br#"{"model":"gpt-4o-mini","stream":true,"max_tokens":10,"stream_options":{"include_usage":true}}"#.to_vec()))
    );
    assert!(forward.usage_injected);
    assert_eq!((forward.provider.name.as_str(), forward.path), ("prov-a", None));
    assert_eq!(forward.credential, Some(("authorization", "Bearer sk-a".to_string())));
    // Nothing to change, no limit for claude: no rewrite, no reservation.
    let d = request_body(&state, &endpoint("/v1/messages"), br#"{"model":"claude-3","max_tokens":5}"#, None);
    let forward = d.verdict.unwrap();
    assert_eq!((forward.reserve, forward.body, forward.usage_injected), (None, Ok(None), false));
    assert_eq!(forward.credential, Some(("x-api-key", "sk-b".to_string())));
    // A Gemini alias rewrites the path, never the body.
    let d = request_body(&state, &endpoint("/v1beta/models/gem-fast:generateContent"), br#"{"contents":[]}"#, None);
    let forward = d.verdict.unwrap();
    assert_eq!((forward.body, forward.path.as_deref()), (Ok(None), Some("/v1beta/models/gemini-2.0-flash:generateContent")));
}

#[test]
fn admission_estimates_only_where_a_limit_applies() {
    let state = state(json!([
        {"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "window_secs": 60, "models": ["gpt-*"]}
    ]));
    assert_eq!(admission(&state, "claude-3", "claude-3", 40, None), None);
    // Tokens only: no money budget applies, so no cost is estimated.
    assert_eq!(admission(&state, "gpt-4o", "gpt-4o", 40, None), Some(Estimate { tokens: 10 + 100, cost_micro_usd: None }));
    assert_eq!(admission(&state, "fast", "gpt-4o-mini", 40, Some(7)), Some(Estimate { tokens: 17, cost_micro_usd: None }));
}

#[test]
fn unpriced_deny_refuses_models_a_cost_budget_sees_without_a_price() {
    let cfg = |unpriced: &str| {
        json!({
            "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
            "models": [{"model": "*", "provider": "prov-a"}],
            "prices": [{"model": "gpt-*", "input": 1000, "output": 2000}],
            "unpriced": unpriced,
            "limits": [
                {"id": "budget", "scope": "team", "cost_micro_usd_per_window": 10_000_000, "window": "month", "models": ["gpt-*", "claude-*"]},
                {"id": "tpm", "scope": "team", "tokens_per_window": 1000, "window_secs": 60}
            ]
        })
    };
    let deny = load_with(cfg("deny").to_string().as_bytes(), &|_| None).unwrap();
    let chat = endpoint("/v1/chat/completions");
    let d = request_body(&deny, &chat, br#"{"model":"claude-3"}"#, None);
    assert_eq!(refusal(&d.verdict), (RefusalKind::NotPriced, "model_not_priced"));
    assert!(d.verdict.unwrap_err().message.contains("`claude-3` has no price"));
    assert_eq!(d.request.unwrap().route.unwrap().upstream_model, "claude-3");
    // Priced, or no cost budget applies (only the token limit): forwarded.
    assert!(request_body(&deny, &chat, br#"{"model":"gpt-4o"}"#, None).verdict.is_ok());
    assert!(request_body(&deny, &chat, br#"{"model":"llama-3"}"#, None).verdict.is_ok());
    // `zero`: forwarded, the budget counts 0 for it.
    let zero = load_with(cfg("zero").to_string().as_bytes(), &|_| None).unwrap();
    let forward = request_body(&zero, &chat, br#"{"model":"claude-3"}"#, None).verdict.unwrap();
    assert_eq!(forward.reserve.unwrap().cost_micro_usd, None);
    // The refusal in each client API's shape.
    let body = api::error_body(Some(ClientApi::OpenaiChat), RefusalKind::NotPriced, "m");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["error"]["code"].as_str(), RefusalKind::NotPriced.status()), (Some("model_not_priced"), 403));
}
