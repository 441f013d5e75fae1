//! The gateway's plan and the attempt role, against `MemoryHost`; Envoy's side (override_host,
//! retries, one header map shared by the attempts) is proven in tests/test_llm_fallback.py.

use super::*;
use crate::config::{load_with, Role};
use crate::exchange::Exchange;
use serde_json::{json, Value};
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::testing::callback;

fn config() -> Value {
    json!({
        "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice"}]}},
        "providers": [
            {"name": "oa", "apis": ["openai_chat"], "address": "10.0.0.1:443", "credential": {"value": "sk-oa"},
             "headers": {"x-oa-only": "1"}},
            {"name": "an", "apis": ["anthropic_messages"], "address": "10.0.0.2:443", "credential": {"value": "sk-an"}}
        ],
        "models": [{"model": "smart", "deployments": [
            {"provider": "an", "upstream_model": "claude-x", "priority": 0},
            {"provider": "oa", "upstream_model": "gpt-x", "priority": 1}
        ]}]
    })
}

fn state(role: Role) -> Rc<State> {
    let mut state = load_with(config().to_string().as_bytes(), &|_| None).unwrap();
    state.role = role;
    Rc::new(state)
}

const BODY: &[u8] = br#"{"model":"smart","messages":[{"role":"user","content":"hi"}]}"#;

/// The gateway's request headers for a chat request to `smart`.
fn plan_through_gateway(host: &MemoryHost) {
    let mut ex = Exchange::new(state(Role::Gateway), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(host, false), Step::Pause);
    *host.request_body.borrow_mut() = BODY.to_vec();
    assert_eq!(callback(host, |h| ex.on_request_body(h, BODY.len(), true)), Step::Continue);
}

fn attempt(host: &MemoryHost, number: &str, upstream: &str) -> (AttemptExchange, Step) {
    let mut ex = AttemptExchange::new(state(Role::Attempt), Rc::new(Metrics::new()));
    host.try_set_header(HeaderMap::Request, "x-envoy-attempt-count", Some(number));
    host.set_prop(&["upstream", "address"], upstream.as_bytes());
    let step = ex.on_request_headers(host, false);
    (ex, step)
}

fn gateway_request() -> MemoryHost {
    MemoryHost::with_request_headers(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("authorization", "Bearer tg-alice"),
        ("x-tollgate-hosts", "6.6.6.6:1"),
        ("x-tollgate-plan", "0;0;1;1;/v1/chat/completions"),
    ])
}

#[test]
fn the_gateway_plans_the_attempts_and_replaces_a_clients_plan() {
    let host = gateway_request();
    plan_through_gateway(&host);
    assert_eq!(host.request_header("x-tollgate-provider").as_deref(), Some("deployments"));
    assert_eq!(host.request_header("x-tollgate-hosts").as_deref(), Some("10.0.0.2:443,10.0.0.1:443"));
    let plan = deployments::parse_plan(&host.request_header("x-tollgate-plan").unwrap()).unwrap();
    assert_eq!((plan.virtual_model, plan.stream, plan.order.as_slice()), (0, false, &[0usize, 1][..]));
    assert_eq!(plan.client_path, "/v1/chat/completions");
    assert_eq!(host.request_header("x-envoy-max-retries").as_deref(), Some("1"));
    assert_eq!(host.request_header("x-envoy-retriable-status-codes").as_deref(), Some("429,500,502,503,504,529"));
    // The gateway leaves the body, path and credential to each attempt.
    assert_eq!(host.request_header("authorization"), None);
    assert_eq!(host.request_header(":path").as_deref(), Some("/v1/chat/completions"));
}

#[test]
fn each_attempt_writes_its_own_credential_path_and_clears_the_previous_ones() {
    let host = gateway_request();
    plan_through_gateway(&host);
    // Attempt 1: Anthropic.
    let (_, step) = attempt(&host, "1", "10.0.0.2:443");
    assert_eq!(step, Step::Pause, "the headers wait for the body");
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.request_header(":path").as_deref(), Some("/v1/messages"));
    assert_eq!(host.request_header("x-api-key").as_deref(), Some("sk-an"));
    assert!(host.request_header("x-tollgate-plan").is_some(), "kept for the retry");
    assert_eq!(host.request_header("x-envoy-max-retries"), None);
    // Attempt 2 on the same header map (as Envoy retries): OpenAI, no Anthropic key left.
    let (mut ex, step) = attempt(&host, "2", "10.0.0.1:443");
    assert_eq!(step, Step::Pause);
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.request_header(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(host.request_header("x-api-key"), None);
    assert_eq!(host.request_header("authorization").as_deref(), Some("Bearer sk-oa"));
    assert_eq!(host.request_header("x-oa-only").as_deref(), Some("1"));
    assert_eq!(host.request_header("x-tollgate-plan"), None, "the last attempt sends no plan");
    assert_eq!(host.request_header("x-tollgate-hosts"), None);
    // The same-API attempt rewrites the model and asks for nothing else.
    *host.request_body.borrow_mut() = BODY.to_vec();
    assert_eq!(callback(&host, |h| ex.on_request_body(h, BODY.len(), true)), Step::Continue);
    let sent: Value = serde_json::from_slice(&host.request_body.borrow()).unwrap();
    assert_eq!(sent["model"], "gpt-x");
}

