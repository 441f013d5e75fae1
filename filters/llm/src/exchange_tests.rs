use super::*;
use crate::usage::Tokens;
use crate::config::load_with;
use serde_json::{json, Value};
use tollgate_core::hash::sha256_hex;
use tollgate_core::host::MemoryHost;
use tollgate_core::testing::{callback, drive_ending, Ending};

fn state() -> Rc<State> {
    let cfg = json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice", "team": "payments"},
            {"sha256": sha256_hex(b"tg-bob"), "name": "bob-key", "principal": "bob", "team": "research", "models": ["gpt-*"]}
        ]}},
        "providers": [
            {"name": "prov-a", "credential": {"env": "KEY_A"}, "headers": {"x-extra": "1"}},
            {"name": "prov-b", "apis": ["anthropic_messages", "gemini"], "credential": {"value": "sk-b"}}
        ],
        "models": [
            {"model": "gpt-*", "provider": "prov-a"},
            {"model": "fast", "provider": "prov-a", "upstream_model": "gpt-4o-mini"},
            {"model": "claude-*", "provider": "prov-b"},
            {"model": "gemini-*", "provider": "prov-b"},
            {"model": "gem-fast", "provider": "prov-b", "upstream_model": "gemini-2.0-flash"}
        ],
        "prices": [{"model": "gpt-*", "input": 2.5, "cached_input": 1.25, "output": 10}],
        "max_request_bytes": 2048
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|n| (n == "KEY_A").then(|| "sk-a".into())).unwrap())
}

fn request(path: &str, headers: &[(&str, &str)]) -> MemoryHost {
    let mut all = vec![(":method", "POST"), (":path", path), ("x-request-id", "rid-1")];
    all.extend_from_slice(headers);
    MemoryHost::with_request_headers(&all)
}

fn exchange() -> Exchange {
    Exchange::new(state(), Rc::new(Metrics::new()))
}

fn send_body(ex: &mut Exchange, host: &MemoryHost, body: &[u8]) -> Step {
    *host.request_body.borrow_mut() = body.to_vec();
    callback(host, |h| ex.on_request_body(h, body.len(), true))
}

fn respond(ex: &mut Exchange, host: &MemoryHost, status: &str, content_type: &str, chunks: &[&[u8]]) {
    *host.response_headers.borrow_mut() = vec![(":status".into(), status.into()), ("content-type".into(), content_type.into())];
    assert_eq!(callback(host, |h| ex.on_response_headers(h, false)), Step::Continue);
    for (i, c) in chunks.iter().enumerate() {
        *host.response_body.borrow_mut() = c.to_vec();
        assert_eq!(callback(host, |h| ex.on_response_body(h, c.len(), i + 1 == chunks.len())), Step::Continue);
    }
}

fn audit(host: &MemoryHost) -> Value {
    serde_json::from_slice(&host.prop(&["tollgate.audit"]).expect("audit record")).unwrap()
}

fn local_reply(host: &MemoryHost) -> (u32, Value) {
    let (status, _, body) = host.local_reply.borrow().clone().expect("local reply");
    (status, serde_json::from_slice(&body).unwrap())
}

fn header(host: &MemoryHost, name: &str) -> Option<String> {
    host.request_header(name)
}

#[test]
fn chat_stream_routes_rewrites_injects_and_counts() {
    let host = request(
        "/v1/chat/completions",
        &[("authorization", "Bearer tg-alice"), ("content-length", "99"), ("x-tollgate-provider", "prov-b"),
          ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
    );
    let mut ex = exchange();
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert_eq!(header(&host, "authorization"), None);
    assert_eq!(header(&host, "x-tollgate-provider"), None);
    let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    *host.clock_nanos.borrow_mut() = 5_000_000;
    assert_eq!(send_body(&mut ex, &host, body), Step::Continue);
    let sent: Value = serde_json::from_slice(&host.request_body.borrow()).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(header(&host, "content-length"), Some(host.request_body.borrow().len().to_string()));
    assert_eq!(header(&host, "x-tollgate-provider").as_deref(), Some("prov-a"));
    assert_eq!(header(&host, "authorization").as_deref(), Some("Bearer sk-a"));
    assert_eq!(header(&host, "x-extra").as_deref(), Some("1"));
    assert_eq!(header(&host, "accept-encoding").as_deref(), Some("identity"));
    let tp = header(&host, "traceparent").unwrap();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !tp.contains("00f067aa0ba902b7"));

    // While the request is in flight, filter state holds a provisional record.
    let provisional = audit(&host);
    assert_eq!((provisional["completed"].as_bool(), provisional["estimated"].as_bool()), (Some(false), Some(true)));
    assert_eq!(provisional["error_type"], "incomplete");

    *host.clock_nanos.borrow_mut() = 20_000_000;
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    assert_eq!(ex.on_response_headers(&host, false), Step::Continue);
    let first = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n";
    *host.response_body.borrow_mut() = first.to_vec();
    *host.clock_nanos.borrow_mut() = 30_000_000;
    assert_eq!(ex.on_response_body(&host, first.len(), false), Step::Continue);
    let last = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":100,\"prompt_tokens_details\":{\"cached_tokens\":200}}}\n\ndata: [DONE]\n\n";
    *host.response_body.borrow_mut() = last.to_vec();
    *host.clock_nanos.borrow_mut() = 45_000_000;
    assert_eq!(ex.on_response_body(&host, last.len(), true), Step::Continue);
    // The final record is in filter state before Envoy's access log runs.
    let r = audit(&host);
    assert_eq!(r["layer"], "llm");
    assert_eq!(r["api"], "openai_chat");
    assert_eq!(r["model"], "fast");
    assert_eq!(r["upstream_model"], "gpt-4o-mini");
    assert_eq!(r["provider"], "prov-a");
    assert_eq!(r["team"], "payments");
    assert_eq!(r["identity"]["principal"], "alice");
    assert_eq!(r["stream"], true);
    assert_eq!(r["usage_injected"], true);
    assert_eq!(r["tokens"], json!({"input": 1000, "output": 100, "cached_input": 200, "cache_creation": 0, "reasoning": 0, "total": 1100}));
    assert_eq!(r["estimated"], false);
    // 800 * 2.5 + 200 * 1.25 + 100 * 10 = 2000 + 250 + 1000 micro-dollars
    assert_eq!(r["cost_micro_usd"], 3250);
    assert_eq!(r["priced"], true);
    assert_eq!(r["status"], 200);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["ttfb_ms"], 20);
    assert_eq!(r["ttft_ms"], 30);
    assert_eq!(r["duration_ms"], 45);
    assert_eq!(r["completed"], true);
    assert_eq!(r["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(r["request_id"], "rid-1");
    assert_eq!(host.metric("tollgate.llm.requests"), Some(1));
    assert_eq!(host.metric("tollgate.llm.gen_ai_client_token_usage.token_type.input.team.payments.model.fast.provider.prov-a.upstream_model.gpt-4o-mini.key.alice-key.agent.alice"), Some(1000));
    assert_eq!(host.metric("tollgate.llm.cost_micro_usd.team.payments.model.fast.provider.prov-a.upstream_model.gpt-4o-mini.key.alice-key.agent.alice"), Some(3250));
    // Finishing runs once: on_log after the end changes nothing.
    *host.clock_nanos.borrow_mut() = 99_000_000;
    ex.on_log(&host);
    assert_eq!(audit(&host)["duration_ms"], 45);
    assert_eq!(host.metric("tollgate.llm.gen_ai_client_requests.team.payments.model.fast.provider.prov-a"), Some(1));
}

#[test]
fn refusals_in_each_api_shape() {
    // Unknown key, Anthropic shape.
    let host = request("/v1/messages", &[("x-api-key", "nope")]);
    let mut ex = exchange();
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    let (status, body) = local_reply(&host);
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["decision"].as_str(), r["status"].as_u64(), r["error_type"].as_str()), (Some("deny"), Some(401), Some("unknown_key")));
    assert_eq!(host.metric("tollgate.llm.errors.team.none.model.none.provider.none.error_type.unknown_key"), Some(1));

    // No key at all: 401 too (identity is configured).
    let host = request("/v1/chat/completions", &[]);
    exchange().on_request_headers(&host, false);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));

    // Model not allowed for bob, OpenAI shape.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-bob")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    assert_eq!(send_body(&mut ex, &host, br#"{"model":"fast","messages":[]}"#), Step::Pause);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("model_not_allowed")));

    // Unknown model, Gemini shape.
    let host = request("/v1beta/models/nope:generateContent", &[("x-goog-api-key", "tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"contents":[]}"#);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["status"].as_str(), body["error"]["code"].as_u64()), (404, Some("NOT_FOUND"), Some(404)));

    // Malformed JSON.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, b"{\"model\": ");
    assert_eq!(local_reply(&host).0, 400);
    ex.on_log(&host);
    assert_eq!(audit(&host)["decision"], "error");

    // Model served by a provider that does not speak the API.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"claude-3"}"#);
    assert_eq!(local_reply(&host).0, 404);

    // Too large: by content-length, and by the body itself.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice"), ("content-length", "5000")]);
    assert_eq!(exchange().on_request_headers(&host, false), Step::Pause);
    assert_eq!(local_reply(&host).0, 413);
    let host = request("/v1/messages", &[("x-api-key", "tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    assert_eq!(ex.on_request_body(&host, 1000, false), Step::Pause);
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(ex.on_request_body(&host, 3000, false), Step::Pause);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["type"].as_str()), (413, Some("request_too_large")));

    // Unknown path and wrong method, each in the shape of the path's API.
    let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/v1/files")]);
    exchange().on_request_headers(&host, true);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("invalid_request_error")));
    assert_eq!(audit(&host)["error_type"], "unknown_path");
    assert!(audit(&host).get("api").is_none());
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/v1beta/cachedContents")]);
    exchange().on_request_headers(&host, false);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/v1/messages/batches")]);
    exchange().on_request_headers(&host, false);
    assert_eq!(local_reply(&host).1["error"]["type"], "not_found_error");
    let host = MemoryHost::with_request_headers(&[(":method", "GET"), (":path", "/v1/chat/completions")]);
    exchange().on_request_headers(&host, true);
    assert_eq!(local_reply(&host).0, 405);
    assert_eq!(host.local_reply.borrow().as_ref().map(|r| r.1.clone()).unwrap_or_default().iter().find(|(k, _)| k == "allow").map(|(_, v)| v.as_str()), Some("POST"));
    let host = MemoryHost::with_request_headers(&[(":method", "POST"), (":path", "/v1/models"), ("anthropic-version", "2023-06-01")]);
    exchange().on_request_headers(&host, false);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["type"].as_str()), (405, Some("invalid_request_error")));
    assert_eq!(body["type"], "error");
    assert_eq!((audit(&host)["api"].as_str(), audit(&host)["operation"].as_str()), (Some("anthropic_models"), Some("list_models")));
}

