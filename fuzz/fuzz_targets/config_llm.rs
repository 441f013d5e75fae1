//! LLM filter configuration: `load_with` (parse, validate, then `compile_with`: providers,
//! credentials, routes, prices, limits), as `on_configure` does, with a fixed environment.
//! Asserts the shared configuration properties (tollgate-fuzz `check_config`), then runs
//! one chat completion through a loaded configuration (no panic; a local reply or a
//! forward, never both; a forwarded request never keeps the client's credential).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::rc::Rc;
use tollgate_core::host::{Host, HostExt, MemoryHost};
use tollgate_core::observe::metrics::Metrics;
use tollgate_llm::config::{load_with, State};
use tollgate_llm::exchange::Exchange;

fn env(name: &str) -> Option<String> {
    (name == "OPENAI_API_KEY" || name == "KEY_A").then(|| "sk-upstream".to_string())
}

fn load(bytes: &[u8]) -> Result<State, String> {
    load_with(bytes, &env).map_err(|e| e.0)
}

fuzz_target!(|data: &[u8]| {
    if !tollgate_fuzz::check_config(data, |b| load(b).map(|_| ())) {
        return;
    }
    let state = Rc::new(load(data).unwrap());
    let host = MemoryHost::with_request_headers(&[
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
        ("authorization", "Bearer tg-client-secret"),
    ]);
    let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;
    let sse: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    let mut ex = Exchange::new(state, Rc::new(Metrics::new()));
    let driven = tollgate_core::testing::drive(&mut ex, &host, Some(body), &[(":status", "200"), ("content-type", "text/event-stream")], &[sse]);
    if host.local_reply.borrow().is_some() {
        assert!(driven.response_headers.is_none(), "replied locally and forwarded");
    } else {
        let auth = host.request_header("authorization");
        // (A configuration may itself name that value as a provider header.)
        if tollgate_fuzz::find(data, b"tg-client-secret").is_none() {
            assert_ne!(auth.as_deref(), Some("Bearer tg-client-secret"), "client credential forwarded");
        }
    }
    let _ = host.property(&["tollgate.audit"]);
});