#[test]
fn an_untranslatable_body_is_refused_before_the_headers_go_to_the_provider() {
    let host = gateway_request();
    plan_through_gateway(&host);
    // Attempt 1 (Anthropic) holds the headers: nothing is sent before the body is translated.
    let (mut ex, step) = attempt(&host, "1", "10.0.0.2:443");
    assert_eq!(step, Step::Pause);
    assert!(host.local_reply.borrow().is_none());
    let body = br#"{"model":"smart","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    *host.request_body.borrow_mut() = body.to_vec();
    assert_eq!(callback(&host, |h| ex.on_request_body(h, body.len(), true)), Step::Pause);
    let (status, _, sent) = host.local_reply.borrow().clone().unwrap();
    assert_eq!(status, 400);
    let sent: Value = serde_json::from_slice(&sent).unwrap();
    assert!(sent["error"]["message"].as_str().unwrap().contains("`n`"), "{sent}");
    // A request without a body has nothing to wait for.
    let host = gateway_request();
    plan_through_gateway(&host);
    let mut ex = AttemptExchange::new(state(Role::Attempt), Rc::new(Metrics::new()));
    host.try_set_header(HeaderMap::Request, "x-envoy-attempt-count", Some("1"));
    host.set_prop(&["upstream", "address"], b"10.0.0.2:443");
    assert_eq!(ex.on_request_headers(&host, true), Step::Continue);
}

#[test]
fn without_a_plan_or_on_the_wrong_host_the_attempt_is_refused() {
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions")]);
    let (_, step) = attempt(&host, "1", "10.0.0.1:443");
    assert_eq!(step, Step::Pause);
    let (status, _, body) = host.local_reply.borrow().clone().unwrap();
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("without a Tollgate plan"));

    let host = gateway_request();
    plan_through_gateway(&host);
    let (_, step) = attempt(&host, "1", "10.0.0.1:443");
    assert_eq!(step, Step::Pause, "attempt 1 is the Anthropic deployment, not the OpenAI host");
    assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.0), Some(502));
    assert_eq!(host.request_header("x-api-key"), None, "no credential was set");
}

#[test]
fn a_429_cools_the_deployment_down_and_the_next_plan_puts_it_last() {
    let host = gateway_request();
    plan_through_gateway(&host);
    let (mut ex, _) = attempt(&host, "1", "10.0.0.2:443");
    *host.response_headers.borrow_mut() = vec![(":status".into(), "429".into()), ("retry-after".into(), "7".into())];
    assert_eq!(callback(&host, |h| ex.on_response_headers(h, false)), Step::Continue);
    assert_eq!(host.response_header(deployments::ANSWERED_BY_HEADER).as_deref(), Some("an/claude-x;1;0"));
    let now_ms = host.now_millis();
    assert_eq!(deployments::cooling_until(&host, "an/claude-x"), now_ms + 7000);
    let plan = deployments::parse_plan(&host.request_header("x-tollgate-plan").unwrap()).unwrap();
    assert_eq!(deployments::attempt_log::take(&host, plan.token).first().map(|a| (a.status, a.cooldown_ms)), Some((Some(429), Some(7000))));

    // The next request (same shared data): the OpenAI deployment first.
    let next = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), ("authorization", "Bearer tg-alice")]);
    *next.shared.borrow_mut() = host.shared.borrow().clone();
    *next.clock_nanos.borrow_mut() = *host.clock_nanos.borrow();
    plan_through_gateway(&next);
    assert_eq!(next.request_header("x-tollgate-hosts").as_deref(), Some("10.0.0.1:443,10.0.0.2:443"));
}

#[test]
fn an_attempt_without_response_headers_cools_down_for_the_default() {
    let host = gateway_request();
    plan_through_gateway(&host);
    let (mut ex, _) = attempt(&host, "1", "10.0.0.2:443");
    ex.on_log(&host);
    assert_eq!(deployments::cooling_until(&host, "an/claude-x"), host.now_millis() + 5000);
}