#[test]
fn gemini_query_key_is_moved_and_path_rewritten_for_alias() {
    let host = request("/v1beta/models/gem-fast:streamGenerateContent?alt=sse&key=tg-alice", &[]);
    let mut ex = exchange();
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(header(&host, "x-goog-api-key"), None);
    assert_eq!(send_body(&mut ex, &host, br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#), Step::Continue);
    assert_eq!(header(&host, ":path").as_deref(), Some("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"));
    assert_eq!(header(&host, "x-goog-api-key").as_deref(), Some("sk-b"));
    assert_eq!(header(&host, "x-tollgate-provider").as_deref(), Some("prov-b"));
    // Body untouched for Gemini.
    assert_eq!(&*host.request_body.borrow(), br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#);
    respond(&mut ex, &host, "200", "text/event-stream", &[
        b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}\r\n\r\n",
    ]);
    assert_eq!(ex.tokens().unwrap(), Tokens { input: 3, output: 2, ..Default::default() });
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["stream"].as_bool(), r["upstream_model"].as_str()), (Some(true), Some("gemini-2.0-flash")));
    assert!(r.get("cost_micro_usd").is_none());
}

#[test]
fn upstream_error_passes_through_and_is_recorded() {
    let host = request("/v1/messages", &[("x-api-key", "tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"claude-3","max_tokens":5,"messages":[]}"#);
    assert_eq!(header(&host, "x-api-key").as_deref(), Some("sk-b"));
    respond(&mut ex, &host, "529", "application/json", &[br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#]);
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["status"].as_u64(), r["error"].as_str(), r["error_type"].as_str()), (Some(529), Some("Overloaded"), Some("http_529")));
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["tokens"]["total"], 0);
    assert_eq!(r["estimated"], false);
}

#[test]
fn client_gone_mid_stream_records_an_estimate() {
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello hello"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    send_body(&mut ex, &host, body);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    let chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n\n";
    *host.response_body.borrow_mut() = chunk.to_vec();
    ex.on_response_body(&host, chunk.len(), false);
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!(r["usage_injected"], false);
    assert_eq!(r["estimated"], true);
    assert_eq!(r["completed"], false);
    assert_eq!(r["error_type"], "incomplete");
    assert_eq!(r["tokens"]["input"], (body.len() as u64).div_ceil(4));
    assert_eq!(r["tokens"]["output"], 3);
}

/// Issue 21 item 9: the `openai` SDK closes the response as soon as it reads `[DONE]`; when
/// that reset reaches Envoy before the upstream's end of stream reaches the filter, `on_log`
/// runs without `end_of_stream`. The stream was whole: completed, no `incomplete` error.
#[test]
fn stream_whose_done_passed_is_complete_even_when_the_client_closes_before_the_end() {
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    let chunks: [&[u8]; 2] = [
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
    ];
    for c in chunks {
        *host.response_body.borrow_mut() = c.to_vec();
        assert_eq!(ex.on_response_body(&host, c.len(), false), Step::Continue);
    }
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["completed"].as_bool(), r.get("error_type"), r.get("error")), (Some(true), None, None), "{r}");
    assert_eq!((r["estimated"].as_bool(), r["tokens"]["total"].as_u64()), (Some(false), Some(10)));
    let incomplete = "tollgate.llm.errors.team.payments.model.gpt-4o.provider.prov-a.error_type.incomplete";
    assert_eq!(host.metric(incomplete).unwrap_or(0), 0, "a whole stream is not counted as an error");

    // The same stream cut before `[DONE]` (usage included) is still incomplete.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    let cut = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n";
    *host.response_body.borrow_mut() = cut.to_vec();
    ex.on_response_body(&host, cut.len(), false);
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["completed"].as_bool(), r["error_type"].as_str()), (Some(false), Some("incomplete")), "{r}");
    assert_eq!(host.metric(incomplete), Some(1));
}

#[test]
fn anonymous_when_no_identity_is_configured() {
    let cfg = json!({"providers": [{"name": "p"}], "models": [{"model": "*", "provider": "p"}]});
    let state = Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap());
    let host = request("/v1/responses", &[("authorization", "Bearer whatever")]);
    let mut ex = Exchange::new(state, Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert_eq!(header(&host, "authorization"), None, "client credentials never reach the provider");
    assert_eq!(send_body(&mut ex, &host, br#"{"model":"any","input":"x"}"#), Step::Continue);
    assert_eq!(header(&host, "content-length"), None);
    respond(&mut ex, &host, "200", "application/json", &[br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#]);
    // No price matched: no cost, and the record says so.
    let r = audit(&host);
    assert_eq!((r.get("cost_micro_usd"), &r["priced"]), (None, &json!(false)), "{r}");
}

#[test]
fn jwt_claims_identify_the_caller_and_the_token_is_not_forwarded() {
    let cfg = json!({
        "identity": {"jwt": {"payload_key": "payload", "team_claim": "org.team"}},
        "providers": [{"name": "p", "credential": {"value": "sk-p"}}],
        "models": [{"model": "*", "provider": "p"}]
    });
    let state = Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap());
    assert!(state.require_identity);
    let host = request("/v1/chat/completions", &[("authorization", "Bearer eyJhbGciOi.jwt.sig")]);
    let base = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"];
    host.set_prop(&[&base[..], &["sub"]].concat(), b"carol");
    host.set_prop(&[&base[..], &["org", "team"]].concat(), b"platform");
    let mut ex = Exchange::new(state.clone(), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    assert_eq!(send_body(&mut ex, &host, br#"{"model":"m","messages":[]}"#), Step::Continue);
    assert_eq!(header(&host, "authorization").as_deref(), Some("Bearer sk-p"));
    respond(&mut ex, &host, "200", "application/json", &[br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#]);
    let r = audit(&host);
    assert_eq!((r["identity"]["principal"].as_str(), r["identity"]["source"].as_str(), r["team"].as_str()),
               (Some("carol"), Some("jwt"), Some("platform")));
    // Without claims (jwt_authn let the request through unauthenticated): 401.
    let host = request("/v1/chat/completions", &[]);
    Exchange::new(state, Rc::new(Metrics::new())).on_request_headers(&host, false);
    assert_eq!(local_reply(&host).0, 401);
}

#[test]
fn compressed_responses_are_passed_on_and_estimated() {
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"gpt-4o","messages":[]}"#);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-encoding".into(), "gzip".into())];
    ex.on_response_headers(&host, false);
    *host.response_body.borrow_mut() = vec![0x1f, 0x8b, 8, 0];
    assert_eq!(ex.on_response_body(&host, 4, true), Step::Continue);
    let r = audit(&host);
    assert_eq!((r["estimated"].as_bool(), r["response_bytes"].as_u64()), (Some(true), Some(4)));
}

#[test]
fn provisional_record_follows_the_stream_until_the_end() {
    let host = request("/v1/messages", &[("x-api-key", "tg-alice")]);
    let mut ex = exchange();
    ex.on_request_headers(&host, false);
    send_body(&mut ex, &host, br#"{"model":"claude-3","max_tokens":9,"stream":true,"messages":[]}"#);
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    let feed = |ex: &mut Exchange, at_ms: u64, bytes: &[u8]| {
        *host.clock_nanos.borrow_mut() = at_ms * 1_000_000;
        *host.response_body.borrow_mut() = bytes.to_vec();
        ex.on_response_body(&host, bytes.len(), false);
        audit(&host)
    };
    let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n";
    let delta = b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"abcdefgh\"}}\n\n";
    let before = audit(&host);
    assert_eq!(before["tokens"]["input"], 16, "estimated from the request bytes");
    assert_eq!(feed(&mut ex, 1, start), before, "no content yet, not due: unchanged");
    let r = feed(&mut ex, 2, delta);
    assert_eq!((r["tokens"]["input"].as_u64(), r["tokens"]["output"].as_u64()), (Some(12), Some(2)), "first token");
    assert_eq!(feed(&mut ex, 100, delta)["tokens"]["output"], 2, "throttled");
    assert_eq!(feed(&mut ex, 400, delta)["tokens"]["output"], 6, "due again");
    assert_eq!(r["completed"], false);
}

#[test]
fn a_body_ending_with_trailers_is_routed_at_the_trailers() {
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = exchange();
    let body = br#"{"model":"gpt-4o","messages":[]}"#;
    let json = [(":status", "200"), ("content-type", "application/json")];
    let response = br#"{"id":"c","model":"gpt-4o","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
    let driven = drive_ending(&mut ex, &host, Some(body), &json, &[response], Ending::Trailers);
    assert_eq!(driven.request_trailers, Some(Step::Continue));
    assert_eq!(header(&host, "x-tollgate-provider").as_deref(), Some("prov-a"));
    let record = audit(&host);
    assert_eq!((record["tokens"]["input"].as_u64(), record["tokens"]["output"].as_u64()), (Some(7), Some(3)));
    assert_eq!(record["completed"], true, "trailers end the response: {record}");
}

// ---- limits ------------------------------------------------------------------------

fn limited_state(limits: Value) -> Rc<State> {
    let cfg = json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice", "team": "payments"},
            {"sha256": sha256_hex(b"tg-dave"), "name": "dave-key", "principal": "dave", "team": "payments"},
            {"sha256": sha256_hex(b"tg-bob"), "name": "bob-key", "principal": "bob", "team": "research"}
        ]}},
        "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
        "models": [{"model": "*", "provider": "prov-a"}],
        "prices": [{"model": "gpt-*", "input": 1000, "output": 2000}],
        // Routes every model, prices only gpt-*: unpriced models count 0 (issue 15 item 5).
        "unpriced": "zero",
        "default_max_output_tokens": 100,
        "limits": limits
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap())
}

/// One request up to admission: the exchange, and whether it was forwarded.
fn admit_one(state: &Rc<State>, metrics: &Rc<Metrics>, host: &MemoryHost, body: &[u8]) -> (Exchange, bool) {
    let mut ex = Exchange::new(state.clone(), metrics.clone());
    assert_eq!(ex.on_request_headers(host, false), Step::Pause);
    let step = send_body(&mut ex, host, body);
    (ex, step == Step::Continue)
}

/// Carries the request's state (clock, shared data) over to a fresh request host.
fn next_request(prev: &MemoryHost, path: &str, key_header: (&str, &str)) -> MemoryHost {
    let host = request(path, &[key_header]);
    *host.shared.borrow_mut() = prev.shared.borrow().clone();
    *host.clock_nanos.borrow_mut() = *prev.clock_nanos.borrow();
    *host.metrics.borrow_mut() = prev.metrics.borrow().clone();
    host
}

fn chat_body(max_tokens: u64) -> Vec<u8> {
    format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#).into_bytes()
}

fn used(host: &MemoryHost, key: &str) -> u64 {
    tollgate_core::shared_data::window_counter::usage(host, key, tollgate_core::shared_data::window::Window::fixed(3600))
}

const TOKENS: &str = "tollgate.llm.limit.tpm.alice.tokens";

#[test]
fn admission_reserves_the_estimate_and_refuses_in_each_api_shape() {
    let state = limited_state(json!([{"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "window_secs": 3600}]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    *host.clock_nanos.borrow_mut() = 7_200_000_000_000 + 600_000_000_000; // 10 minutes into an hour
    let body = chat_body(500);
    let est = (body.len() as u64).div_ceil(4) + 500;
    let (mut first, forwarded) = admit_one(&state, &metrics, &host, &body);
    assert!(forwarded);
    assert_eq!(used(&host, TOKENS), est);
    assert_eq!(audit(&host)["reserved"], json!({"tokens": est}));

    // While the first holds its reservation, the same request again does not fit.
    let h2 = next_request(&host, "/v1/chat/completions", ("authorization", "Bearer tg-alice"));
    let (mut second, forwarded) = admit_one(&state, &metrics, &h2, &body);
    assert!(!forwarded);
    assert_eq!(header(&h2, "x-tollgate-provider"), None, "never routed");
    let (status, headers, reply) = h2.local_reply.borrow().clone().unwrap();
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".into(), "3000".into())), "{headers:?}");
    assert!(headers.contains(&("x-tollgate-ratelimit-remaining-tokens".into(), (1000 - est).to_string())), "{headers:?}");
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!((reply["error"]["type"].as_str(), reply["error"]["code"].as_str()), (Some("tokens"), Some("rate_limit_exceeded")));
    assert!(reply["error"]["message"].as_str().unwrap().contains(&format!("used {est}")), "{reply}");
    second.on_log(&h2);
    let r = audit(&h2);
    assert_eq!((r["decision"].as_str(), r["rule_id"].as_str(), r["error_type"].as_str(), r["status"].as_u64()),
               (Some("deny"), Some("tpm"), Some("rate_limited"), Some(429)));
    assert_eq!(r["limit"], json!({"id": "tpm", "scope": "principal", "dimension": "tokens", "limit": 1000, "used": est,
                                  "requested": est, "window_secs": 3600, "reset_secs": 3000}));
    assert_eq!(r["tokens"]["total"], 0);
    assert_eq!(h2.metric("tollgate.llm.limit_refusals.limit.tpm.team.payments"), Some(1));
    assert_eq!(h2.metric("tollgate.llm.errors.team.payments.model.gpt-4o.provider.prov-a.error_type.rate_limited"), Some(1));
    assert_eq!(used(&h2, TOKENS), est, "the refused request reserved nothing");

    // Anthropic and Gemini shapes.
    let h3 = next_request(&h2, "/v1/messages", ("x-api-key", "tg-alice"));
    let (_, forwarded) = admit_one(&state, &metrics, &h3, br#"{"model":"claude-3","max_tokens":900,"messages":[]}"#);
    assert!(!forwarded);
    let (status, reply) = local_reply(&h3);
    assert_eq!((status, reply["type"].as_str(), reply["error"]["type"].as_str()), (429, Some("error"), Some("rate_limit_error")));
    let h4 = next_request(&h3, "/v1beta/models/gemini-x:generateContent", ("x-goog-api-key", "tg-alice"));
    // No maxOutputTokens: default_max_output_tokens (100) is reserved... which still fits.
    let (mut gem, forwarded) = admit_one(&state, &metrics, &h4, br#"{"contents":[]}"#);
    assert!(forwarded);
    assert_eq!(audit(&h4)["reserved"]["tokens"], 4 + 100);
    gem.on_log(&h4);
    let h5 = next_request(&h4, "/v1beta/models/gemini-x:generateContent", ("x-goog-api-key", "tg-alice"));
    let (_, forwarded) = admit_one(&state, &metrics, &h5, br#"{"contents":[],"generationConfig":{"maxOutputTokens":2000}}"#);
    assert!(!forwarded);
    // 2000 tokens can never fit a 1000-token cap: 400 in the API's shape, no Retry-After.
    let (status, headers, reply) = h5.local_reply.borrow().clone().unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!((status, reply["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert!(reply["error"]["message"].as_str().unwrap().contains("more than the 1000 tokens allowed"), "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("retrying will not help"), "{reply}");
    assert!(!headers.iter().any(|(name, _)| name == "retry-after"), "{headers:?}");
    assert!(headers.contains(&("x-tollgate-ratelimit-limit-tokens".into(), "1000".into())), "{headers:?}");

    // The same in OpenAI's and Anthropic's shapes, recorded as `exceeds_limit`, nothing reserved.
    let h7 = next_request(&h5, "/v1/chat/completions", ("authorization", "Bearer tg-alice"));
    let (mut never, forwarded) = admit_one(&state, &metrics, &h7, &chat_body(1000));
    assert!(!forwarded);
    let (status, reply) = local_reply(&h7);
    assert_eq!((status, reply["error"]["type"].as_str(), reply["error"]["code"].as_str()),
               (400, Some("invalid_request_error"), Some("request_exceeds_limit")));
    never.on_log(&h7);
    let r = audit(&h7);
    assert_eq!((r["decision"].as_str(), r["rule_id"].as_str(), r["error_type"].as_str(), r["status"].as_u64()),
               (Some("deny"), Some("tpm"), Some("exceeds_limit"), Some(400)));
    assert_eq!((r["limit"]["limit"].as_u64(), r["limit"]["used"].as_u64()), (Some(1000), Some(0)), "{r}");
    assert_eq!(h7.metric("tollgate.llm.errors.team.payments.model.gpt-4o.provider.prov-a.error_type.exceeds_limit"), Some(1));
    assert_eq!(used(&h7, TOKENS), used(&h5, TOKENS), "nothing reserved for it");
    let h8 = next_request(&h7, "/v1/messages", ("x-api-key", "tg-alice"));
    assert!(!admit_one(&state, &metrics, &h8, br#"{"model":"claude-3","max_tokens":5000,"messages":[]}"#).1);
    let (status, reply) = local_reply(&h8);
    assert_eq!((status, reply["error"]["type"].as_str()), (400, Some("invalid_request_error")));

    // Bob is another principal: his own counter.
    let h6 = next_request(&h8, "/v1/chat/completions", ("authorization", "Bearer tg-bob"));
    assert!(admit_one(&state, &metrics, &h6, &body).1);
    first.on_log(&host);
}

#[test]
fn reconciliation_at_the_end_frees_the_unused_reservation_once() {
    let state = limited_state(json!([{"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "window_secs": 3600}]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let body = chat_body(900);
    let est = (body.len() as u64).div_ceil(4) + 900;
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, &body);
    assert!(forwarded);
    respond(&mut ex, &host, "200", "application/json", &[br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#]);
    // Client headers: the tightest limit as of admission.
    assert_eq!(host.response_header("x-tollgate-ratelimit-limit-tokens").as_deref(), Some("1000"));
    assert_eq!(host.response_header("x-tollgate-ratelimit-remaining-tokens"), Some((1000 - est).to_string()));
    assert_eq!(used(&host, TOKENS), 12, "reconciled at the response's end");
    // on_log and on_done after that change nothing.
    ex.on_log(&host);
    ex.on_done(&host);
    assert_eq!(used(&host, TOKENS), 12);
    // The freed capacity admits the next 900-token request (12 + est <= 1000).
    let h2 = next_request(&host, "/v1/chat/completions", ("authorization", "Bearer tg-alice"));
    let (mut ex2, forwarded) = admit_one(&state, &metrics, &h2, &body);
    assert!(forwarded);
    assert_eq!(used(&h2, TOKENS), 12 + est);
    // An upstream error: the tokens come back, the request still counts... (no request cap here)
    respond(&mut ex2, &h2, "503", "application/json", &[br#"{"error":{"message":"down"}}"#]);
    assert_eq!(used(&h2, TOKENS), 12);
    assert_eq!(h2.response_header("x-tollgate-ratelimit-remaining-tokens"), None, "only on success");
}

#[test]
fn streams_are_reconciled_at_their_end_or_when_abandoned() {
    let state = limited_state(json!([
        {"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "window_secs": 3600},
        {"id": "rpm", "scope": "key", "requests_per_window": 10, "window_secs": 3600}
    ]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":800}"#;
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, body);
    assert!(forwarded);
    let est = (body.len() as u64).div_ceil(4) + 800;
    *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex.on_response_headers(&host, false);
    assert_eq!(host.response_header("x-tollgate-ratelimit-remaining-requests").as_deref(), Some("9"));
    let chunk = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n";
    *host.response_body.borrow_mut() = chunk.to_vec();
    ex.on_response_body(&host, chunk.len(), false);
    assert_eq!(used(&host, TOKENS), est, "held while the stream runs");
    let last = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":21}}\n\ndata: [DONE]\n\n";
    *host.response_body.borrow_mut() = last.to_vec();
    ex.on_response_body(&host, last.len(), true);
    assert_eq!(used(&host, TOKENS), 30);
    assert_eq!(used(&host, "tollgate.llm.limit.rpm.alice-key.requests"), 1);
    ex.on_log(&host);
    assert_eq!(used(&host, TOKENS), 30);

    // Abandoned mid-stream: on_log reconciles with the estimate the record shows.
    let h2 = next_request(&host, "/v1/chat/completions", ("authorization", "Bearer tg-alice"));
    let (mut ex2, _) = admit_one(&state, &metrics, &h2, body);
    *h2.response_headers.borrow_mut() = vec![(":status".into(), "200".into()), ("content-type".into(), "text/event-stream".into())];
    ex2.on_response_headers(&h2, false);
    *h2.response_body.borrow_mut() = chunk.to_vec();
    ex2.on_response_body(&h2, chunk.len(), false);
    ex2.on_log(&h2);
    let r = audit(&h2);
    assert_eq!(r["estimated"], true);
    assert_eq!(used(&h2, TOKENS), 30 + r["tokens"]["total"].as_u64().unwrap());
    ex2.on_done(&h2);
    assert_eq!(used(&h2, TOKENS), 30 + r["tokens"]["total"].as_u64().unwrap());
    assert_eq!(used(&h2, "tollgate.llm.limit.rpm.alice-key.requests"), 2);
}

#[test]
fn team_budget_in_money_and_overshoot_is_recorded() {
    // gpt-*: 1000 micro-USD per input token, 2000 per output token.
    let state = limited_state(json!([{"id": "team-budget", "scope": "team", "cost_micro_usd_per_window": 200000, "window_secs": 2592000}]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let body = chat_body(10);
    let in_est = (body.len() as u64).div_ceil(4);
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, &body);
    assert!(forwarded);
    assert_eq!(audit(&host)["reserved"], json!({"tokens": in_est + 10, "cost_micro_usd": in_est * 1000 + 10 * 2000}));
    // The provider wrote far more than max_tokens said: real cost above the reservation.
    respond(&mut ex, &host, "200", "application/json", &[br#"{"usage":{"prompt_tokens":50,"completion_tokens":100}}"#]);
    let r = audit(&host);
    assert_eq!(r["cost_micro_usd"], 250_000);
    assert_eq!(r["limits_overshot"], json!(["team-budget"]));
    assert_eq!(host.metric("tollgate.llm.limit_overshoots.limit.team-budget.team.payments"), Some(1));
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.llm.limit.team-budget.payments.cost", tollgate_core::shared_data::window::Window::fixed(2592000)), 250_000);
    // Spent: dave (same team) is refused; bob (another team) is not.
    let h2 = next_request(&host, "/v1/chat/completions", ("authorization", "Bearer tg-dave"));
    let (mut refused, forwarded) = admit_one(&state, &metrics, &h2, &body);
    assert!(!forwarded);
    let (_, reply) = local_reply(&h2);
    assert_eq!(reply["error"]["type"], "cost");
    refused.on_log(&h2);
    assert_eq!(audit(&h2)["limit"]["dimension"], "cost_micro_usd");
    let h3 = next_request(&h2, "/v1/chat/completions", ("authorization", "Bearer tg-bob"));
    assert!(admit_one(&state, &metrics, &h3, &body).1);
}
#[test]
fn a_chat_completion_stays_within_its_host_call_budget() {
    // Each host call costs about 1-2 µs inside Envoy (bench/README.md): this pins what one
    // routed, accounted, priced chat completion spends (the `make bench` workload).
    let headers = [("authorization", "Bearer tg-alice"), ("content-type", "application/json")];
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":64}"#;
    let response = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
    let state = state();
    let metrics = Rc::new(Metrics::new());
    let json = [(":status", "200"), ("content-type", "application/json")];
    for _ in 0..tollgate_core::testing::profile_rounds() {
        let host = request("/v1/chat/completions", &headers);
        host.quiet.set(true);
        tollgate_core::testing::drive(&mut Exchange::new(state.clone(), metrics.clone()), &host, Some(body), &json, &[response]);
    }
    let host = request("/v1/chat/completions", &headers);
    let mut ex = Exchange::new(state, metrics);
    let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "application/json")], &[response]);
    assert_eq!(driven.request_body, Some(Step::Continue));
    assert_eq!(audit(&host)["tokens"]["input"], 9, "accounted");
    let calls: Vec<String> = host.calls.borrow().iter().filter(|c| !c.starts_with("define_metric")).cloned().collect();
    let named = |name: &str| calls.iter().filter(|c| c.split(' ').next() == Some(name)).count();
    assert_eq!(named("header"), 0, "{calls:#?}");
    assert!(named("headers") <= 3, "{calls:#?}");
    // +2 on the response: the gateway's x-request-id and traceparent (core observe::correlate).
    assert!(named("set_header") + named("set_headers") <= 5, "{calls:#?}");
    // The record written when the request is forwarded (for a client that leaves), then the final one.
    assert_eq!(named("set_property"), 2, "{calls:#?}");
    assert!(named("random_bytes") <= 1, "{calls:#?}");
    assert!(named("now_nanos") <= 5, "{calls:#?}");
    assert!(calls.len() <= 26, "{} host calls: {calls:#?}", calls.len());
}

// ---- Limits counted in the fleet-wide store (fleet.rs): the request waits for its answer.

fn fleet_state(on_failure: &str) -> Rc<State> {
    let cfg = json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice", "team": "payments"}
        ]}},
        "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
        "models": [{"model": "*", "provider": "prov-a"}],
        "prices": [{"model": "gpt-*", "input": 1000, "output": 2000}],
        "default_max_output_tokens": 100,
        "store": {"cluster": "tollgate_limits", "timeout_ms": 150},
        "limits": [
            {"id": "team-month", "scope": "team", "tokens_per_window": 100000, "window": "month", "on_store_failure": on_failure},
            {"id": "local-rpm", "scope": "principal", "requests_per_window": 5, "window_secs": 60, "counters": "local"}
        ]
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap())
}

/// A `RateLimitResponse`: OK or OVER_LIMIT, one status with what remains.
fn store_answer(over: bool, remaining: u64) -> Vec<u8> {
    use tollgate_core::wire::protobuf::Writer;
    let mut status = Writer::new();
    status.uint(1, if over { 2 } else { 1 }).uint(3, remaining);
    let mut reset = Writer::new();
    reset.uint(1, 42);
    status.message(4, &reset);
    let mut at = Writer::new();
    at.string(1, "x-tollgate-reserved-at").string(2, "1767225600000");
    let mut w = Writer::new();
    w.uint(1, if over { 2 } else { 1 }).message(2, &status).message(3, &at);
    w.finish()
}

/// Issue 21 item 7: a request over a fleet limit's cap by itself is refused at once, 400,
/// without asking the store or taking the local counters.
#[test]
fn a_request_over_a_fleet_cap_by_itself_never_reaches_the_store() {
    let state = fleet_state("fail_closed");
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, &chat_body(200_000));
    assert!(!forwarded);
    assert!(host.grpc_calls.borrow().is_empty(), "the store was not asked");
    assert!(host.shared.borrow().keys().all(|k| !k.contains("local-rpm")), "no local counter taken");
    let (status, headers, reply) = host.local_reply.borrow().clone().unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("request_exceeds_limit")));
    assert!(!headers.iter().any(|(name, _)| name == "retry-after"), "{headers:?}");
    ex.on_log(&host);
    let r = audit(&host);
    assert_eq!((r["rule_id"].as_str(), r["error_type"].as_str()), (Some("team-month"), Some("exceeds_limit")));
}

#[test]
fn a_fleet_limit_holds_the_request_until_the_store_admits_it() {
    let state = fleet_state("fail_closed");
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let body = chat_body(500);
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, &body);
    assert!(!forwarded, "paused for the store");
    assert_eq!(header(&host, "x-tollgate-provider"), None, "not routed yet");
    let calls = host.grpc_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("tollgate_limits", "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"));
    // The local limit was taken here; the fleet one is the store's.
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.llm.limit.local-rpm.alice.requests", tollgate_core::shared_data::window::Window::fixed(60)), 1);
    assert!(host.shared.borrow().keys().all(|k| !k.contains("team-month")), "fleet counters are not kept locally");

    callback(&host, |h| ex.on_grpc_response(h, 1, Ok(&store_answer(false, 99_000))));
    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);
    assert_eq!(header(&host, "x-tollgate-provider").as_deref(), Some("prov-a"));
    assert_eq!(header(&host, "authorization").as_deref(), Some("Bearer sk-a"));

    // The response used less than the estimate: the unused part goes back through the outbox.
    let _ = tollgate_core::fleet::outbox::take();
    respond(&mut ex, &host, "200", "application/json", &[br#"{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#]);
    let (queued, _) = tollgate_core::fleet::outbox::take();
    assert_eq!(queued.len(), 1);
    assert_eq!((queued[0].service, queued[0].method), ("tollgate.limits.v1.Settlement", "Settle"));
    let r = audit(&host);
    assert_eq!(r["decision"], "allow");
    assert!(r.get("limits_degraded").is_none());
}

#[test]
fn the_store_refuses_in_the_client_apis_shape() {
    let state = fleet_state("fail_closed");
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/messages", &[("x-api-key", "tg-alice")]);
    let (mut ex, _) = admit_one(&state, &metrics, &host, br#"{"model":"claude-3","max_tokens":900,"messages":[]}"#);
    callback(&host, |h| ex.on_grpc_response(h, 1, Ok(&store_answer(true, 300))));
    assert!(host.resumed.borrow().is_empty(), "never forwarded");
    let (status, reply) = local_reply(&host);
    assert_eq!((status, reply["error"]["type"].as_str()), (429, Some("rate_limit_error")));
    assert!(reply["error"]["message"].as_str().unwrap().contains("calendar month (UTC)"), "{reply}");
    let (_, headers, _) = host.local_reply.borrow().clone().unwrap();
    assert!(headers.contains(&("retry-after".into(), "42".into())), "{headers:?}");
    let r = audit(&host);
    assert_eq!((r["rule_id"].as_str(), r["limit"]["used"].as_u64()), (Some("team-month"), Some(100_000 - 300)));
    // The local reservation taken before the store answered was returned.
    assert_eq!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.llm.limit.local-rpm.alice.requests", tollgate_core::shared_data::window::Window::fixed(60)), 0);
}

#[test]
fn a_silent_store_fails_closed_or_counts_locally_as_configured() {
    let metrics = Rc::new(Metrics::new());
    let failure = || Err(tollgate_core::stream::GrpcFailure { status: 14, message: "no healthy upstream".into() });

    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let (mut ex, _) = admit_one(&fleet_state("fail_closed"), &metrics, &host, &chat_body(10));
    callback(&host, |h| ex.on_grpc_response(h, 1, failure()));
    let (status, reply) = local_reply(&host);
    assert_eq!(status, 429);
    assert!(reply["error"]["message"].as_str().unwrap().contains("cannot be checked right now"), "{reply}");
    assert!(host.resumed.borrow().is_empty());

    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let (mut ex, _) = admit_one(&fleet_state("fail_open_local"), &metrics, &host, &chat_body(10));
    // An answer to another call is not this request's.
    callback(&host, |h| ex.on_grpc_response(h, 9, Ok(&store_answer(false, 1))));
    assert!(host.resumed.borrow().is_empty());
    callback(&host, |h| ex.on_grpc_response(h, 1, failure()));
    assert_eq!(*host.resumed.borrow(), vec![Direction::Request]);
    assert!(host.local_reply.borrow().is_none());
    let month = tollgate_core::shared_data::window::Window::parse("month").unwrap();
    assert!(tollgate_core::shared_data::window_counter::usage(&host, "tollgate.llm.limit.team-month.payments.tokens", month) > 0, "counted locally");
    ex.on_log(&host);
    assert_eq!(audit(&host)["limits_degraded"], true);

    // A store that cannot even be called: the same policy, at once.
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    host.grpc_refused.set(true);
    let (_, forwarded) = admit_one(&fleet_state("fail_closed"), &metrics, &host, &chat_body(10));
    assert!(!forwarded);
    assert_eq!(local_reply(&host).0, 429);
}

// ---- the gateway's own endpoints, embeddings, count_tokens ---------------------------

fn get(path: &str, headers: &[(&str, &str)]) -> MemoryHost {
    let mut all = vec![(":method", "GET"), (":path", path)];
    all.extend_from_slice(headers);
    MemoryHost::with_request_headers(&all)
}

#[test]
fn the_model_list_is_answered_here_for_the_callers_key() {
    let mut ex = exchange();
    let host = get("/v1/models", &[("authorization", "Bearer tg-alice")]);
    assert_eq!(ex.on_request_headers(&host, true), Step::Pause);
    let (status, body) = local_reply(&host);
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fast", "gem-fast"], "exact names and aliases only (globs cannot be listed)");
    assert_eq!(header(&host, "x-tollgate-provider"), None, "never routed");
    let r = audit(&host);
    assert_eq!((r["api"].as_str(), r["operation"].as_str(), r["status"].as_u64(), r["decision"].as_str()),
               (Some("openai_models"), Some("list_models"), Some(200), Some("allow")));
    assert_eq!((r["tokens"]["total"].as_u64(), r.get("provider"), r.get("cost_micro_usd")), (Some(0), None, None));
    assert_eq!(r["identity"]["principal"], "alice");
    // The record is final: later callbacks change nothing and nothing is forwarded.
    assert_eq!(ex.on_request_body(&host, 0, true), Step::Pause);

    // Bob's key allows gpt-* only; Anthropic's shape for an Anthropic client.
    let host = get("/v1/models", &[("x-api-key", "tg-bob"), ("anthropic-version", "2023-06-01")]);
    exchange().on_request_headers(&host, true);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body), (200, json!({"data": [], "has_more": false, "first_id": null, "last_id": null})));
    assert_eq!(audit(&host)["api"], "anthropic_models");

    // Gemini, with the key in the query; the single model; 404 for one not listed.
    let host = get("/v1beta/models/gem-fast?key=tg-alice", &[]);
    exchange().on_request_headers(&host, true);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["name"].as_str()), (200, Some("models/gem-fast")));
    let host = get("/v1/models/gpt-4o", &[("authorization", "Bearer tg-alice")]);
    exchange().on_request_headers(&host, true);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")));
    assert_eq!(audit(&host)["error_type"], "unknown_model");

    // Identity is required as for every other request.
    let host = get("/v1beta/models", &[]);
    exchange().on_request_headers(&host, true);
    let (status, body) = local_reply(&host);
    assert_eq!((status, body["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    assert_eq!((audit(&host)["api"].as_str(), audit(&host)["error_type"].as_str()), (Some("gemini_models"), Some("missing_key")));
}

#[test]
fn embeddings_are_charged_for_input_only() {
    let state = limited_state(json!([{"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "window_secs": 3600}]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/embeddings", &[("authorization", "Bearer tg-alice")]);
    let body = br#"{"model":"gpt-embed","input":["one","two"]}"#;
    let (mut ex, forwarded) = admit_one(&state, &metrics, &host, body);
    assert!(forwarded);
    let est = (body.len() as u64).div_ceil(4);
    assert_eq!(used(&host, TOKENS), est, "no output tokens reserved");
    assert_eq!(header(&host, "authorization").as_deref(), Some("Bearer sk-a"));
    respond(&mut ex, &host, "200", "application/json", &[
        br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"gpt-embed","usage":{"prompt_tokens":6,"total_tokens":6}}"#,
    ]);
    assert_eq!(used(&host, TOKENS), 6);
    let r = audit(&host);
    assert_eq!((r["api"].as_str(), r["operation"].as_str()), (Some("openai_embeddings"), Some("embeddings")));
    assert_eq!((r["tokens"]["input"].as_u64(), r["tokens"]["output"].as_u64(), r["estimated"].as_bool()), (Some(6), Some(0), Some(false)));
    // Priced with the input price: 6 tokens at $1000 per million = 6000 micro-USD.
    assert_eq!(r["cost_micro_usd"], 6000);

    // Gemini embedContent reports no usage: estimated from the request's bytes.
    let h2 = next_request(&host, "/v1beta/models/gpt-embed:embedContent", ("x-goog-api-key", "tg-alice"));
    let body = br#"{"content":{"parts":[{"text":"embed this text"}]}}"#;
    let (mut ex, forwarded) = admit_one(&state, &metrics, &h2, body);
    assert!(forwarded);
    respond(&mut ex, &h2, "200", "application/json", &[br#"{"embedding":{"values":[0.1,0.2,0.3]}}"#]);
    let r = audit(&h2);
    assert_eq!((r["api"].as_str(), r["operation"].as_str()), (Some("gemini"), Some("embeddings")));
    assert_eq!((r["tokens"]["input"].as_u64(), r["tokens"]["output"].as_u64(), r["estimated"].as_bool()),
               (Some((body.len() as u64).div_ceil(4)), Some(0), Some(true)));
}

#[test]
fn count_tokens_is_checked_and_recorded_but_never_reserved_or_charged() {
    let limited = limited_state(json!([{"id": "tpm", "scope": "principal", "tokens_per_window": 1000, "requests_per_window": 1, "window_secs": 3600}]));
    let metrics = Rc::new(Metrics::new());
    let host = request("/v1/messages/count_tokens", &[("x-api-key", "tg-alice")]);
    let body = br#"{"model":"claude-3","messages":[{"role":"user","content":"count me"}]}"#;
    let (mut ex, forwarded) = admit_one(&limited, &metrics, &host, body);
    assert!(forwarded);
    assert_eq!(header(&host, "x-tollgate-provider").as_deref(), Some("prov-a"));
    assert_eq!(used(&host, TOKENS), 0);
    respond(&mut ex, &host, "200", "application/json", &[br#"{"input_tokens":12}"#]);
    let r = audit(&host);
    assert_eq!((r["api"].as_str(), r["operation"].as_str()), (Some("anthropic_messages"), Some("count_tokens")));
    assert_eq!((r["tokens"]["total"].as_u64(), r["estimated"].as_bool(), r.get("reserved")), (Some(0), Some(false), None));
    assert_eq!(used(&host, TOKENS), 0);
    assert_eq!(used(&host, "tollgate.llm.limit.tpm.alice.requests"), 0, "not a request against the limits");

    // Gemini countTokens, twice: the one-request limit never applies.
    let mut prev = host;
    for _ in 0..2 {
        let h = next_request(&prev, "/v1beta/models/gemini-x:countTokens", ("x-goog-api-key", "tg-alice"));
        let (mut ex, forwarded) = admit_one(&limited, &metrics, &h, br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#);
        assert!(forwarded);
        respond(&mut ex, &h, "200", "application/json", &[br#"{"totalTokens":3}"#]);
        assert_eq!((audit(&h)["operation"].as_str(), audit(&h)["tokens"]["total"].as_u64()), (Some("count_tokens"), Some(0)));
        prev = h;
    }
    // Still key-checked and model-checked.
    let h = request("/v1/messages/count_tokens", &[("x-api-key", "tg-bob")]);
    let mut ex = exchange();
    ex.on_request_headers(&h, false);
    send_body(&mut ex, &h, body);
    let (status, reply) = local_reply(&h);
    assert_eq!((status, reply["error"]["type"].as_str()), (403, Some("permission_error")));
    assert_eq!(audit(&h)["operation"], "count_tokens");
}

#[test]
fn a_gemini_batch_through_an_alias_names_the_upstream_model_everywhere() {
    let host = request("/v1beta/models/gem-fast:batchEmbedContents", &[("x-goog-api-key", "tg-alice"), ("content-length", "10")]);
    let mut ex = exchange();
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    let body = br#"{"requests":[{"model":"models/gem-fast","content":{"parts":[{"text":"a"}]}}]}"#;
    assert_eq!(send_body(&mut ex, &host, body), Step::Continue);
    assert_eq!(header(&host, ":path").as_deref(), Some("/v1beta/models/gemini-2.0-flash:batchEmbedContents"));
    let sent = host.request_body.borrow().clone();
    assert_eq!(sent, br#"{"requests":[{"model":"models/gemini-2.0-flash","content":{"parts":[{"text":"a"}]}}]}"#);
    assert_eq!(header(&host, "content-length"), Some(sent.len().to_string()));
}

fn cached_state() -> Rc<State> {
    let cfg = json!({
        "identity": {"api_keys": {"keys": [
            {"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice", "team": "payments"},
            {"sha256": sha256_hex(b"tg-bob"), "name": "bob-key", "principal": "bob", "team": "research"}
        ]}},
        "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
        "models": [{"model": "gpt-*", "provider": "prov-a"}],
        "prices": [{"model": "gpt-*", "input": 2.5, "output": 10}],
        "limits": [{"id": "one-request", "scope": "team", "requests_per_window": 1, "window_secs": 60}],
        "cache": {"ttl_secs": 60}
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap())
}

/// One chat request through a gateway sharing `shared` (the cache lives in shared data).
fn cached_chat(shared: &MemoryHost, key: &str, body: &[u8], extra: &[(&str, &str)]) -> (MemoryHost, Value) {
    cached_chat_answered(shared, key, body, extra, "200")
}

fn cached_chat_answered(shared: &MemoryHost, key: &str, body: &[u8], extra: &[(&str, &str)], status: &str) -> (MemoryHost, Value) {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let host = request("/v1/chat/completions", &headers);
    *host.shared.borrow_mut() = shared.shared.borrow().clone();
    let mut ex = Exchange::new(cached_state(), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    let step = send_body(&mut ex, &host, body);
    if step == Step::Continue {
        let answer = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
        respond(&mut ex, &host, status, "application/json", &[answer]);
    }
    *shared.shared.borrow_mut() = host.shared.borrow().clone();
    let record = audit(&host);
    (host, record)
}

#[test]
fn a_deterministic_request_is_answered_from_the_cache_the_second_time_for_its_team_only() {
    let shared = MemoryHost::new();
    let body = br#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let (first, rec) = cached_chat(&shared, "tg-alice", body, &[]);
    assert!(first.local_reply.borrow().is_none(), "the first request goes to the provider");
    assert_eq!(rec["cache"], "miss");
    assert_eq!(first.response_header("x-tollgate-cache").as_deref(), Some("miss"));
    let cost = rec["cost_micro_usd"].as_u64().unwrap();

    // Same request, members reordered: a hit, even though the team's one request per window
    // is used up (a hit costs nothing against limits).
    let reordered = br#"{"messages":[{"content":"hi","role":"user"}],"temperature":0,"model":"gpt-4o"}"#;
    let (second, rec) = cached_chat(&shared, "tg-alice", reordered, &[]);
    let (status, headers, answer) = second.local_reply.borrow().clone().expect("answered from the cache");
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(k, v)| k == "x-tollgate-cache" && v == "hit"), "{headers:?}");
    assert!(String::from_utf8_lossy(&answer).contains(r#""content":"hi""#));
    assert_eq!((rec["cache"].as_str(), rec["cache_saved_micro_usd"].as_u64()), (Some("hit"), Some(cost)));
    assert_eq!(rec["tokens"]["total"], 0);
    assert_eq!(rec["status"], 200);

    // Another team misses (and its one request is taken by the provider call).
    let (third, rec) = cached_chat(&shared, "tg-bob", body, &[]);
    assert!(third.local_reply.borrow().is_none());
    assert_eq!(rec["cache"], "miss");

    // no-cache: not read; no-store: not even looked at.
    let (fourth, rec) = cached_chat(&shared, "tg-alice", body, &[("cache-control", "no-store")]);
    assert!(fourth.local_reply.borrow().as_ref().is_some_and(|r| r.0 == 429), "no cache, so the limit applies");
    assert!(rec.get("cache").is_none());
}

#[test]
fn a_non_deterministic_request_or_an_error_is_never_cached() {
    let shared = MemoryHost::new();
    let warm = br#"{"model":"gpt-4o","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, rec) = cached_chat(&shared, "tg-alice", warm, &[]);
    assert!(rec.get("cache").is_none());
    let cold = br#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, rec) = cached_chat_answered(&shared, "tg-bob", cold, &[], "500");
    assert_eq!(rec["cache"], "miss");
    assert!(shared.shared.borrow().keys().all(|k| !k.starts_with("tollgate.llm.cache.")), "nothing stored");
}

fn moderated_state(on_failure: &str) -> Rc<State> {
    let cfg = json!({
        "identity": {"api_keys": {"keys": [{"sha256": sha256_hex(b"tg-alice"), "name": "alice-key", "principal": "alice", "team": "payments"}]}},
        "providers": [{"name": "prov-a", "credential": {"value": "sk-a"}}],
        "models": [{"model": "gpt-*", "provider": "prov-a"}],
        "guardrails": {"moderation": {"cluster": "moderation", "model": "omni-moderation-latest", "on_failure": on_failure, "status": 422}}
    });
    Rc::new(load_with(cfg.to_string().as_bytes(), &|_| None).unwrap())
}

fn moderated_request(on_failure: &str) -> (Exchange, MemoryHost) {
    let host = request("/v1/chat/completions", &[("authorization", "Bearer tg-alice")]);
    let mut ex = Exchange::new(moderated_state(on_failure), Rc::new(Metrics::new()));
    assert_eq!(ex.on_request_headers(&host, false), Step::Pause);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"be kind"},{"role":"user","content":"hello there"}]}"#;
    assert_eq!(send_body(&mut ex, &host, body), Step::Pause, "held for moderation");
    let calls = host.http_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    let (cluster, headers, call) = &calls[0];
    assert_eq!(cluster, "moderation");
    assert!(headers.contains(&(":path".to_string(), "/v1/moderations".to_string())));
    let call: Value = serde_json::from_slice(call).unwrap();
    assert_eq!(call, json!({"model": "omni-moderation-latest", "input": ["be kind", "hello there"]}));
    (ex, host)
}

#[test]
fn flagged_content_is_refused_and_clean_content_forwarded_after_moderation() {
    let (mut ex, host) = moderated_request("fail_closed");
    let flagged = br#"{"results":[{"flagged":true,"categories":{"harassment":true,"violence":false}}]}"#;
    callback(&host, |h| ex.on_http_call_response(h, 1001, Ok((200, &flagged[..]))));
    let (status, body) = local_reply(&host);
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert!(body["error"]["message"].as_str().unwrap().contains("harassment"));
    let rec = audit(&host);
    assert_eq!((rec["decision"].as_str(), rec["moderation"]["decision"].as_str()), (Some("deny"), Some("flagged")));
    assert_eq!(rec["moderation"]["categories"], json!(["harassment"]));

    let (mut ex, host) = moderated_request("fail_closed");
    callback(&host, |h| ex.on_http_call_response(h, 1001, Ok((200, &br#"{"results":[{"flagged":false}]}"#[..]))));
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.resumed.borrow().as_slice(), &[Direction::Request]);
    assert_eq!(host.request_header("x-tollgate-provider").as_deref(), Some("prov-a"));
}

#[test]
fn moderation_that_does_not_answer_follows_the_failure_mode() {
    let (mut ex, host) = moderated_request("fail_closed");
    callback(&host, |h| ex.on_http_call_response(h, 1001, Err(())));
    assert_eq!(local_reply(&host).0, 503);
    assert_eq!(audit(&host)["moderation"]["decision"], "failed");

    let (mut ex, host) = moderated_request("fail_open");
    callback(&host, |h| ex.on_http_call_response(h, 1001, Ok((500, &b"oops"[..]))));
    assert!(host.local_reply.borrow().is_none());
    assert_eq!(host.resumed.borrow().as_slice(), &[Direction::Request]);

    // An answer to another call is not this one's.
    let (mut ex, host) = moderated_request("fail_closed");
    callback(&host, |h| ex.on_http_call_response(h, 7, Ok((200, &br#"{"results":[{"flagged":false}]}"#[..]))));
    assert!(host.resumed.borrow().is_empty() && host.local_reply.borrow().is_none());
}
